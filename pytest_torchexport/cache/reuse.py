"""[Verdict Cache] One check's side of the cache: look its pass up before it starts, keep it after.

The engine's ``PendingCheck`` (``engine/pipeline.py``) hands its ``CheckFacts`` (``facts.py``)
to a ``Reuse`` and asks ``Reuse.lookup`` before anything runs (no prelude, no child, no
exporter warm-up): the key (``fingerprint.py``) is computed in the test's process, and a
hit is the stored row, marked ``"cached": true`` with ``"cached_at"``, the date of the run
that made it. ``PendingCheck.wait`` hands every finished result to ``Reuse.keep``, which
stores a pass with the files it ran or read (``sources.py``) and takes those off the row.
Only passes are kept and reused: every other status runs again, so a failure always
carries a fresh message and repro.
"""

from __future__ import annotations

import time

from ..results.report import Result
from . import fingerprint, sources
from .facts import CheckFacts


class Reuse:
    """One check's lookup and keep, from what the cache reads of it (``CheckFacts``)."""

    def __init__(self, facts: CheckFacts) -> None:
        self.facts = facts
        self.key: str | None = None
        self.files: list[str] = []  # known before the run: compare=, a third-party backend
        self.hit = False
        self.note: str | None = None  # why the cache was not used, for the summary
        self.refused: str | None = None  # [Signed Entries] why the entry's signature was refused (store.REFUSED)
        self.spent = 0.0  # seconds: the key, the lookup, the store (timings["cache_s"])

    def lookup(self) -> Result | None:
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
        row = {**found.row, "nodeid": facts.nodeid, "test": facts.test, "cached": True, "cached_at": found.created}
        try:
            result = Result.from_dict(row)
        except Exception as exc:  # noqa: BLE001 - an entry from an unsigned folder may hold anything
            self.note = f"ignored a stored pass whose row cannot be read ({type(exc).__name__}: {exc}): checked again"
            return None
        self.hit = True
        return result

    def keep(self, result: Result) -> None:
        """Store ``result`` when it is a pass made here; the files it ran leave the row."""
        t0 = time.perf_counter()
        ran, result.sources = result.sources, None
        if self.hit or self.key is None or result.status != "pass" or ran is None:
            self._tell(result)
            return
        files = sources.keyed([*ran, *self.files])
        if files is None:
            self.note = "not cached: a file it ran cannot be read back to key it"
        else:
            assert self.facts.store is not None, "a key is made only where there is a store"
            note = self.facts.store.store(self.key, result.to_dict(), files)
            self.note = note.text if note is not None else self.note
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
