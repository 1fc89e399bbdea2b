"""[Verdict Cache] Verdicts kept on disk, reused while the files they rest on are unchanged.

One JSON file per entry, written to a temporary file and moved into place with
``os.replace`` so workers sharing the folder never see a partial entry. An entry that cannot
be used is a miss with a note, never an error. [Signed Entries] With
``TORCHEXPORT_CACHE_SECRET`` set, entries are HMAC-signed. See docs/howto-cache.md.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import os
import re
import stat
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._compat import package_version
from ..options import environment, switched_off
from ..results.report import FAILING
from . import sources

VERSION = 1
MAX_AGE_DAYS = 30
MAX_ENTRIES = 5000
#: Signs and verifies entries ([Signed Entries]).
SECRET_ENV = "TORCHEXPORT_CACHE_SECRET"
#: A file past this size is not read.
MAX_ENTRY_BYTES = 1 << 20
#: Entries, the marks of modules seen as called (``Cache.saw``) and writers' temporary files.
_ENTRY_NAME = re.compile(r"^(?:[0-9a-f]{64}\.(?:json|seen)|\.[0-9a-f]{8}-\w+\.tmp)$")
#: A pass, or a failure a rerun gives again; never xfail, which is applied after the lookup.
KEPT_STATUSES = frozenset({"pass"} | (FAILING - {"timeout", "xpass"}))
#: Keys of a row that describe one run, not the verdict.
_PER_RUN = (
    "nodeid",
    "test",
    "timings",
    "sources",
    "location",
    "isolation",
    "cached",
    "cached_at",
    "cache",
    "baseline",
    "cache_refused",
)


def resolve(value: str | None, default: Path | None, base: Path) -> Cache | None:
    """The cache ``--torchexport-cache`` names: ``off``, a folder relative to ``base``, or unset
    for ``default`` (None when pytest's cache provider is disabled)."""
    text = (value or "").strip()
    if switched_off(text):
        return None
    # Empty counts as unset: CI gives an empty string for a secret a run may not see.
    secret = environment(SECRET_ENV) or None
    if text:
        return Cache(base / Path(text).expanduser(), secret=secret)
    return Cache(default, secret=secret) if default is not None else None


@dataclass
class Hit:
    row: dict[str, Any]
    created: str  # ISO date (UTC)


@dataclass(frozen=True)
class Note:
    """Why an entry that exists was not used. ``refused`` is a ``REFUSED`` kind when its
    signature was refused, which the summary counts; other notes leave it None."""

    text: str
    refused: str | None = None

    def __str__(self) -> str:
        return self.text


#: ``Note.refused`` kinds, and what the summary says of each.
REFUSED = {
    "unsigned": f"unsigned (written without {SECRET_ENV}, or by a plugin before signing)",
    "signature": f"whose signature does not verify with this {SECRET_ENV} (edited, forged, or signed with another secret)",
}


@dataclass
class Cache:
    """The verdict cache in one folder. With ``secret``, entries are signed when written and
    verified when read ([Signed Entries])."""

    directory: Path
    notes: list[str] = field(default_factory=list)
    secret: str | None = field(default=None, repr=False)

    @property
    def root(self) -> Path:
        return self.directory / f"v{VERSION}"

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def lookup(self, key: str) -> tuple[Hit | None, Note | None]:
        """(the reusable entry or None, a note when an existing entry was not used)."""
        path = self._path(key)
        try:
            info = path.stat()
            if not stat.S_ISREG(info.st_mode):
                return None, self._note(f"ignored {path}: not a regular file: checked again")
            if info.st_size > MAX_ENTRY_BYTES:
                return None, self._note(
                    f"ignored {path}: {info.st_size} bytes, more than an entry ever holds "
                    f"({MAX_ENTRY_BYTES}): checked again"
                )
            with open(path, "rb") as f:
                data = f.read(MAX_ENTRY_BYTES + 1)  # the file may have grown since the stat
        except FileNotFoundError:
            return None, None
        except OSError as exc:
            return None, self._note(f"cannot read {path} ({exc}): checked again")
        try:
            if len(data) > MAX_ENTRY_BYTES:
                raise ValueError(f"more than {MAX_ENTRY_BYTES} bytes")
            entry = json.loads(data.decode("utf-8"))
            if not isinstance(entry, dict):
                raise ValueError(f"a JSON {type(entry).__name__}, not an entry")
            if entry.get("version") != VERSION:
                return None, self._note(
                    f"ignored {path}: an entry of format {_shown(entry.get('version'))} (written "
                    f"by {_shown(entry.get('plugin') or 'another plugin version')}), this "
                    f"plugin reads format {VERSION}: checked again"
                )
            if self.secret is not None:
                refused = self._refused(entry, path)
                if refused is not None:
                    return None, refused
            if entry.get("key") != key:
                raise ValueError("its key is not the one its name says")
            files, row, created = entry["files"], entry["row"], entry["created"]
            if not isinstance(row, dict) or row.get("status") not in KEPT_STATUSES:
                raise ValueError("its row's status is not one that is kept")
            _check_row(row)
            if not isinstance(created, str) or not _file_digests(files):
                raise ValueError("its date or its list of file digests is malformed")
            stale = not sources.unchanged(files)
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            return None, self._note(f"ignored the corrupt entry {path} ({type(exc).__name__}: {exc}): checked again")
        if stale:
            return None, None
        try:
            os.utime(path)  # recently used: kept by the pruning
        except OSError:
            pass
        return Hit(row, created), None

    def _refused(self, entry: dict[str, Any], path: Path) -> Note | None:
        """[Signed Entries] None when the signature verifies."""
        given = entry.get("signature")
        if not isinstance(given, str):
            return self._note(
                f"refused the unsigned entry {path}: {SECRET_ENV} is set, and an entry without a "
                f"signature may have been written by anyone who can write the folder: checked again",
                "unsigned",
            )
        if not hmac.compare_digest(given, self._sign(entry)):
            return self._note(
                f"refused the entry {path}: its signature does not verify with {SECRET_ENV} (edited "
                f"or forged after it was written, or signed with another secret): checked again",
                "signature",
            )
        return None

    def _sign(self, entry: dict[str, Any]) -> str:
        assert self.secret is not None
        return hmac.new(self.secret.encode("utf-8"), _signed(entry), hashlib.sha256).hexdigest()

    def store(self, key: str, row: dict[str, Any], files: list[list[str]]) -> Note | None:
        """Write the entry atomically; a write failure is a note, never an error."""
        entry = {
            "version": VERSION,
            "key": key,
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "plugin": f"pytest-torchexport {_plugin_version()}",
            "files": files,
            "row": {k: v for k, v in row.items() if k not in _PER_RUN},
        }
        text = json.dumps(entry, default=str)
        if self.secret is not None:
            # Sign the entry as it will be read back (JSON turns tuples into lists).
            entry = json.loads(text)
            entry["signature"] = self._sign(entry)
            text = json.dumps(entry)
        size = len(text.encode("utf-8"))
        if size > MAX_ENTRY_BYTES:  # a failure's message can be long: never write what a lookup will not read
            return self._note(
                f"not kept: its entry would be {size} bytes, more than a lookup reads ({MAX_ENTRY_BYTES}): "
                "checked again next run"
            )
        try:
            _write(self._path(key), text)
        except OSError as exc:
            why = exc.strerror or type(exc).__name__
            return self._note(f"cannot write to the cache folder {self.directory} ({why}): verdicts are not kept")
        return None

    # -- [As Called] the modules whose checks the last run kept, as each test called them
    def saw(self, test: str, digest: str) -> bool:
        """Whether a verdict of ``test``'s module, called as ``digest`` says, was kept or reused.
        Only which copy a warm run takes rests on it, never a verdict: a mark that lies makes a
        check that runs take its copy after the test body (``selection._take_deferred``)."""
        path = self._seen(test, digest)
        try:
            with open(path, encoding="ascii") as f:
                text = f.read(128)
        except (OSError, ValueError):
            return False
        if self.secret is not None and not hmac.compare_digest(text, self._sign_seen(path.name)):
            return False
        try:
            os.utime(path)  # recently used: kept by the pruning
        except OSError:
            pass
        return True

    def see(self, test: str, digest: str) -> None:
        """Mark the module as seen; a write failure only costs the next run a copy."""
        path = self._seen(test, digest)
        if path.exists():
            return
        try:
            _write(path, self._sign_seen(path.name) if self.secret is not None else "")
        except OSError:
            pass

    def unsee(self, test: str, digest: str) -> None:
        _remove(self._seen(test, digest))

    def _seen(self, test: str, digest: str) -> Path:
        name = hashlib.sha256(f"{test}\0{digest}".encode("utf-8", "surrogatepass")).hexdigest()
        return self.root / "seen" / f"{name}.seen"

    def _sign_seen(self, name: str) -> str:
        assert self.secret is not None
        return hmac.new(self.secret.encode("utf-8"), f"seen:{name}".encode(), hashlib.sha256).hexdigest()

    def prune(self, max_age_days: float = MAX_AGE_DAYS, max_entries: int = MAX_ENTRIES) -> int:
        """Remove entries unused for ``max_age_days``, then the oldest past ``max_entries``."""
        if not self.root.is_dir():
            return 0
        now = time.time()
        entries = []
        for path in self.root.glob("*/*"):
            # Skip symlinks: a planted link must not make pruning delete files elsewhere.
            if not _ENTRY_NAME.match(path.name) or path.is_symlink() or path.parent.is_symlink():
                continue
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

    def _note(self, text: str, refused: str | None = None) -> Note:
        self.notes.append(text)
        return Note(text, refused)


def _signed(entry: dict[str, Any]) -> bytes:
    """The bytes a signature covers: canonical JSON, so a reader can recompute them."""
    fields = [entry.get(name) for name in ("version", "key", "created", "plugin", "files", "row")]
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=True).encode("ascii")


