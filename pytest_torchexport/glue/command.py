"""``python -m pytest_torchexport check SPEC... [options]``: models by name, no test file.

Runs pytest as ``pytest --torchexport-models-only --torchexport-model=SPEC``; anything
after ``--`` goes to pytest. See docs/howto-model.md.

    python -m pytest_torchexport check timm:resnet18 torchvision:mobilenet_v3_small \\
        --backends trace,onnx,export --examples 5 --report models.md
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Sequence

#: check's own option -> the pytest flag it stands for
FLAGS: dict[str, str] = {
    "backends": "--torchexport-backends",
    "devices": "--torchexport-devices",
    "examples": "--torchexport-examples",
    "report": "--torchexport-report",
    "inputs": "--torchexport-model-inputs",
    "timeout": "--torchexport-timeout",
    "seed": "--torchexport-seed",
    "baseline": "--torchexport-baseline",
    "require": "--torchexport-require",
    "keep_artifacts": "--torchexport-keep-artifacts",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "specs",
        nargs="+",
        metavar="SPEC",
        help="timm:NAME, torchvision:NAME, transformers:NAME, pkg.module:Factory or path/to/file.py:Factory",
    )
    parser.add_argument("--backends", metavar="A,B", help="backends to run (default trace,script,onnx,export)")
    parser.add_argument("--devices", metavar="cpu,cuda", help="devices (default auto)")
    parser.add_argument("--examples", metavar="N", help="hypothesis examples per backend (default 25)")
    parser.add_argument(
        "-o",
        "--report",
        metavar="PATH",
        action="append",
        help="write the report: .json, .md or .html; repeatable, one file per format",
    )
    parser.add_argument(
        "--inputs",
        metavar="SPECS",
        help="the inputs where inference cannot find them: 'x: float32[batch=1..8, 3, 224, 224]'",
    )
    parser.add_argument("--timeout", metavar="SECONDS", help="time limit of one backend check")
    parser.add_argument("--seed", metavar="N", help="fix the seed of input generation")
    parser.add_argument("--baseline", metavar="PATH", help="compare with a baseline report")
    parser.add_argument("--require", metavar="A,B", help="backends that must be available")
    parser.add_argument("--keep-artifacts", metavar="DIR", help="keep every exported artifact under DIR")


def pytest_args(args: argparse.Namespace) -> list[str]:
    """The pytest command line ``check`` stands for."""
    # -W: the plugin was imported before pytest could rewrite its asserts (it has none).
    out = [
        "--torchexport-models-only",
        "-p",
        "no:randomly",
        "-W",
        "ignore:Module already imported so cannot be rewritten:pytest.PytestAssertRewriteWarning",
    ]
    out += [f"--torchexport-model={spec}" for spec in args.specs]
    for dest, flag in FLAGS.items():
        value = getattr(args, dest)
        for one in value if isinstance(value, list) else [] if value is None else [value]:
            out.append(f"{flag}={one}")
    return out + list(getattr(args, "pytest_args", None) or [])


class CheckRun:
    """Registered as a plugin of the pytest run ``check`` starts, so the plugin can tell that run from
    a ``pytest --torchexport-models-only`` the user typed, and word its errors in ``check``'s options."""


def started_by_check(plugins: Iterable[object]) -> bool:
    return any(isinstance(p, CheckRun) for p in plugins)


def run(args: argparse.Namespace) -> int:
    # Deferred: only `check` needs pytest, not `merge` or `verify`.
    import pytest

    return int(pytest.main(pytest_args(args), plugins=[CheckRun()]))


def split(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """``check``'s own arguments, and pytest's (after ``--``)."""
    argv = list(argv)
    if "--" not in argv:
        return argv, []
    at = argv.index("--")
    return argv[:at], argv[at + 1 :]


__all__ = ["FLAGS", "CheckRun", "add_arguments", "pytest_args", "run", "split", "started_by_check"]
