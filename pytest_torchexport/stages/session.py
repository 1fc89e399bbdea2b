"""What outlives one check: the backend registry, the example database, naming.

Its own module so that every stage (and ``messages.py``) can name it without importing
the engine that runs the stages.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..options import BUILTIN_BACKENDS


@dataclass
class Session:
    """What outlives one check: the backend registry, the example database, naming."""

    backends: Mapping[str, Any] = field(default_factory=lambda: dict(BUILTIN_BACKENDS))
    database: Any = None  # a hypothesis ExampleDatabase, or None for none
    #: Where hypothesis may write its own files (its constants cache) during the search:
    #: pytest's cache dir under the plugin, never a new .hypothesis/ in the user's repo.
    hypothesis_home: str | None = None
    test: str | None = None
    nodeid: str | None = None
    #: [Verdict Cache] where verdicts are reused (``cache.Cache``); None: every check runs
    cache: Any = None
    #: [Warm Once] the session will check more than one test in this process: the exporters'
    #: first use is paid here before the first check's child (``isolation/warmup.py``)
    repeats: bool = False