def _shown(value: object) -> str:
    """A value read from an entry, as one short printable line."""
    text = value if isinstance(value, str) else repr(value)
    text = text.encode("ascii", "backslashreplace").decode("ascii").replace("\n", " ")
    return "".join(ch if ch.isprintable() else "?" for ch in text)[:80]


#: The types the report writers expect of a stored row's fields.
_ROW_TYPES: dict[str, tuple[type, ...]] = {
    "backend": (str,),
    "device": (str,),
    "module": (str, type(None)),
    "message": (str, type(None)),
    "examples": (int,),
    "max_abs_err": (int, float, type(None)),
    "max_rel_err": (int, float, type(None)),
    "atol": (int, float, type(None)),
    "rtol": (int, float, type(None)),
    "findings": (list,),
    "failing_example": (dict, type(None)),
}


def _check_row(row: dict[str, Any]) -> None:
    """ValueError unless the report writers can be handed ``row``."""
    for name, types in _ROW_TYPES.items():
        if name in row and (not isinstance(row[name], types) or isinstance(row[name], bool) and bool not in types):
            raise ValueError(f"its row's {name} is a {type(row[name]).__name__}")
    for finding in row.get("findings", []):
        if not isinstance(finding, dict) or not all(isinstance(v, (str, type(None))) for v in finding.values()):
            raise ValueError("its row's findings are malformed")


def _file_digests(files: object) -> bool:
    """A list of [path, sha256] string pairs."""
    return isinstance(files, list) and all(
        isinstance(pair, list) and len(pair) == 2 and all(isinstance(part, str) for part in pair) for pair in files
    )


def _plugin_version() -> str:
    return package_version("pytest-torchexport") or "unknown"


def _write(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and move it into place, so a reader
    sharing the folder never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name[:8]}-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(temporary, path)
    except BaseException:
        _remove(Path(temporary))
        raise


def _remove(path: Path) -> int:
    try:
        path.unlink()
        return 1
    except OSError:
        return 0


__all__ = [
    "KEPT_STATUSES",
    "Cache",
    "Hit",
    "MAX_AGE_DAYS",
    "MAX_ENTRIES",
    "MAX_ENTRY_BYTES",
    "Note",
    "REFUSED",
    "SECRET_ENV",
    "resolve",
]
