"""``python -m pytest_torchexport verify DIR [-o OUT] [--backend NAME]``: check bundles again where this runs.

A bundle (``results/bundle_files.py``) holds one check's saved artifact, its inputs, eager's
outputs and tolerances. ``verify`` loads each artifact with its backend's ``load``, runs it on
the stored inputs and compares with the stored outputs. It writes the same rows as a pytest
run and exits as pytest does (0 pass, 1 failure, 4 usage error, 5 nothing to verify). Inputs
and outputs are read from JSON and safetensors, so nothing is unpickled. See docs/howto-verify.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ._compat import pytree, quiet_torch
from .backends.base import ExportContext, load_backend
from .isolation.loader import reached_for
from .options import BUILTIN_BACKENDS, closest
from .reference.compare import compare
from .results import bundle_files as files
from .results.merge import CommandLineParser, Exit, report_format_problem, write_report
from .results.outcome import Outcome, settle, xfail
from .results.report import Finding, Report, Result, collect_environment, tag

if TYPE_CHECKING:
    from typing import TypeVar

    from .backends.base import Backend

    T = TypeVar("T")


class Unreadable(Exception):
    """A bundle folder whose files this verify cannot read: its row is a load_error."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "bundles", nargs="+", metavar="DIR", help="bundle folders (--torchexport-bundle=DIR), or folders holding them"
    )
    parser.add_argument(
        "-o",
        "--output",
        action="append",
        default=[],
        metavar="OUT",
        help="write the rows: .json, .md for Markdown, or .html for a page (repeatable)",
    )
    parser.add_argument(
        "--backend",
        "--backends",
        action="append",
        default=[],
        metavar="NAME",
        help="verify only these backends' bundles (repeatable, or a,b)",
    )


def run(args: argparse.Namespace) -> int:
    wanted = {name.strip() for value in args.backend for name in value.split(",") if name.strip()}
    problems = [report_format_problem(output, "-o") for output in args.output]
    folders = []
    for given in args.bundles:
        if not Path(given).is_dir():
            problems.append(f"{given}: no such folder (a --torchexport-bundle=DIR folder)")
            continue
        found = files.find(Path(given))
        if not found:
            problems.append(f"{given}: holds no bundle (a folder --torchexport-bundle=DIR wrote)")
        folders += found
    known = [*BUILTIN_BACKENDS, *sorted({_backend_of(folder) for folder in folders} - set(BUILTIN_BACKENDS))]
    problems += [
        f"--backend {name}: no such backend{closest(name, known)}; one of {', '.join(known)}"
        for name in sorted(wanted - set(known))
    ]
    said = [p for p in problems if p]
    if said:
        for problem in said:
            print(f"ERROR: {problem}", file=sys.stderr)
        return Exit.USAGE_ERROR
    rows = []
    for folder in folders:
        row = verify_bundle(folder, wanted)
        if row is not None:
            rows.append(row)
            print(_line(row))
    environment = collect_environment(["cuda", "cpu"] if torch.cuda.is_available() else ["cpu"])
    for output in args.output:
        try:
            write_report(output, Report(rows), environment)
        except OSError as exc:
            print(f"ERROR: -o {output}: cannot write it ({exc})", file=sys.stderr)
            return Exit.USAGE_ERROR
    failing = [r for r in rows if r.failed]
    written = f" written to {', '.join(args.output)}" if args.output else ""
    print(
        f"torchexport verify: {len(rows)} bundle{'s' * (len(rows) != 1)} with torch {torch.__version__}{written}: "
        + (f"{len(failing)} failing" if failing else "no failure")
    )
    if not rows:
        return Exit.NO_RESULTS
    return Exit.FAILED if failing else Exit.OK


def _backend_of(folder: Path) -> str:
    """The backend a bundle was written for, as its manifest says ("" where it cannot be read)."""
    try:
        return str(json.loads((folder / files.MANIFEST).read_text()).get("backend", ""))
    except (OSError, ValueError):
        return ""


def _line(row: Result) -> str:
    head = f"{row.status.upper():18} {row.nodeid or row.test} [{row.backend}]"
    if row.status == "pass":
        return head
    return head + "\n" + "\n".join("    " + line for line in row.message.splitlines())


