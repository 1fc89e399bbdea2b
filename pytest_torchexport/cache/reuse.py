"""[Verdict Cache] One check's side of the cache: look its verdict up before it starts, keep it after.

Every pass is kept; a failure only where a rerun would find the same one (a reproducible
search, decided by the keyed facts alone). See docs/howto-cache.md.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any, Protocol

from .._compat import is_in_ci
from ..options import Options, size_limits
from ..results.report import Result
from . import fingerprint, sources
from .facts import CallDigests, CheckFacts
from .store import KEPT_STATUSES, Cache


def reproducible(options: Options) -> bool:
    """Whether a second run draws the same inputs: derandomized under CI, or a fixed seed."""
    return options.seed is not None or is_in_ci()


def unkept(result: Result, options: Options) -> str | None:
    """Why ``result`` is not kept for reuse (None: it is)."""
    if result.status == "pass":
        return None
    if result.status not in KEPT_STATUSES:
        return f"a {result.status} row always runs again"
    if not reproducible(options):
        return "a failure found by a random search: another run may draw other inputs"
    if result.cause_kind == "crash":
        return "a crashed check always runs again"
    if result.budget_cut:
        return "the budget cut what it tried"
    return None


def _repro_gone(row: dict) -> str | None:
    """The repro file a stored failure names, if it no longer exists."""
    repro = (row.get("failing_example") or {}).get("repro")
    return repro if isinstance(repro, str) and not os.path.exists(repro) else None


class Named(Protocol):
    """What the cache reads of a check's session (``stages.session.Session``)."""

    @property
    def backends(self) -> Mapping[str, object]: ...
    @property
    def test(self) -> str | None: ...
    @property
    def nodeid(self) -> str | None: ...
    @property
    def cache(self) -> Cache | None: ...


class Reuse:
    """One check's lookup and keep."""

    def __init__(self, facts: CheckFacts) -> None:
        self.facts = facts
        self.key: str | None = None
        self.files: list[str] = []  # files known before the run: compare=, a third-party backend
        self.hit = False
        self.note: str | None = None  # why the cache was not used, for the summary
        self.refused: str | None = None  # [Signed Entries] a ``store.REFUSED`` kind
        self.spent = 0.0  # seconds
        self._looked = False

    @classmethod
    def of(
        cls,
        session: Named,
        backend: str,
        device: str,
        options: Options,
        *,
        module: object,
        inputs: object,
        sequence: list[tuple[tuple[Any, ...], dict[str, Any]]] | None,
        digests: CallDigests | None,
        as_called: str | None = None,
        method: str = "forward",
    ) -> Reuse:
        """The lookup of one check (``inputs``: its ``InputPlan.tree``). Made here, where nothing
        imports the engine, so that a reused check never loads it."""
        return cls(
            CheckFacts(
                backend=backend,
                spec=session.backends.get(backend),
                device=device,
                test=session.test,
                nodeid=session.nodeid,
                options=options,
                module=module,
                inputs=inputs,
                sequence=sequence,
                size_budget=size_limits(),
                store=session.cache,
                digests=digests,
                as_called=as_called,
                method=method,
            )
        )

    def lookup(self) -> Result | None:
        """The stored verdict, or None. Asked once: a later call finds nothing (a hit is used
        where it was found; a miss stays a miss), so a check looked up early is not keyed twice."""
        if self._looked:
            return None
        self._looked = True
        t0 = time.perf_counter()
        try:
            return self._lookup()
        finally:
            self.spent += time.perf_counter() - t0

    def _lookup(self) -> Result | None:
        facts = self.facts
        cache = facts.store
        if cache is None:
            return None
        if facts.options.keep_artifacts:
            self.note = "not reused: --torchexport-keep-artifacts asks for the artifacts, which only an export makes"
            return None
        if facts.options.bundle:
            self.note = (
                "not reused: --torchexport-bundle asks for the artifact and its inputs, which only a check makes"
            )
            return None
        try:
            self.key, self.files = fingerprint.check_key(facts)
        except fingerprint.Unkeyable as exc:
            self.note = f"not cached: {exc}"
            return None
        except Exception as exc:  # noqa: BLE001 - the cache only saves time: the check runs
            self.note = f"not cached: its key could not be computed ({type(exc).__name__}: {exc})"
            return None
        found, note = cache.lookup(self.key)
        if note is not None:
            self.note, self.refused = note.text, note.refused
        if found is None:
            return None
        gone = _repro_gone(found.row)
        if gone is not None:
            self.note = f"not reused: the stored failure's repro file {gone} is gone: checked again to write it"
            return None
        row = {**found.row, "nodeid": facts.nodeid, "test": facts.test, "cached": True, "cached_at": found.created}
        try:
            result = Result.from_dict(row)
        except Exception as exc:  # noqa: BLE001 - an entry from an unsigned folder may hold anything
            self.note = (
                f"ignored a stored verdict whose row cannot be read ({type(exc).__name__}: {exc}): checked again"
            )
            return None
        self.hit = True
        self._seen()
        return result

    def forgo(self, why: str) -> None:
        """Keep nothing of this check: its verdict is not of the facts it was keyed by."""
        self.key, self.note = None, why

    def _seen(self) -> None:
        """[As Called] The module as called has a kept verdict: a warm run may put off its copy."""
        facts = self.facts
        if facts.store is not None and facts.as_called is not None and facts.test is not None:
            facts.store.see(facts.test, facts.as_called)

    def keep(self, result: Result) -> None:
        """Store ``result`` if it may be reused (``unkept``) and take its files off the row.
        Called before ``xfail=`` is applied, so the raw verdict is kept."""
        t0 = time.perf_counter()
        ran, result.sources = result.sources, None
        if self.hit or self.key is None or ran is None or unkept(result, self.facts.options) is not None:
            self._tell(result)
            return
        files = sources.keyed([*ran, *self.files])
        if files is None:
            self.note = "not cached: a file it ran cannot be read back to key it"
        else:
            assert self.facts.store is not None, "a key is made only where there is a store"
            note = self.facts.store.store(self.key, result.to_dict(), files)
            self.note = note.text if note is not None else self.note
            if note is None:
                self._seen()
        self.spent += time.perf_counter() - t0
        self._tell(result)

    def _tell(self, result: Result) -> None:
        if self.note:
            result.extra["cache"] = self.note
        if self.refused:
            result.extra["cache_refused"] = self.refused
        if self.key is not None:
            result.timings["cache_s"] = self.spent


__all__ = ["Reuse"]
