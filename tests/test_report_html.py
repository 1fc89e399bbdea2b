"""The HTML report (docs/html-report.md): one self-contained page, checked in a browser.

A real session writes the JSON report once (``report_run``, a module-scoped pytest run in a
subprocess, as users run it); ``merge -o out.html`` turns it into the page, and the tests
read the page as data (``page()``), as text (size, no URL) and in headless Chromium
(``-m browser``: the counts shown equal the JSON's, a failing row opens on a click to its plot
and cause, no request leaves the file). Chromium missing is a skip with the reason, or a
failure where ``TORCHEXPORT_REQUIRE_BROWSER=1`` (CI sets it: the test must run there).
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from pytest_torchexport.results import html
from pytest_torchexport.results.merge import Exit, main

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOT = ROOT / "docs" / "images" / "html-report.png"

MODELS = textwrap.dedent(
    """
    import pytest
    import torch


    class Gate(torch.nn.Module):
        def forward(self, x):
            if x.sum() > 0:  # a data-dependent branch: trace freezes it, export cannot capture it
                return x * 2
            return x - 1


    class MLP(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))

        def forward(self, x):
            return self.net(x)


    @pytest.mark.torchexport(backends=["trace", "script", "export"])
    def test_gate():
        Gate()(torch.rand(3, 4) + 0.1)


    @pytest.mark.torchexport(backends=["trace", "script", "export"])
    def test_mlp():
        MLP().eval()(torch.randn(3, 4))
    """
)
INI = "[pytest]\naddopts = -p no:randomly -p no:cacheprovider\ntorchexport_examples = 8\n"


def _pytest(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", *args],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTEST_ADDOPTS": ""},
    )


@pytest.fixture(scope="module")
def report_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One real session over two models on three backends: its JSON report, and pytest-html's."""
    folder = tmp_path_factory.mktemp("html_report")
    (folder / "test_models.py").write_text(MODELS)
    (folder / "pytest.ini").write_text(INI)
    proc = _pytest(
        folder,
        "--torchexport-report=report.json",
        "--torchexport-seed=0",
        "--html=pytest-html.html",
        "--self-contained-html",
        "-q",
    )
    assert (folder / "report.json").exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return {"folder": folder, "data": json.loads((folder / "report.json").read_text()), "proc": proc}


@pytest.fixture(scope="module")
def page_file(report_run: dict) -> Path:
    """``merge -o report.html`` over the session's JSON report."""
    folder = report_run["folder"]
    here = os.getcwd()
    os.chdir(folder)  # where the rows' paths (test_models.py:8) are read from, as a CI job merges
    try:
        code = main(["report.json", "-o", "report.html"])
    finally:
        os.chdir(here)
    assert code == Exit.OK  # a conversion, no --baseline: nothing gated, though trace mismatches on test_gate
    return folder / "report.html"


def _failed_an_input(row: dict) -> bool:
    return any(e.get("status") != "pass" and e.get("max_abs") is not None for e in row.get("per_input") or [])


def _row(data: dict, test: str, backend: str) -> dict:
    return next(r for r in data["results"] if r["test"].endswith(test) and r["backend"] == backend)


def test_rows_carry_each_inputs_error_and_tolerance(report_run):
    """What the plot is drawn from: numbers the comparison made, one entry per input."""
    data = report_run["data"]
    trace = _row(data, "test_gate", "trace")
    assert trace["status"] == "mismatch"
    entries = trace["per_input"]
    assert entries and all({"status", "sizes"} <= set(e) for e in entries)
    failing = [e for e in entries if e["status"] == "mismatch"]
    assert failing and all(e["max_abs"] > e["allowed"] > 0 for e in failing)
    passing = [e for e in entries if e["status"] == "pass"]
    assert passing and all(e["max_abs"] <= e["allowed"] for e in passing)
    # The float64 oracle ran on the failing inputs only (default tolerances): eager's own
    # rounding is there, far below the artifact's error.
    judged = [e for e in failing if "float64" in e]
    assert judged and all(e["float64"]["eager"] < e["max_abs"] and e["float64"]["rounding"] is False for e in judged)
    assert all("float64" not in e for e in passing if e["max_abs"] == 0)


