"""The HTML report's one picture: each input's greatest error against its tolerance.

Drawn by pygal (the ``html`` extra) as inline SVG from a row's ``per_input`` key (search.py's
[Per Input] entries): numbers the comparison already made, never read from the message.
pygal writes static SVG with no script that must run and no font or image to fetch, so the
page stays one file; its own stylesheet is the same for every chart of the report, so it is
taken off each chart and written once in the page (``chart_stylesheet``), which keeps a
200-row report near 1 MB instead of 4.
"""

from __future__ import annotations

import math
import sys
from typing import Any

#: Where a bit-exact input (error 0, which a log axis cannot show) is drawn: below every error.
_EXACT_FACTOR = 0.1
_COLORS = ("#2e7d32", "#c62828", "#757575", "#1565c0")  # pass, failing, tolerance, eager vs float64
_SERIES = ("within tolerance", "beyond tolerance", "tolerance at that element", "eager's own float64 rounding")


def load_pygal() -> Any:
    """pygal, without the import hook it adds to ``sys.meta_path``.

    [pygal Import Hook] ``import pygal`` installs ``PluginImportFixer``, a finder for its
    ``pygal.maps.*`` plugins that has no ``find_spec``: from then on, every import of a module
    not yet loaded warns ``ImportWarning`` (an error under ``-W error``, and in pytest-xdist's
    workers an INTERNALERROR). The report never imports ``pygal.maps``, so the hook goes.
    """
    import pygal

    sys.meta_path[:] = [
        f for f in sys.meta_path if not (type(f).__name__ == "PluginImportFixer" and type(f).__module__ == "pygal")
    ]
    return pygal


def _style() -> Any:
    load_pygal()
    from pygal.style import Style

    return Style(
        background="transparent",
        plot_background="transparent",
        font_family="sans-serif",
        colors=_COLORS,
        label_font_size=11,
        legend_font_size=11,
        major_label_font_size=11,
        title_font_size=13,
        guide_stroke_color="#ddd",
        major_guide_stroke_color="#ccc",
    )


def _chart(title: str, standalone: bool = False, x_title: str = "input, in the order tried") -> Any:
    pygal = load_pygal()
    return pygal.Line(
        title=title,
        style=_style(),
        width=520,
        height=330,
        margin=8,
        margin_bottom=14,
        explicit_size=True,
        logarithmic=True,
        js=[],
        no_prefix=not standalone,
        disable_xml_declaration=True,
        pretty_print=False,
        stroke=False,
        dots_size=3.5,
        show_legend=True,
        legend_at_bottom=True,
        legend_at_bottom_columns=2,
        show_x_guides=False,
        x_title=x_title,
        truncate_legend=-1,
        truncate_label=-1,
        print_values=False,
        value_formatter=lambda v: f"{v:.0e}" if v < 0.01 or v >= 1000 else f"{v:g}",
        show_minor_x_labels=True,
        x_label_rotation=0,
    )


