"""What outlives one check; its own module so every stage can name it without importing the engine."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..options import BUILTIN_BACKENDS


@dataclass
class Session:
    """What outlives one check: the backend registry, the example database, naming."""

    backends: Mapping[str, Any] = field(default_factory=lambda: dict(BUILTIN_BACKENDS))
    #: a hypothesis ExampleDatabase, None for none, or a function that opens it
    #: (``shared_search.example_database``: a reused check never pays hypothesis's import)
    database: Any = None
    #: Where hypothesis writes its own files, never a new .hypothesis/ in the user's repo.
    hypothesis_home: str | None = None
    test: str | None = None
    nodeid: str | None = None
    #: [Verdict Cache] ``cache.Cache``; None: every check runs
    cache: Any = None
    #: [Warm Once] more than one test is checked here, so warm the exporters (``isolation/warmup.py``)
    repeats: bool = False