def test_the_page_lays_out_the_rows_data(report_run):
    data = report_run["data"]
    view = html.page(data["results"], data["environment"])
    assert {c["status"]: c["count"] for c in view["counts"]} == Counter(r["status"] for r in data["results"])
    assert view["columns"] == ["trace", "script", "export"]
    assert [line["test"] for line in view["matrix"]] == ["test_models.py::test_gate", "test_models.py::test_mlp"]
    # The migration panel: each module checked on trace/script and its export verdict, with the cause.
    panel = {m["test"].split("::")[1]: m for m in view["migration"]}
    assert panel["test_mlp"]["ready"] is True and panel["test_mlp"]["export"] == "pass"
    gate = panel["test_gate"]
    assert gate["ready"] is False and gate["export"] == "export_error"
    assert gate["cause"] == _row(data, "test_gate", "export")["likely_cause"]
    assert gate["torchscript"] == {"trace": "mismatch", "script": "pass"}
    # The trace row: the cause's finding first, its source line read from the test file.
    detail = next(d for d in view["details"] if d["test"].endswith("test_gate") and d["backend"] == "trace")
    assert detail["findings"][0]["kind"] in ("frozen_branch", "tracer_warning", "diverges_at")
    assert detail["inputs"], "the shrunk failing input"


def test_merge_writes_one_self_contained_page(page_file, report_run):
    text = page_file.read_text()
    assert text.startswith("<!DOCTYPE html>")
    assert "default-src 'none'" in text
    # Nothing to fetch: no URL at all (inline SVG needs no namespace), no src= or href= off the page.
    assert not re.search(r"https?://", text)
    assert not re.search(r'\s(src|href)="(?!#)', text)
    # A plot where an input failed; a row whose inputs all passed says so in a line instead.
    assert text.count("<svg") == sum(1 for r in report_run["data"]["results"] if _failed_an_input(r))


@pytest.mark.parametrize("workers", ["0", "2"])
def test_session_writes_the_page_itself(tmp_path, workers):
    """--torchexport-report=out.html, the plugin's own path (no merge); under xdist the controller writes it."""
    (tmp_path / "test_models.py").write_text(MODELS)
    (tmp_path / "pytest.ini").write_text(INI)
    proc = _pytest(
        tmp_path, "--torchexport-report=out.html", "-k", "mlp", "--torchexport-examples=3", "-q", "-n", workers
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "torchexport report written to out.html" in proc.stdout
    text = (tmp_path / "out.html").read_text()
    # test_mlp on its three backends: three passes, each said in a line, none with a plot of dots
    assert re.findall(r'data-status="(\w+)" data-count="(\d+)"', text) == [("pass", "3")]
    assert text.count("<svg") == 0 and text.count('<p class="within">') == 3


def test_without_the_html_extra_the_option_says_what_to_install(tester, monkeypatch):
    monkeypatch.setitem(sys.modules, "pygal", None)  # find_spec answers None: as if not installed
    tester.makepyfile(test_x="def test_x():\n    pass\n")
    result = tester.runpytest("--torchexport-report=out.html")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: --torchexport-report=out.html asks for an HTML report, which needs pygal (not installed here): "
            "install the html extra, pip install 'pytest-torchexport[html]', or write a .json or .md report"
        ]
    )
    assert not (tester.path / "out.html").exists()


