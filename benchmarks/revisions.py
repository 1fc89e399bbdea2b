"""A past revision of the package, importable beside this checkout: the benchmarks' ``--rev``.

``git archive`` writes the package as it was at a revision into a folder of its own; a run with
that folder first on ``PYTHONPATH`` imports it instead of the checkout's (pytest loads the plugin
by the module name its entry point gives, so the earlier path wins). The folder is named
``site-packages`` so that the copy's frames read as an installed library's, as the checkout's
read to a user who installed the wheel.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

TOP = Path(__file__).resolve().parent.parent


def install_revision(rev: str, into: Path) -> str:
    """The package as it was at git revision ``rev``, under ``into/site-packages``; that folder."""
    archive = subprocess.run(
        ["git", "-C", str(TOP), "archive", rev, "pytest_torchexport"], capture_output=True, check=True
    ).stdout
    site = into / "site-packages"
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(site, filter="data")
    return str(site)
