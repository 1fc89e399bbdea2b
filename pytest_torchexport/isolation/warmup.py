"""[Paid Once] The first uses a check's child would pay, paid once in the process that forks it.

An exporter's first use in a process (lazy imports, op registrations) costs seconds, and
hypothesis's first run a few tenths; a forked child pays what its parent has not, and what
it pays dies with it. A ``Warmup`` knows what this process has paid and decides, before each
fork, what to pay here so that the child inherits it:

- an exporter's warm-up (``warm_up``: one tiny export, save, load and run) from a backend's
  second check on, or before its first when the session will check more than one test
  ([Warm Once]); ``torch.export``'s own first use when two of the checks run it inside
  ([Shared First Use]);
- hypothesis's first run, then its scan of the local modules imported since the last fork
  ([Search First Use]).

None of it changes a verdict: a warm-up only saves time, and the check reports any failure
itself. The record is the process's (``runner.THIS.warmup``), not a session's: what the
interpreter has imported stays imported whichever pytest session (pytester) asked for it,
and a forked child inherits the record with the imports it describes.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .._compat import plugin_modules_not_local, quiet_torch, scan_local_constants
from ..options import BUILTIN_BACKENDS

#: [Shared First Use] The built-in backends whose export runs ``torch.export`` inside.
THROUGH_TORCH_EXPORT = frozenset({"onnx", "export", "aoti", "executorch", "litert"})


class Warmup:
    """What this process has paid of the first uses, and the policy for paying the rest."""

    def __init__(self) -> None:
        self.used: set[str] = set()  # backends whose first check forked without a warm-up here
        self.warmed: set[str] = set()  # backends warmed up in this process
        self.hypothesis = False  # hypothesis's first run made in this process

    def before_fork(self, name: str, spec: Any, backends: Iterable[str], *, repeats: bool) -> None:
        """What the child of ``name``'s check would pay, paid here now where it pays off.
        ``backends``: the checks of the same call; ``repeats``: the session will check more
        than one test in this process ([Warm Once])."""
        if name in BUILTIN_BACKENDS and isinstance(spec, str):
            self.share_first_use(name, backends)
            self.warm_up(name, spec, now=repeats)
        self.hypothesis_first_use()
        scan_local_modules()

    def warm_up(self, name: str, spec: Any, *, now: bool = False) -> None:
        """One tiny export, save, load and run on a built-in backend, once per process, before the
        children of its second check on: the exporters' first use (lazy imports, op
        registrations) costs seconds (measured: dynamo ONNX 2-3 s, torch.export 1.2-1.8 s on a
        3-layer MLP) and a child's warm-up dies with it, so every child would pay it again.
        Forked after this, they do not.

        [First Use In The Child] A backend's first check in this process forks without it: done
        here, the warm-up held up every check of the test behind it (the parent forks one child
        at a time), while its child pays the same first use beside the other checks. A process
        that checks a backend once (one ``check()`` call) never pays it twice; one that checks
        it again pays it once more, here. ``now``: warm up at once (a test suite's fixture, a
        session that checks more than one test).

        [Warm Once] In a test session that checks more than one test, the parent warms up before
        the first child instead: every child forked after it, the first included, skips the
        first use. Measured on a 3-model session (4 backends): the first children paid 11 s
        (ONNX) and 6 s (torch.export) of first use, the parent's warm-up at the second call
        9.5 s more."""
        if name in self.warmed:
            return
        if name not in self.used and not now:
            self.used.add(name)
            return
        self.warmed.add(name)
        _export_once(spec)

    def share_first_use(self, name: str, backends: Iterable[str]) -> None:
        """[Shared First Use] Before the child of a check that runs ``torch.export`` inside, when
        another of the call's backends does too: ``torch.export``'s first use (the imports of
        ``torch._dynamo``, fake tensors, decomposition tables: 2-3 s here) is paid once, in this
        process, by a warm-up of the ``export`` backend, instead of in each of those children
        side by side (measured on a 3-layer MLP, onnx and export: the onnx child's export 7.6 s
        and the export child's 4.0 s, against 4.3 s and 0.4 s after a 2.2 s warm-up here)."""
        if name not in THROUGH_TORCH_EXPORT or "export" in self.warmed:
            return
        if len(THROUGH_TORCH_EXPORT.intersection(backends)) >= 2:
            self.warm_up("export", BUILTIN_BACKENDS["export"], now=True)

    def hypothesis_first_use(self) -> None:
        """[Search First Use] A tiny hypothesis run, once per process, before the first check's
        child forks. hypothesis's first run in a process costs 0.2-0.4 s here (its scan of the
        local modules' constants, its global PRNG's registration behind a full ``gc.collect``,
        lazy imports): paid in each forked child, it was paid once per backend; paid here, every
        child inherits it. What the search draws does not change: the constants it finds are
        the same set, scanned here or in the child."""
        if self.hypothesis:
            return
        self.hypothesis = True
        # [Own Constants] before this run's scan, as before a search's: scanned with the plugin's own
        # modules, the scan would be made again once they are taken out
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
        except Exception:  # noqa: BLE001 - it only saves time: the check's own search reports what is wrong
            pass


def scan_local_modules() -> None:
    """[Search First Use] hypothesis's scan of the local modules imported since the last fork,
    made here before each fork. hypothesis draws some values from the constants in the source
    of the project's own modules, found by parsing each new module once per process (the
    plugin's own, when it is installed editable); the parent scanned only at its first run,
    so every child parsed every module imported after it, again and again (measured: 52
    modules, 0.46 s of a trace check's 0.5 s search on a 3-layer MLP, in every child). The
    constants are the same set, scanned here or there; hypothesis keeps what it scanned."""
    try:
        scan_local_constants()  # False with another hypothesis: its child pays what it pays
    except Exception:  # noqa: BLE001 - it only saves time
        pass


def _export_once(spec: Any) -> None:
    import torch

    # deferred: these import torch (the plugin's import stays torch-free; a warm-up runs only before a fork)
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
    except Exception:  # noqa: BLE001 - a warm-up only saves time; the check itself reports failures
        pass


__all__ = ["THROUGH_TORCH_EXPORT", "Warmup", "scan_local_modules"]
