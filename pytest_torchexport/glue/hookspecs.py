"""Hooks that pytest-torchexport adds to pytest. Implement them in a ``conftest.py``."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.hookspec
def pytest_torchexport_backends(config: pytest.Config) -> dict[str, Any] | None:
    """Register third-party export backends: return ``{name: backend}``.

    A backend is a ``pytest_torchexport.Backend`` subclass, an instance, or a lazily imported
    ``"module:Class"`` string. Its name becomes valid in ``backends=``, ``--torchexport-backends``
    and ``xfail=``; third-party backends run only when selected by name.

    .. code-block:: python

        # conftest.py
        def pytest_torchexport_backends(config):
            return {"tvm": "my_company.tvm_backend:TVMBackend"}

    A built-in name replaces that backend, with a warning. See docs/howto-backend.md.
    """
