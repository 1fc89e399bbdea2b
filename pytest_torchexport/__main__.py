"""``python -m pytest_torchexport COMMAND``: the commands that run outside a pytest session.

Each command's arguments and logic live in its own module.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from . import replay, verify
from .glue import command
from .results import merge

#: Each command: its name, its module (which adds the arguments; the first paragraph of its
#: docstring is the command's description) and its one-line help.
COMMANDS: tuple[tuple[str, Any, str], ...] = (
    ("merge", merge, "merge the JSON reports of CI shards into one report and gate it"),
    (
        "check",
        command,
        "check models by name, with no test file: timm:NAME, torchvision:NAME, transformers:NAME, pkg.module:Factory",
    ),
    ("verify", verify, "check bundles (--torchexport-bundle) again here: another torch, a GPU runner"),
    (
        "replay",
        replay,
        "replay a failing example saved by --torchexport-repro-dir: exit 1 while it fails, 0 once fixed",
    ),
)


def build_parser() -> merge.CommandLineParser:
    """The command line of every command."""
    top = merge.CommandLineParser(prog="python -m pytest_torchexport")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module, words in COMMANDS:
        described = commands.add_parser(name, help=words, description=(module.__doc__ or "").split("\n\n")[0])
        module.add_arguments(described)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    own, extra = command.split(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(own)
    if extra and args.command != "check":
        parser.error(f"arguments after -- are pytest's, for check only: {' '.join(extra)}")
    args.pytest_args = extra
    if args.command == "replay":
        return replay.replay(args.file, allow_pickle=args.allow_pickle)
    if args.command == "verify":
        return verify.run(args)
    return command.run(args) if args.command == "check" else merge.run(args)


if __name__ == "__main__":
    sys.exit(main())
