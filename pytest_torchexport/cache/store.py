"""[Verdict Cache] Passes kept on disk, reused while nothing they depend on changed.

One small JSON file per entry, ``<dir>/v1/<key[:2]>/<key>.json``: the pass's report row,
when it was made, and the (path, sha256) of every file whose code ran or was read while it
was made (``sources.py``). The key (``fingerprint.py``) covers everything else. A lookup
reuses the row only when every listed file still has its digest.

Writers never corrupt it: an entry is written to a temporary file in the same folder and
moved into place with ``os.replace`` (atomic on POSIX and Windows), so pytest-xdist's
workers and CI shards that share the folder see an old entry, a new one or none. A file
that cannot be read or parsed is a miss, with a note (``Cache.notes``), never an error.
Entries are pruned at the end of a session: those not used for ``MAX_AGE_DAYS`` days, then
the least recently used past ``MAX_ENTRIES`` (a hit touches its entry's mtime).
"""

from __future__ import annotations

import datetime
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import sources

VERSION = 1
MAX_AGE_DAYS = 30
MAX_ENTRIES = 5000
#: Keys of a row that describe one run, not the verdict: not stored.
_PER_RUN = ("nodeid", "test", "timings", "sources", "location", "isolation", "cached", "cached_at", "cache",
            "baseline")


def resolve(value: str | None, default: Path | None, base: Path) -> Cache | None:
    """``--torchexport-cache``/``torchexport_cache``: ``off``, a folder (relative to ``base``), or
    unset: ``default`` (under pytest's cache dir; None where ``-p no:cacheprovider`` removed it)."""
    text = (value or "").strip()
    if text.lower() in ("off", "no", "false", "0", "none"):
        return None
    if text:
        return Cache(base / Path(text).expanduser())
    return Cache(default) if default is not None else None


@dataclass
class Hit:
    row: dict[str, Any]
    created: str  # ISO date and time (UTC) of the run that made it


@dataclass
class Cache:
    """The verdict cache in one folder (``--torchexport-cache``, or under pytest's cache dir)."""

    directory: Path
    notes: list[str] = field(default_factory=list)  # entries that could not be read or written

    @property
    def root(self) -> Path:
        return self.directory / f"v{VERSION}"

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def lookup(self, key: str) -> tuple[Hit | None, str | None]:
        """(the reusable entry or None, a note when the entry exists but could not be used)."""
        path = self._path(key)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None, None
        except OSError as exc:
            return None, self._note(f"cannot read {path} ({exc}): checked again")
        try:
            entry = json.loads(text)
            if entry.get("version") != VERSION or entry.get("key") != key:
                raise ValueError("not an entry of this cache version and key")
            files, row, created = entry["files"], entry["row"], entry["created"]
            if not isinstance(row, dict) or row.get("status") != "pass":
                raise ValueError("its row is not a pass")
            stale = not sources.unchanged(files)
        except (ValueError, KeyError, TypeError) as exc:
            return None, self._note(f"ignored the corrupt entry {path} ({type(exc).__name__}: {exc}): checked again")
        if stale:
            return None, None
        try:
            os.utime(path)  # recently used: kept by the pruning
        except OSError:
            pass
        return Hit(row, created), None

    def store(self, key: str, row: dict[str, Any], files: list[list[str]]) -> str | None:
        """Write the entry atomically; a folder that cannot be written is a note, never an error."""
        entry = {
            "version": VERSION,
            "key": key,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "files": files,
            "row": {k: v for k, v in row.items() if k not in _PER_RUN},
        }
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, temporary = tempfile.mkstemp(prefix=f".{key[:8]}-", suffix=".tmp", dir=path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    json.dump(entry, f, default=str)
                os.replace(temporary, path)
            except BaseException:
                _remove(Path(temporary))
                raise
        except OSError as exc:
            return self._note(f"cannot write {path} ({exc}): this pass is not kept")
        return None

    def prune(self, max_age_days: float = MAX_AGE_DAYS, max_entries: int = MAX_ENTRIES) -> int:
        """Remove entries unused for ``max_age_days``, then the oldest past ``max_entries``."""
        if not self.root.is_dir():
            return 0
        now = time.time()
        entries = []
        for path in self.root.glob("*/*"):
            try:
                mtime = path.stat().st_mtime
            except OSError:
                continue
            if path.name.endswith(".tmp") and now - mtime > 3600:
                entries.append((0.0, path))  # left by a writer that was killed
            else:
                entries.append((mtime, path))
        entries.sort(reverse=True)
        removed = 0
        for index, (mtime, path) in enumerate(entries):
            if index >= max_entries or now - mtime > max_age_days * 86400:
                removed += _remove(path)
        return removed

    def _note(self, text: str) -> str:
        self.notes.append(text)
        return text


def _remove(path: Path) -> int:
    try:
        path.unlink()
        return 1
    except OSError:
        return 0


__all__ = ["Cache", "Hit", "MAX_AGE_DAYS", "MAX_ENTRIES", "resolve"]