def verify_bundle(folder: Path, wanted: set[str] | None = None) -> Result | None:
    """One bundle checked here: its row (None where ``wanted`` leaves its backend out)."""
    try:
        manifest = json.loads((folder / files.MANIFEST).read_text())
        if not isinstance(manifest, dict) or manifest.get("format") != files.FORMAT:
            raise Unreadable(
                f"bundle format {manifest.get('format') if isinstance(manifest, dict) else '?'}; "
                f"this verify reads format {files.FORMAT}"
            )
    except (OSError, ValueError, Unreadable) as exc:
        row = Result(backend="?", device="cpu", status="pass", module="", nodeid=str(folder), test=str(folder))
        settle(row, Outcome("load_error", f"{folder}: not a readable bundle ({exc})"))
        return row
    if wanted and manifest["backend"] not in wanted:
        return None

    row = _Verify(folder, manifest).row()
    xfail(row, manifest.get("xfail"))  # xfail where it was written: expected to fail here too
    return row


class _Verify:
    """One bundle: its manifest, its row, and the steps that fill the row."""

    def __init__(self, folder: Path, manifest: dict[str, Any]) -> None:
        self.folder, self.manifest = folder, manifest
        self.result = Result(
            backend=manifest["backend"],
            device=manifest["device"],
            status="pass",
            module=manifest.get("module") or "",
            nodeid=manifest.get("nodeid"),
            test=manifest.get("test"),
        )
        self.wrote = (manifest.get("written_by") or {}).get("torch") or "an unknown torch"
        self.reads = torch.__version__
        self.result.extra["bundle"] = {
            "path": str(folder),
            "written_by": manifest.get("written_by"),
            "verified_with": {"torch": self.reads},
        }
        self.header = tag(self.result)

    def _end(self, status: str, message: str, cause: str | None = None) -> Result:
        settle(self.result, Outcome(status, message, cause))  # type: ignore[arg-type]
        return self.result

    def row(self) -> Result:
        manifest, result = self.manifest, self.result
        name = manifest["backend"]
        spec = manifest.get("spec")
        if not spec:
            return self._end(
                "skipped", f"{name} skipped: the bundle's backend was an object, which verify cannot import by name"
            )
        try:
            backend = load_backend(spec)
            reason = backend.unavailable_reason()
        except Exception as exc:  # noqa: BLE001 - a third-party backend may fail to import in any way
            reason = f"its backend {spec} does not import here ({type(exc).__name__}: {exc})"
        if reason is None and result.device.startswith("cuda") and not torch.cuda.is_available():
            reason = "the bundle was checked on CUDA, which is not available here"
        if reason:
            return self._end("skipped", f"{name} skipped: {reason}")
        try:
            tensors = files.load_tensors(self.folder / files.TENSORS)
            # Inputs are stored on the CPU; move them to the device the bundle was checked on.
            cases = [
                (
                    c,
                    _on(files.decode(c["args"], tensors), result.device),
                    _on(files.decode(c["kwargs"], tensors), result.device),
                )
                for c in manifest["cases"]
            ]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return self._end(
                "load_error", f"{self.folder}: the bundle's inputs cannot be read ({type(exc).__name__}: {exc})"
            )
        plan = manifest.get("plan") or {}
        with tempfile.TemporaryDirectory(prefix="torchexport-verify-") as scratch:
            ctx = ExportContext(
                device=result.device,
                scratch=Path(scratch),
                plan=types.SimpleNamespace(
                    scalars={int(i): v for i, v in plan.get("scalars", [])},
                    kwargs={k: None for k in plan.get("kwargs", [])},
                ),
            )
            t0 = time.perf_counter()
            try:
                loaded = self._quiet(backend.load, self.folder / files.ARTIFACT, ctx)
            except Exception as exc:  # noqa: BLE001 - a runtime refuses a file in any way: the load_error says how
                return self._load_error(exc)
            result.timings["load_s"] = time.perf_counter() - t0
            return self._run(backend, loaded, cases, tensors)

    def _quiet(self, fn: Callable[..., T], *args: object) -> T:
        # fds: also silence what C++ prints (AOTInductor's "Could not dlsym ..." for an older torch's package)
        with quiet_torch(fds=True), torch.no_grad():
            return fn(*args)

    def _load_error(self, exc: BaseException) -> Result:
        name = self.result.backend
        words = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())[:400]
        reached = reached_for(str(exc))
        versions = f"written by torch {self.wrote}, read by torch {self.reads}"
        detail = f"{name}: the bundled artifact does not load here ({versions}): {type(exc).__name__}: {words}"
        if reached:
            detail += f"; it reaches for {reached}"
        self.result.findings.append(Finding("standalone_load", detail))
        cause = (
            f"the artifact was written by torch {self.wrote} and this torch ({self.reads}) cannot read it"
            if self.wrote != self.reads
            else f"it reaches for {reached}"
            if reached
            else None
        )
        return self._end(
            "load_error",
            f"Bundled {name} artifact does not load {self.header}\n{versions}\n{type(exc).__name__}: {words}\n"
            f"Bundle: {self.folder}" + (f"\nLikely cause: {cause}" if cause else ""),
            cause,
        )

    def _run(
        self, backend: Backend, loaded: object, cases: list[tuple[dict[str, Any], Any, Any]], tensors: dict[str, Any]
    ) -> Result:
        result, manifest = self.result, self.manifest
        rule: dict[str, Any] = {
            "relowered": bool(manifest.get("relowered")),
            "rtol": manifest.get("rtol"),
            "atol": manifest.get("atol"),
        }
        t0 = time.perf_counter()
        for case, args, kwargs in cases:
            what = f"{case['kind']} input ({case['input']})"
            try:
                outputs = _on(
                    self._quiet(backend.run, loaded, tuple(args), dict(kwargs)), "cpu"
                )  # on the CPU, like the stored ones
            except Exception as exc:  # noqa: BLE001 - a runtime raises anything: the row says what
                if "artifact_error" in case:  # it raised where it was written too: already in the verdict
                    result.examples += 1
                    continue
                words = " ".join(str(exc).split())[:400]
                return self._end(
                    "run_error",
                    f"Bundled {result.backend} artifact raises {self.header} on the {what}\n"
                    f"{type(exc).__name__}: {words}\nwritten by torch {self.wrote}, run with torch {self.reads}\n"
                    f"Bundle: {self.folder}",
                )
            expected = files.decode(case["expected"], tensors)
            plain = compare(expected, outputs, **rule)
            result.examples += 1
            if plain.ok:
                continue
            # Where the writing machine's artifact also differed from eager but passed (eager's own
            # rounding), that artifact's outputs are the reference.
            noise = case.get("matched_here") is False and manifest.get("status") == "pass" and "artifact" in case
            if noise and compare(files.decode(case["artifact"], tensors), outputs, **rule).ok:
                result.findings.append(
                    Finding(
                        "numeric_noise",
                        f"the {what} differs from eager as much here as where the bundle was written "
                        f"(torch {self.wrote}), which judged it within eager's own rounding",
                    )
                )
                continue
            return self._end(
                "mismatch",
                "\n".join(
                    [
                        f"Bundled {result.backend} artifact differs from eager {self.header} on the {what}",
                        *plain.lines()[:4],
                        f"written by torch {self.wrote}, run with torch {self.reads}, at rtol={rule['rtol']} atol={rule['atol']} "
                        "(None: torch.testing's default for the dtype)",
                        f"Bundle: {self.folder}",
                    ]
                ),
            )
        result.timings["run_s"] = time.perf_counter() - t0
        return result


def _on(tree: T, device: str) -> T:
    """``tree`` with its tensors on ``device`` (the stored inputs on the bundle's device, outputs back on the CPU)."""
    return pytree.tree_map(lambda t: t.to(device) if isinstance(t, torch.Tensor) else t, tree)


def main(argv: Sequence[str] | None = None) -> int:
    """``verify`` on its own: ``main(["bundles/", "-o", "verified.json"])``."""
    parser = CommandLineParser(prog="python -m pytest_torchexport verify", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))
