"""Importing the plugin never imports torch; a session with no marked test pays nothing."""

import subprocess
import sys
import textwrap


def test_session_without_marked_tests_never_imports_torch(tmp_path):
    (tmp_path / "test_plain.py").write_text(
        textwrap.dedent(
            """
            import sys

            def test_plain():
                assert "torch" not in sys.modules
            """
        )
    )
    (tmp_path / "conftest.py").write_text(
        textwrap.dedent(
            """
            import sys

            def pytest_unconfigure(config):
                # Written at the very end, after the plugin's summary and report hooks.
                open("imported.txt", "w").write(str("torch" in sys.modules))
            """
        )
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "torchexport", "-q", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "imported.txt").read_text() == "False"


def test_package_import_is_torch_free():
    code = "import sys, pytest_torchexport, pytest_torchexport.plugin; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_merge_never_imports_torch(tmp_path):
    """``python -m pytest_torchexport merge`` imports only its own command's module: a CI job that
    merges shards' reports never pays for torch (verify and replay, which need it, are not imported)."""
    report = tmp_path / "r.json"
    report.write_text('{"version": 1, "environment": {}, "results": []}')
    code = (
        "import sys\nfrom pytest_torchexport.__main__ import main\n"
        f"main(['merge', {str(report)!r}, '-o', {str(tmp_path / 'm.md')!r}])\n"
        "print('torch' in sys.modules, 'pytest_torchexport.verify' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split()[-2:] == ["False", "False"], out.stdout + out.stderr
