"""``python -m pytest_torchexport COMMAND``: the commands that run outside a pytest session.

Thin on purpose: each command's arguments and logic live in its own module (``merge.py``,
``glue/command.py``, ``replay.py``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from . import replay, verify
from .glue import command
from .results import merge


def main(argv: Sequence[str] | None = None) -> int:
    parser = merge.CommandLineParser(prog="python -m pytest_torchexport")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    merge.add_arguments(
        commands.add_parser(
            "merge",
            help="merge the JSON reports of CI shards into one report and gate it",
            description=merge.__doc__.split("\n\n")[0],
        )
    )
    command.add_arguments(
        commands.add_parser(
            "check",
            help="check models by name, with no test file: timm:NAME, torchvision:NAME, pkg.module:Factory",
            description=command.__doc__.split("\n\n")[0],
        )
    )
    verify.add_arguments(
        commands.add_parser(
            "verify",
            help="check bundles (--torchexport-bundle) again here: another torch, a GPU runner",
            description=verify.__doc__.split("\n\n")[0],
        )
    )
    replay.add_arguments(
        commands.add_parser(
            "replay",
            help="replay a failing example saved by --torchexport-repro-dir: exit 1 while it fails, 0 once fixed",
            description=replay.__doc__.split("\n\n")[0],
        )
    )
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
