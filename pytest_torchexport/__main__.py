"""``python -m pytest_torchexport COMMAND``: the commands that run outside a pytest session.

Each command's arguments and logic live in its own module.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from .glue import command
from .results.merge import CommandLineParser

#: Each command: its name, its module (which adds the arguments and runs it; the first paragraph
#: of its docstring is the command's description) and its one-line help. A command's module is
#: imported only when that command runs: verify and replay import torch, merge never does.
COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("merge", "pytest_torchexport.results.merge", "merge the JSON reports of CI shards into one report and gate it"),
    (
        "check",
        "pytest_torchexport.glue.command",
        "check models by name, with no test file: timm:NAME, torchvision:NAME, transformers:NAME, pkg.module:Factory",
    ),
    (
        "verify",
        "pytest_torchexport.verify",
        "check bundles (--torchexport-bundle) again here: another torch, a GPU runner",
    ),
    (
        "replay",
        "pytest_torchexport.replay",
        "replay a failing example saved by --torchexport-repro-dir: exit 1 while it fails, 0 once fixed",
    ),
)


def build_parser(only: str | None = None) -> CommandLineParser:
    """The command line: every command's arguments, or with ``only`` that command's alone (the
    others are listed by name and help, their modules not imported)."""
    top = CommandLineParser(prog="python -m pytest_torchexport")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name, words in COMMANDS:
        if only is not None and name != only:
            commands.add_parser(name, help=words)
            continue
        module = importlib.import_module(module_name)
        described = commands.add_parser(name, help=words, description=(module.__doc__ or "").split("\n\n")[0])
        module.add_arguments(described)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    own, extra = command.split(sys.argv[1:] if argv is None else argv)
    chosen = own[0] if own and own[0] in {name for name, _, _ in COMMANDS} else ""
    parser = build_parser(chosen)
    args = parser.parse_args(own)
    if extra and args.command != "check":
        parser.error(f"arguments after -- are pytest's, for check only: {' '.join(extra)}")
    args.pytest_args = extra
    module = importlib.import_module(next(m for name, m, _ in COMMANDS if name == args.command))
    if args.command == "replay":
        return int(module.replay(args.file, allow_pickle=args.allow_pickle))
    return int(module.run(args))


if __name__ == "__main__":
    sys.exit(main())
