"""``python -m pytest_torchexport COMMAND``: the commands that run outside a pytest session.

Thin on purpose: each command's arguments and logic live in its own module (``merge.py``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

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
    args = parser.parse_args(argv)
    return merge.run(args)


if __name__ == "__main__":
    sys.exit(main())
