"""A page that shows what matters, read as a person reads it in a browser.

Before: about 17 raw timing keys on every row, ``static_size`` under "Cause" on a passing row,
pass rows drawing a flat row of dots, ``export_error`` coloured lighter than ``mismatch``, a
plot whose x-axis was "input, in the order tried" (no one could see that every failing input
had width > 64), a replay command only where ``--torchexport-repro-dir`` was given, and
"all checks (total_s)" beside no wall time.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pytest_torchexport.results import html

MODELS = textwrap.dedent(
    """
    import pytest
    import torch
    from torch import nn


    class Wide(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x):
            y = self.conv(x)
            if x.shape[-1] > 64:
                return y * 2
            return y


    class Gate(nn.Module):
        def forward(self, x):
            if x.sum() > 0:  # torch.export cannot capture it: an export_error
                return x * 2
            return x - 1


    class Fixed(nn.Module):
        def forward(self, x):
            return x * 2  # exported with dim 1 static (undeclared): a pass with static_size notes


    @pytest.mark.torchexport(backends=["trace"], dims={"w": (16, 128)}, dynamic={0: {3: "w"}})
    def test_wide():
        Wide().eval()(torch.randn(1, 3, 8, 32))


    @pytest.mark.torchexport(backends=["export"])
    def test_gate():
        Gate()(torch.rand(3, 4) + 0.1)


    @pytest.mark.torchexport(backends=["export"])
    def test_fixed():
        Fixed()(torch.randn(3, 8))
    """
)
INI = "[pytest]\naddopts = -p no:randomly -p no:cacheprovider\ntorchexport_examples = 6\n"


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One real session, as a user runs it: its JSON report and its page, from one run."""
    folder = tmp_path_factory.mktemp("html_page")
    (folder / "test_models.py").write_text(MODELS)
    (folder / "pytest.ini").write_text(INI)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "--torchexport-seed=0",
            "--torchexport-report=out.json",
            "--torchexport-report=out.html",
        ],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTEST_ADDOPTS": ""},
    )
    assert (folder / "out.html").exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads((folder / "out.json").read_text())
    rows = {r["test"].rsplit("::", 1)[1]: (i, r) for i, r in enumerate(data["results"])}
    assert set(rows) == {"test_wide", "test_gate", "test_fixed"}, proc.stdout[-3000:]
    return {"folder": folder, "data": data, "rows": rows, "text": (folder / "out.html").read_text()}


def _row_html(text: str, index: int) -> str:
    start = text.index(f'<details class="row" id="row-{index}"')
    return text[start : text.index("</details>\n", text.index('<div class="body">', start))]


