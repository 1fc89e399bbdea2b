"""First-use costs a check's child would pay, paid once in the process that forks it instead.

An exporter's first use (lazy imports, op registrations) takes seconds, and what a forked child
pays dies with it. ``Warmup`` pays it here before forking, so children inherit it; it never
changes a verdict. The record belongs to the process (``runner.THIS.warmup``).
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Iterable
from pathlib import Path

from .._compat import plugin_modules_not_local, quiet_torch, scan_local_constants, torch
from ..options import BUILTIN_BACKENDS

#: The built-in backends whose export runs ``torch.export`` inside.
THROUGH_TORCH_EXPORT = frozenset({"onnx", "export", "aoti", "executorch", "litert"})


class Warmup:
    """What this process has paid, and when to pay the rest."""

    def __init__(self) -> None:
        self.used: set[str] = set()  # backends whose first check forked without a warm-up
        self.warmed: set[str] = set()
        self.hypothesis = False

    def before_fork(self, name: str, spec: object, backends: Iterable[str], *, repeats: bool) -> None:
        """Pay here what ``name``'s child would pay. ``repeats``: more tests follow ([Warm Once])."""
        if name in BUILTIN_BACKENDS and isinstance(spec, str):
            self.share_first_use(name, backends)
            self.warm_up(name, spec, now=repeats)
        self.hypothesis_first_use()
        scan_local_modules()

    def warm_up(self, name: str, spec: str, *, now: bool = False) -> None:
        """One tiny export, save, load and run on a built-in backend, once per process.

        By default this happens before the second check, since warming up before the first would
        delay every check of the test. [Warm Once] With ``now`` it happens before the first."""
        if name in self.warmed:
            return
        if name not in self.used and not now:
            self.used.add(name)
            return
        self.warmed.add(name)
        _export_once(spec)

    def share_first_use(self, name: str, backends: Iterable[str]) -> None:
        """Pay torch.export's first use here once when two or more of the call's backends use it."""
        if name not in THROUGH_TORCH_EXPORT or "export" in self.warmed:
            return
        if len(THROUGH_TORCH_EXPORT.intersection(backends)) >= 2:
            self.warm_up("export", BUILTIN_BACKENDS["export"], now=True)

    def hypothesis_first_use(self) -> None:
        """A tiny hypothesis run, once per process, so that children inherit its first-run setup."""
        if self.hypothesis:
            return
        self.hypothesis = True
        # [Own Constants] Exclude the plugin's modules before scanning, or the scan is redone later.
        plugin_modules_not_local()
        try:
            from hypothesis import HealthCheck, Phase, Verbosity, given, settings
            from hypothesis import seed as hseed
            from hypothesis import strategies as st

            @hseed(0)
            @settings(
                max_examples=1,
                database=None,
                deadline=None,
                phases=[Phase.generate],
                verbosity=Verbosity.quiet,
                suppress_health_check=list(HealthCheck),
            )
            @given(st.integers(0, 1))
            def once(_: int) -> None:
                pass

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                once()
        except Exception:  # noqa: BLE001 - it only saves time; the check's search reports errors
            pass


def scan_local_modules() -> None:
    """Have hypothesis scan newly imported local modules before each fork, not in every child."""
    try:
        scan_local_constants()
    except Exception:  # noqa: BLE001 - it only saves time
        pass


def _export_once(spec: str) -> None:
    # deferred: these import torch, which importing the plugin must not
    from ..backends.base import ExportContext, load_backend
    from ..inputs.specs import plan_inputs

    module = torch.nn.Linear(4, 4).eval()
    args = (torch.randn(2, 4),)
    try:
        backend = load_backend(spec)
        if backend.unavailable_reason():
            return
        plan = plan_inputs(module, args, None)
        with (
            tempfile.TemporaryDirectory(prefix="torchexport-warmup-") as scratch,
            quiet_torch(fds=True),
            torch.no_grad(),
        ):
            ctx = ExportContext(device="cpu", plan=plan, module=module, scratch=Path(scratch))
            artifact = backend.export(module, args, {}, ctx)
            if backend.saveable:
                directory = Path(scratch) / "artifact"
                directory.mkdir()
                backend.save(artifact, directory)
                artifact = backend.load(directory, ctx)
            backend.run(artifact, args, {})
    except Exception:  # noqa: BLE001 - a warm-up only saves time; the check reports failures
        pass


__all__ = ["THROUGH_TORCH_EXPORT", "Warmup", "scan_local_modules"]
