"""Exceptions raised by pytest-torchexport. Importing this module never imports torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .results.report import Report


class ExportMismatch(AssertionError):
    """An exported artifact failed to match eager PyTorch on at least one backend.

    ``report`` holds every backend's result, including the ones that passed.
    """

    def __init__(self, message: str, report: Report) -> None:
        super().__init__(message)
        self.report = report


class InvalidArgument(TypeError):
    """An option, spec or backend name was given a value it cannot take."""