def test_each_row_shows_verdict_cause_plot_sizes_latency_and_folds_its_timings(session):
    text, rows = session["text"], session["rows"]
    (wide_i, wide), (gate_i, gate), (fixed_i, fixed) = rows["test_wide"], rows["test_gate"], rows["test_fixed"]
    assert (wide["status"], gate["status"], fixed["status"]) == ("mismatch", "export_error", "pass")

    wide_html = _row_html(text, wide_i)
    summary = wide_html[: wide_html.index("</summary>")]
    # The row's own line: verdict, sizes covered, latency and the cause, before anything is opened.
    assert "sizes w 16–128" in summary and "ms (eager/artifact)</span>" in summary
    assert "a size was tested in Python" in summary
    assert "An empty cell is a backend that test did not ask for." in text
    # Its plot labels each dot with the input's sizes: the axis, and a hover title per dot.
    assert (
        "the input&#39;s sizes (w), smallest first" in wide_html or "the input's sizes (w), smallest first" in wide_html
    )
    titles = re.findall(r"<title>w=(\d+) \((\w+)\): [^<]*</title>", wide_html)
    assert titles and all((int(w) > 64) == (status != "pass") for w, status in titles), titles
    # The timing keys are folded under one disclosure, each with what it counts.
    assert re.search(
        r"<details class=\"timings\"><summary>Where this check's time went: [0-9.]+ s in all</summary>", wide_html
    )
    assert re.search(r'<tr><th>search_s</th><td>[0-9.e-]+ s</td><td class="k">the hypothesis search', wide_html)
    # Every symbol has its legend; the session's timings are one disclosure with their meaning.
    assert "marks a verdict reused from the verdict cache" not in text  # nothing was reused in this run
    assert "<h2>Where the time went</h2>" in text and "Session timings" not in text
    assert not re.search(r"<tr><th>search_s</th>", wide_html[: wide_html.index('<details class="timings">')])
    # Every failing row carries the command that replays it, with or without --torchexport-repro-dir.
    for index, row in ((wide_i, wide), (gate_i, gate)):
        assert f"python -m pytest &#39;{row['nodeid']}&#39; --torchexport-repro-dir=repro" in _row_html(text, index)

    # A passing row: no plot of dots all on one side of the line, and no "Cause" for its notes.
    fixed_html = _row_html(text, fixed_i)
    assert "<svg" not in fixed_html and "<h3>Cause</h3>" not in fixed_html
    assert re.search(r'<p class="within">All \d+ inputs compared were within tolerance', fixed_html)
    assert any(f["kind"] == "static_size" for f in fixed["findings"]), "the note is still among its findings"
    assert "replay:" not in fixed_html

    # The session: rows apart from items, wall time apart from the checks' summed time.
    assert f'<strong data-items="{session["data"]["session"]["items"]}">' in text
    assert "<tr><th>session wall time</th>" in text
    assert "the checks&#39; own times, summed (total_s; several run side by side)" in text


def test_error_statuses_are_as_prominent_as_a_mismatch():
    css = html.render([], {})  # the stylesheet, whatever the rows
    rules = dict(re.findall(r"([^{}]+)\{([^}]*)\}", css))

    def background(status: str) -> str:
        return next(
            body
            for selector, body in rules.items()
            if f".s-{status}" in [part.strip() for part in selector.split(",")] and "background" in body
        )

    assert {background(s) for s in ("mismatch", "export_error", "load_error", "run_error", "timeout")} == {
        background("mismatch")
    }


def _chromium() -> str:
    from browser import find

    path = find()
    if path is None:
        reason = "chromium is not installed (apt-get install -y chromium): the HTML page was not opened in a browser"
        if os.environ.get("TORCHEXPORT_REQUIRE_BROWSER") == "1":
            pytest.fail(f"TORCHEXPORT_REQUIRE_BROWSER=1 and {reason}")
        pytest.skip(reason)
    return path


@pytest.mark.browser
def test_the_page_in_a_browser_shows_what_matters(session):
    from browser import Browser

    browser = Browser(_chromium())
    try:
        browser.open((Path(session["folder"]) / "out.html").as_uri())
        rows = session["rows"]
        wide, gate = f"#row-{rows['test_wide'][0]}", f"#row-{rows['test_gate'][0]}"
        # An export_error badge is painted as strongly as a mismatch badge.
        colour = "getComputedStyle(document.querySelector('{} .badge')).backgroundColor"
        assert browser.evaluate(colour.format(gate)) == browser.evaluate(colour.format(wide))
        browser.click(f"{wide} > summary")
        # Open: the plot is on screen, the timings are not until their disclosure is opened.
        assert browser.evaluate(f"document.querySelector('{wide} .plot svg').checkVisibility()") is True
        assert browser.evaluate(f"document.querySelector('{wide} details.timings table').checkVisibility()") is False
        assert browser.evaluate(f"document.querySelector('{wide} .replay code').checkVisibility()") is True
        browser.click(f"{wide} details.timings > summary")
        assert browser.evaluate(f"document.querySelector('{wide} details.timings table').checkVisibility()") is True
        # The dots' hover titles name the sizes: every failing one is wider than 64.
        failing = browser.evaluate(
            f"[...document.querySelectorAll('{wide} .plot svg .serie-1 circle title')].map(t => t.textContent)"
        )
        assert failing and all(int(re.match(r"w=(\d+)", t).group(1)) > 64 for t in failing), failing
    finally:
        browser.close()
