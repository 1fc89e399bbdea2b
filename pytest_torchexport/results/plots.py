"""The HTML report's one picture: each input's greatest error against its tolerance.

Drawn by pygal (the ``html`` extra) as static inline SVG from a row's ``per_input`` entries,
so the page stays one file. pygal's stylesheet is the same for every chart, so it is written
once in the page (``chart_stylesheet``) to keep the report small. See docs/html-report.md.
"""

from __future__ import annotations

import math
import sys
from typing import TYPE_CHECKING, Any
from xml.etree import ElementTree

if TYPE_CHECKING:
    from types import ModuleType

    import pygal
    from pygal.style import Style

#: Where a bit-exact input is drawn (a log axis cannot show 0): below every error.
_EXACT_FACTOR = 0.1
_COLORS = ("#2e7d32", "#c62828", "#757575", "#1565c0")  # pass, failing, tolerance, eager vs float64
_SERIES = ("within tolerance", "beyond tolerance", "tolerance at that element", "eager's own float64 rounding")


def load_pygal() -> ModuleType:
    """pygal, without the import hook it adds to ``sys.meta_path``.

    pygal's ``PluginImportFixer`` has no ``find_spec``, so every later import warns
    ``ImportWarning`` (an error under ``-W error``). The report never uses ``pygal.maps``.
    """
    import pygal

    sys.meta_path[:] = [
        f for f in sys.meta_path if not (type(f).__name__ == "PluginImportFixer" and type(f).__module__ == "pygal")
    ]
    return pygal


def _style() -> Style:
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


def _chart(title: str, standalone: bool = False, x_title: str = "input, in the order tried") -> pygal.Line:
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
    """The row's per-input errors as an SVG string, or None where no input failed.

    One dot per input (green within tolerance, red beyond), a grey line for the tolerance and
    a blue mark for eager's own float64 error where the check computed one. ``standalone``
    keeps the chart's own stylesheet, for another page such as pytest-html's.
    """
    entries = [e for e in row.get("per_input") or [] if e.get("max_abs") is not None]
    if not any(e.get("status", "pass") != "pass" for e in entries):
        return None  # nothing failed: html.within_text says more than a chart
    # Sorted by size, so the sizes where the artifact fails stand together.
    dims = sorted({dim for e in entries for dim in (e.get("sizes") or {})})
    entries = sorted(entries, key=lambda e: tuple((e.get("sizes") or {}).get(dim, 0) for dim in dims))
    positive = [v for e in entries for v in _values(e) if v > 0 and math.isfinite(v)]
    exact = min(positive) * _EXACT_FACTOR if positive else 1e-12
    ceiling = max(positive) * 10 if positive else 1.0
    # One value per input in each series (None where it has none); a point may be a {value, label} dict.
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
        # Every series is added, even empty, so a colour means the same on every chart.
        tolerance = name == _SERIES[2]
        chart.add(name, series[name], stroke=tolerance, show_dots=not tolerance, allow_interruptions=True)
    step = max(1, len(entries) // 10)
    labels = [_sizes_label(e, dims) or str(i) for i, e in enumerate(entries, 1)]
    # Label a run of one size once.
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


def _without_style(chart: pygal.Line, standalone: bool = False) -> str:
    """The chart's SVG less what repeats or needs pygal.js; each dot's value becomes its
    ``<title>``, a tooltip that needs no script."""
    tree = chart.render_tree()
    for child in list(tree):
        if not isinstance(child.tag, str) or (child.tag == "defs" and not standalone):
            tree.remove(child)
        elif child.tag == "defs":  # keep the scoped stylesheet, not the config for pygal.js
            for script in child.findall("script"):
                child.remove(script)
    for series in tree.iter("g"):
        for dots in [g for g in series.findall("g") if g.get("class") == "dots"]:
            # <g class="dots"><circle/><desc>value</desc>..</g> -> <circle class="dot"><title>value</title></circle>
            circle, value = (
                dots.find("circle"),
                next((d for d in dots.findall("desc") if d.get("class") == "value"), None),
            )
            label = next((d.text for d in dots.findall("desc") if d.get("class") == "label"), None)
            if circle is None:
                continue
            circle.set("class", "dot")
            for axis in ("cx", "cy"):  # a tenth of a pixel is enough
                circle.set(axis, f"{float(circle.get(axis, 0)):.1f}")
            if value is not None:
                value.tag, value.attrib = "title", {}
                if label:  # "h=16, w=65 (mismatch): 2.07"
                    value.text = f"{label}: {value.text}"
                circle.append(value)
            series.insert(list(series).index(dots), circle)
            series.remove(dots)
    for axis in tree.iter("g"):
        if axis.get("class") == "axis x":  # drop unlabelled guides
            for guide in axis.findall("g"):
                text = guide.find("text")
                if text is not None and not (text.text or "").strip():
                    axis.remove(guide)
    if not standalone:
        # Inline in HTML an <svg> needs no namespace, so the page names no URL.
        tree.attrib.pop("id", None)
        tree.attrib.pop("xmlns", None)
    return _to_string(tree)


def _to_string(tree: Any) -> str:
    return ElementTree.tostring(tree, encoding="unicode")


def chart_stylesheet() -> str:
    """pygal's stylesheet for every chart, written once in the page."""
    chart = _chart("")
    for name in _SERIES:
        chart.add(name, [1.0])
    return "\n".join(
        style.text or "" for defs in chart.render_tree().findall("defs") for style in defs.findall("style")
    )
