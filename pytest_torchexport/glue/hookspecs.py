"""Hooks that pytest-torchexport adds to pytest. Implement them in a ``conftest.py``."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.hookspec
def pytest_torchexport_backends(config: pytest.Config) -> dict[str, Any] | None:
    """Register third-party export backends: return ``{name: backend}``.

    A backend is a ``pytest_torchexport.Backend`` subclass, an instance, or a
    ``"module:Class"`` string (imported only when the backend is selected). The names join
    the valid list of ``backends=``, ``--torchexport-backends`` and ``xfail=``; they are
    opt-in: select them by name.

    .. code-block:: python

        # conftest.py
        def pytest_torchexport_backends(config):
            return {"tvm": "my_company.tvm_backend:TVMBackend"}

    A name that is already a built-in backend's (``trace``, ``onnx``, ``tensorrt``, ...) replaces
    the built-in for the session, with a ``PytestConfigWarning`` that says so (an error where
    warnings are errors): register a subclass of a built-in under its own name to keep both.

    A backend implements ``export``, ``save``, ``load`` and ``run`` (see
    ``pytest_torchexport/backends/base.py``); it never compares outputs.
    """
