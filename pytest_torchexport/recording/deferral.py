"""[As Called] A warm run reuses most verdicts, and a reused verdict needs no copy of the module.

With the verdict cache on, the recorder takes the digest of each module it would copy where the
test calls it: the module's part of the verdict key, so a key never depends on whether a copy was
taken. Where the last run kept or reused a verdict of that test's module called so
(``Cache.saw``), the copy is put off. A check that is reused never needs it; one that runs takes it
then (``selection._take_deferred``), once the module is seen to be still as it was called. See
docs/howto-cache.md.
"""

from __future__ import annotations

from ..cache.store import Cache


class Deferral:
    """What the recorder asks of the verdict cache for one test."""

    def __init__(self, cache: Cache, test: str) -> None:
        self.cache, self.test = cache, test

    def digest(self, module: object) -> str | None:
        """The module's digest now, or None where it cannot be keyed (the lookup says why)."""
        from ..cache.fingerprint import module_digest  # deferred: imports torch

        try:
            return module_digest(module)
        except Exception:  # noqa: BLE001 - only the cache is lost: the lookup keys it again and notes why
            return None

    def may_wait(self, digest: str) -> bool:
        """Whether the copy of a module called as ``digest`` says may wait for a check that runs."""
        return self.cache.saw(self.test, digest)

    def changed(self, digest: str) -> None:
        """The module changed after a call whose copy was put off: copy it at the call next run."""
        self.cache.unsee(self.test, digest)


__all__ = ["Deferral"]