def test_merge_without_the_html_extra_is_a_usage_error(report_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pygal", None)
    code = main([str(report_run["folder"] / "report.json"), "-o", str(tmp_path / "m.html")])
    assert code == Exit.USAGE_ERROR
    assert "-o " + str(tmp_path / "m.html") + " asks for an HTML report, which needs pygal" in capsys.readouterr().err
    assert not (tmp_path / "m.html").exists()


def test_two_hundred_rows_stay_under_three_megabytes(report_run, tmp_path):
    """Every row with a full per-input plot (the most a check keeps) and a failure's message."""
    from pytest_torchexport.search.failure import PER_INPUT

    data = report_run["data"]
    rows = []
    for i in range(200):
        row = copy.deepcopy(data["results"][i % len(data["results"])])
        row["test"] = f"tests/test_zoo.py::test_model_{i // 4}"
        row["nodeid"] = f"{row['test']}[torchexport-{row['backend']}]"
        entries = row.get("per_input") or [{"status": "pass", "sizes": {"batch": 3}, "max_abs": 1e-7, "allowed": 1e-5}]
        row["per_input"] = (entries * PER_INPUT)[:PER_INPUT]
        rows.append(row)
    text = html.render(rows, data["environment"])
    size = len(text.encode())
    print(f"200-row report: {size / 2**20:.2f} MiB")
    assert size < 3 * 2**20
    assert text.count("<svg") == sum(1 for row in rows if _failed_an_input(row)) > 0


def test_pytest_html_carries_each_rows_verdict_and_plot(report_run):
    """[pytest-html] its report holds, in the item's extras, the row's verdict and its plot."""
    page = (report_run["folder"] / "pytest-html.html").read_text()
    # pytest-html keeps the extras in a JSON blob on the page (escaped): read them back from it.
    blob = json.loads(
        re.search(r'data-jsonblob="([^"]*)"', page)
        .group(1)
        .replace("&#34;", '"')
        .replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&#39;", "'")
    )
    extras = {
        test_id: [e["content"] for result in results for e in result.get("extras", [])]
        for test_id, results in blob["tests"].items()
    }
    trace = next(v for k, v in extras.items() if k.endswith("test_gate[torchexport-trace]"))
    assert any("torchexport trace: mismatch" in c and "<svg" in c for c in trace)
    assert all(any("torchexport" in c for c in contents) for contents in extras.values())


def _chromium() -> str:
    from browser import find

    path = find()
    if path is None:
        reason = "chromium is not installed (apt-get install -y chromium): the HTML report was not opened in a browser"
        if os.environ.get("TORCHEXPORT_REQUIRE_BROWSER") == "1":
            pytest.fail(f"TORCHEXPORT_REQUIRE_BROWSER=1 and {reason}")
        pytest.skip(reason)
    return path


@pytest.mark.browser
def test_the_page_in_a_real_browser(page_file, report_run, tmp_path):
    from browser import Browser

    browser = Browser(_chromium())
    try:
        url = page_file.as_uri()
        browser.open(url)
        data = report_run["data"]
        shown = browser.evaluate(
            "Object.fromEntries([...document.querySelectorAll('#counts .count')]"
            ".map(el => [el.dataset.status, parseInt(el.textContent)]))"
        )
        assert shown == dict(Counter(r["status"] for r in data["results"]))
        assert browser.evaluate("document.querySelectorAll('#matrix a.cell-link').length") == len(data["results"])

        # A failing row is closed until clicked; then its plot and cause are on screen.
        index = next(i for i, r in enumerate(data["results"]) if r["status"] == "mismatch")
        row = f"#row-{index}"
        assert browser.evaluate(f"document.querySelector('{row}').open") is False
        assert browser.evaluate(f"document.querySelector('{row} .plot svg').checkVisibility()") is False
        browser.click(f"{row} > summary")
        assert browser.evaluate(f"document.querySelector('{row}').open") is True
        assert browser.evaluate(f"document.querySelector('{row} .plot svg').checkVisibility()") is True
        box = browser.evaluate(
            f"(() => {{ const r = document.querySelector('{row} .plot svg')"
            ".getBoundingClientRect(); return [r.width, r.height]; })()"
        )
        assert box[0] > 300 and box[1] > 200, box
        # One dot per input, green or red as its verdict; blue where the float64 oracle ran.
        entries = data["results"][index]["per_input"]
        dots = browser.evaluate(
            f"[0, 1, 3].map(n => document.querySelectorAll('{row} .plot svg .serie-' + n + ' circle').length)"
        )
        assert dots == [
            sum(e["status"] == "pass" for e in entries),
            sum(e["status"] != "pass" for e in entries),
            sum("float64" in e for e in entries),
        ]
        assert dots[1] and dots[2]
        cause = browser.evaluate(f"document.querySelector('{row} .cause').innerText")
        assert " ".join(data["results"][index]["likely_cause"].split()) in " ".join(cause.split())
        # ... with the source line it names, marked in its excerpt
        assert "if x.sum() > 0:" in browser.evaluate(f"document.querySelector('{row} .src .here').innerText")

        # The filters: mismatches only, then a search that matches nothing.
        browser.evaluate(
            "(() => { const s = document.getElementById('f-status'); s.value = 'mismatch';"
            " s.dispatchEvent(new Event('change')); })()"
        )
        visible = browser.evaluate("[...document.querySelectorAll('details.row')].filter(e => e.offsetParent).length")
        assert visible == Counter(r["status"] for r in data["results"])["mismatch"]
        browser.evaluate(
            "(() => { const s = document.getElementById('f-status'); s.value = '';"
            " s.dispatchEvent(new Event('change')); })()"
        )
        # The search box, typed into: the MLP's rows and matrix line only.
        browser.type("#f-search", "mlp")
        shown = browser.evaluate(
            "[...document.querySelectorAll('details.row')].filter(e => e.offsetParent)"
            ".map(e => e.querySelector('summary').innerText)"
        )
        assert len(shown) == 3 and all("test_mlp" in line for line in shown), shown
        assert browser.evaluate(
            "[...document.querySelectorAll('#matrix tbody tr')].filter(e => e.offsetParent).map(e => e.dataset.test)"
        ) == ["test_models.py::test_mlp"]
        browser.evaluate(
            "(() => { const s = document.getElementById('f-search'); s.value = '';"
            " s.dispatchEvent(new Event('input')); window.scrollTo(0, 0); })()"
        )
        browser.screenshot(str(tmp_path / "html-report.png"), full=True)
        if os.environ.get("TORCHEXPORT_DOCS_SCREENSHOT") == "1":  # docs/html-report.md shows it
            SCREENSHOT.parent.mkdir(exist_ok=True)
            shutil.copy(tmp_path / "html-report.png", SCREENSHOT)
        # Nothing but the file itself was requested.
        assert browser.requests == [url], browser.requests
    finally:
        browser.close()


def test_the_migration_panel_names_the_method_checked():
    """A test that checks ``ResNet.forward_intermediates`` migrates that method, not ``forward``:
    the panel keeps it apart from the same class's forward rows."""
    from pytest_torchexport.results.html import migration

    def row(backend, status, method=None):
        r = {
            "nodeid": f"t.py::test_m[torchexport-{backend}]",
            "test": "t.py::test_m",
            "module": "ResNet",
            "backend": backend,
            "device": "cpu",
            "status": status,
        }
        return {**r, "method": method} if method else r

    rows = [
        row("script", "export_error", "forward_intermediates"),
        row("export", "pass", "forward_intermediates"),
        row("trace", "pass"),
    ]
    panel = {m["module"]: m for m in migration(rows)}
    assert set(panel) == {"ResNet.forward_intermediates", "ResNet"}
    assert panel["ResNet.forward_intermediates"]["torchscript"] == {"script": "export_error"}
    assert panel["ResNet.forward_intermediates"]["ready"] is True
    assert panel["ResNet"]["export"] is None
