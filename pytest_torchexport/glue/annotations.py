"""GitHub Actions workflow commands: a failing export shows at the user's source line.

Pure text: the plugin prints these lines when ``GITHUB_ACTIONS=true``.
"""

from __future__ import annotations

import os
from typing import Any

from ..results.explain import is_user_file


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def location(result: dict[str, Any]) -> tuple[str, int] | None:
    """The user's line: a finding's source line, else the test function; never site-packages."""
    for finding in result.get("findings", []):
        where = finding.get("where")
        if where and ":" in where:
            path, _, line = where.rpartition(":")
            if line.isdigit() and is_user_file(os.path.abspath(path)):
                return path, int(line)
    loc = result.get("location")
    if loc and is_user_file(os.path.abspath(loc["file"])):
        return loc["file"], int(loc["line"])
    return None


def annotation(result: dict[str, Any]) -> str:
    where = location(result)
    title = f"torchexport {result['backend']} {result['status']}"
    lines = (result.get("message") or "").splitlines()
    body = "\n".join(lines[:12])
    props = f"title={_escape_property(title)}"
    if where:
        props = f"file={_escape_property(where[0])},line={where[1]},{props}"
    return f"::error {props}::{_escape_data(body)}"