def error_plot(row: dict[str, Any], standalone: bool = False) -> str | None:
    """The row's per-input errors as an SVG element (a string), or None where no input failed.

    ``standalone``: the chart keeps its own stylesheet, scoped to its id (for another page,
    pytest-html's); otherwise it is styled by the report's one ``chart_stylesheet``.

    One dot per input: its greatest absolute error, green within the tolerance and red beyond;
    a grey mark for the tolerance at that element (atol + rtol * |eager|); a blue mark for
    eager's own greatest error against a float64 run, where the check computed one (only for
    inputs whose plain comparison failed: the picture costs no extra run).
    """
    entries = [e for e in row.get("per_input") or [] if e.get("max_abs") is not None]
    if not any(e.get("status", "pass") != "pass" for e in entries):
        return None  # nothing failed: a row of dots on one side of the line says less than html.within_text
    # By their sizes, smallest first, so the sizes where the artifact fails stand together (width > 64).
    dims = sorted({dim for e in entries for dim in (e.get("sizes") or {})})
    entries = sorted(entries, key=lambda e: tuple((e.get("sizes") or {}).get(dim, 0) for dim in dims))
    positive = [v for e in entries for v in _values(e) if v > 0 and math.isfinite(v)]
    exact = min(positive) * _EXACT_FACTOR if positive else 1e-12
    ceiling = max(positive) * 10 if positive else 1.0
    # One value per input in each series (None where it has none): the x axis is the input.
    # a point is a value, or pygal's {value, label} dict (the failing inputs, titled by their sizes)
    series: dict[str, list[float | dict[str, Any] | None]] = {name: [None] * len(entries) for name in _SERIES}
    for i, e in enumerate(entries):
        error = e["max_abs"]
        error = exact if error == 0 else ceiling if not math.isfinite(error) else error
        failed = e.get("status", "pass") != "pass"
        series[_SERIES[1] if failed else _SERIES[0]][i] = {"value": error, "label": _sizes_title(e)}
        if e.get("allowed"):
            series[_SERIES[2]][i] = e["allowed"]
        f64 = (e.get("float64") or {}).get("eager")
        if f64 is not None and math.isfinite(f64):
            series[_SERIES[3]][i] = f64 if f64 > 0 else exact
    x_title = f"the input's sizes ({' × '.join(dims)}), smallest first" if dims else "input, in the order tried"
    chart = _chart(f"{row['backend']}: greatest error per input", standalone, x_title)
    for name in _SERIES:
        # Every series is added, empty or not, so a colour means the same thing on every chart.
        # The tolerance is a line (one path), the errors are dots (one element each).
        tolerance = name == _SERIES[2]
        chart.add(name, series[name], stroke=tolerance, show_dots=not tolerance, allow_interruptions=True)
    step = max(1, len(entries) // 10)
    labels = [_sizes_label(e, dims) or str(i) for i, e in enumerate(entries, 1)]
    # A label where it differs from the one before (every step-th at most): a run of one size is labelled once.
    chart.x_labels = [
        text if i % step == 0 and (i == 0 or text != labels[i - 1]) else "" for i, text in enumerate(labels)
    ]
    chart.y_labels = _decades(exact, ceiling)
    return _without_style(chart, standalone)


def _sizes_label(entry: dict[str, Any], dims: list[str]) -> str:
    sizes = entry.get("sizes") or {}
    return "×".join(str(sizes[dim]) for dim in dims if dim in sizes)


def _sizes_title(entry: dict[str, Any]) -> str:
    """A dot's hover title: the input's sizes and its verdict."""
    sizes = ", ".join(f"{dim}={size}" for dim, size in sorted((entry.get("sizes") or {}).items()))
    return f"{sizes or 'recorded sizes'} ({entry.get('status', 'pass')})"


def _values(entry: dict[str, Any]) -> list[float]:
    out = [entry["max_abs"], entry.get("allowed") or 0.0]
    f64 = (entry.get("float64") or {}).get("eager")
    return out + ([f64] if f64 is not None else [])


def _decades(low: float, high: float) -> list[float]:
    start, stop = math.floor(math.log10(low)), math.ceil(math.log10(high))
    step = max(1, -(-(stop - start) // 5))
    return [10.0**k for k in range(start, stop + 1, step)]


def _without_style(chart: Any, standalone: bool = False) -> str:
    """The chart's SVG less what repeats or needs pygal.js: its ``<defs>`` (the stylesheet and
    config script, the same for every chart: ``chart_stylesheet`` writes the stylesheet once),
    its comments, and the tooltip coordinates pygal.js reads. Each dot's value becomes its
    ``<title>``, the tooltip a browser shows with no script."""
    tree = chart.render_tree()
    for child in list(tree):
        if not isinstance(child.tag, str) or (child.tag == "defs" and not standalone):
            tree.remove(child)
        elif child.tag == "defs":  # keep the scoped stylesheet, not the config for pygal.js
            for script in child.findall("script"):
                child.remove(script)
    for series in tree.iter("g"):
        for dots in [g for g in series.findall("g") if g.get("class") == "dots"]:
            # <g class="dots"><circle/><desc>value</desc><desc>x</desc>..</g> becomes
            # <circle class="dot"><title>value</title></circle>, in the same place.
            circle, value = (
                dots.find("circle"),
                next((d for d in dots.findall("desc") if d.get("class") == "value"), None),
            )
            label = next((d.text for d in dots.findall("desc") if d.get("class") == "label"), None)
            if circle is None:
                continue
            circle.set("class", "dot")
            for axis in ("cx", "cy"):  # pygal writes 16 digits; a tenth of a pixel is enough
                circle.set(axis, f"{float(circle.get(axis, 0)):.1f}")
            if value is not None:
                value.tag, value.attrib = "title", {}
                if label:  # the input's sizes: "h=16, w=65 (mismatch): 2.07"
                    value.text = f"{label}: {value.text}"
                circle.append(value)
            series.insert(list(series).index(dots), circle)
            series.remove(dots)
    for axis in tree.iter("g"):
        if axis.get("class") == "axis x":  # a guide per input, most of them unlabelled: drop those
            for guide in axis.findall("g"):
                text = guide.find("text")
                if text is not None and not (text.text or "").strip():
                    axis.remove(guide)
    if not standalone:
        # Inline in an HTML page an <svg> needs no namespace, and the page then names no URL at all.
        tree.attrib.pop("id", None)
        tree.attrib.pop("xmlns", None)
    return _to_string(tree)


def _to_string(tree: Any) -> str:
    from xml.etree import ElementTree

    return ElementTree.tostring(tree, encoding="unicode")


def chart_stylesheet() -> str:
    """pygal's stylesheet for the charts above (``no_prefix``: one for all), written once in the page."""
    chart = _chart("")
    for name in _SERIES:
        chart.add(name, [1.0])
    return "\n".join(
        style.text or "" for defs in chart.render_tree().findall("defs") for style in defs.findall("style")
    )
