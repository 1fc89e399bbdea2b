"""One gate over N CI jobs: merge the JSON reports of shards, then judge them as one run.

``python -m pytest_torchexport merge shard-*.json -o report.md --baseline base.json`` keeps
the last row of an item that ran more than once, refuses reports from different torch or
onnxruntime versions unless ``--allow-mixed``, and with ``--baseline`` exits as pytest would.
Without one it only converts: each shard's own run has already failed on its rows.

Nothing here imports torch or pytest, so the merge job needs neither. See docs/howto-ci.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from .baseline import change_lines, judge_baseline, key, load, row_name
from .html import missing_message, render
from .markdown import markdown
from .report import FAILING, REPORT_VERSION, Report, Result


class Exit:
    """pytest's exit codes (``pytest.ExitCode``), so CI reads a merge like a run."""

    OK = 0
    FAILED = 1
    USAGE_ERROR = 4
    NO_RESULTS = 5  # a gate over nothing must not pass quietly


#: Environment keys whose difference makes verdicts incomparable.
REFUSED_MIX = ("torch", "onnxruntime")

# Statuses settled before a baseline is consulted, so their rows carry no baseline verdict.
_NOT_JUDGED = ("skipped", "nondeterministic", "xfail")


class UsageError(Exception):
    """A problem with the command line or the input files (exit 4)."""


@dataclass
class Shard:
    """One CI job's report, as read from ``path``."""

    path: str
    environment: dict[str, Any]
    results: list[dict[str, Any]]


@dataclass
class Rerun:
    """An item that has rows in several places: the last one is kept."""

    key: str
    kept: tuple[str, dict[str, Any]]  # (path, row)
    dropped: list[tuple[str, dict[str, Any]]]


@dataclass
class Merged:
    environment: dict[str, Any]
    results: list[dict[str, Any]]
    reruns: list[Rerun] = field(default_factory=list)


@dataclass
class Gate:
    """The verdict on merged rows: the lines to print and the rows that fail."""

    lines: list[str]
    failing: list[dict[str, Any]]
    baseline: str | None = None


def read_shard(path: str | Path) -> Shard:
    """Read one report; anything that is not a readable torchexport report is a ``UsageError``."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: cannot read it ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("results"), list):
        raise UsageError(f'{path}: not a torchexport report (no "results" list); write one with --torchexport-report')
    if data.get("version", REPORT_VERSION) != REPORT_VERSION:
        raise UsageError(f"{path}: report version {data['version']}; this merge reads version {REPORT_VERSION}")
    for i, row in enumerate(data["results"]):
        try:
            Result.from_dict(row)  # fail here, naming the row, rather than in the writer
        except (TypeError, KeyError, AttributeError, ValueError) as exc:
            raise UsageError(f"{path}: result {i} is not a torchexport result ({exc})") from None
    return Shard(str(path), dict(data.get("environment") or {}), data["results"])


def mixed_environment(shards: Sequence[Shard]) -> dict[str, dict[str, list[str]]]:
    """Each environment key whose value differs between shards: ``{key: {value: [paths]}}``."""
    seen: dict[str, dict[str, list[str]]] = {}
    for shard in shards:
        for name, value in shard.environment.items():
            if name in ("devices", "mixed"):
                continue
            shown = "not installed" if value is None else str(value)
            seen.setdefault(name, {}).setdefault(shown, []).append(shard.path)
    return {name: values for name, values in seen.items() if len(values) > 1}


def merge(shards: Sequence[Shard], allow_mixed: bool = False) -> Merged:
    """The shards' rows as one report; an item's last row wins (files in order, then rows).

    The kept row takes the place of the item's first row, so the report reads in test order.
    """
    mixed = mixed_environment(shards)
    refused = [name for name in REFUSED_MIX if name in mixed]
    if refused and not allow_mixed:
        versions = "; ".join(
            f"{name} " + " vs ".join(f"{value} ({', '.join(paths)})" for value, paths in mixed[name].items())
            for name in refused
        )
        raise UsageError(
            f"the reports come from different versions: {versions}. Verdicts from different "
            "exporters are not one gate: rerun the shards on one version, or pass --allow-mixed"
        )
    rows: dict[str, tuple[str, dict[str, Any]]] = {}
    earlier: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for shard in shards:
        for row in shard.results:
            item = key(row)
            if item in rows:
                earlier.setdefault(item, []).append(rows[item])
            rows[item] = (shard.path, row)  # keeps the order of first appearance
    reruns = [Rerun(item, rows[item], dropped) for item, dropped in earlier.items()]
    return Merged(merged_environment(shards, mixed), [row for _, row in rows.values()], reruns)


def merged_environment(shards: Sequence[Shard], mixed: dict[str, dict[str, list[str]]]) -> dict[str, Any]:
    """The first shard's environment, every device any shard ran on, and what was mixed."""
    env = dict(shards[0].environment) if shards else {}
    devices = {d for shard in shards for d in shard.environment.get("devices") or []}
    env["devices"] = sorted(devices) or ["cpu"]
    if mixed:
        # Name every version, so the header cannot pass for one.
        for name, values in mixed.items():
            env[name] = " / ".join(values)
        env["mixed"] = mixed
    return env


def gate(results: Sequence[dict[str, Any]], baseline: dict[str, dict[str, Any]] | None = None) -> Gate:
    """Judge merged rows as one pytest run would.

    Without a baseline nothing is gated: the failing rows are only listed. With one, a known
    failure passes and any other failing row fails (``baseline.judge_baseline``).
    """
    if baseline is None:
        # A row from an older report may have no cause: its line ends at the name.
        lines = [
            ": ".join(filter(None, (f"{r['status']:12} {row_name(r)}", Result.from_dict(r).cause)))
            for r in results
            if r["status"] in FAILING
        ]
        return Gate(lines, [])
    # A failing row passes the gate only when known.
    failing = [row for row in results if row["status"] in FAILING and judge_baseline(row, baseline).kind != "known"]
    return Gate(change_lines(list(results), baseline), failing)


def with_verdicts(
    results: Sequence[dict[str, Any]], baseline: dict[str, dict[str, Any]] | None
) -> list[dict[str, Any]]:
    """Rows carrying the ``baseline`` key exactly when this merge judged them. A shard's own
    verdict is dropped: a stale ``known`` badge would contradict the merge's gate."""
    out = []
    for row in results:
        row = {k: v for k, v in row.items() if k != "baseline"}
        if baseline is not None and row["status"] not in _NOT_JUDGED:
            row["baseline"] = judge_baseline(row, baseline).kind
        out.append(row)
    return out


#: The report formats, by the file name's ending.
REPORT_FORMATS = {".json": "JSON", ".md": "Markdown", ".html": "a self-contained HTML page"}


def report_format_problem(path: str | Path, option: str) -> str | None:
    """Why ``path`` names no report format (``option`` is how the user gave it), or None."""
    suffix = Path(path).suffix.lower()
    if suffix in REPORT_FORMATS:
        return None
    said = f"{suffix} is no report format" if suffix else "the name has no extension to tell the format by"
    formats = ", ".join(f"{ending} ({what})" for ending, what in REPORT_FORMATS.items())
    junit = " (for JUnit XML, pytest's own --junitxml=PATH writes one row per item)" if suffix == ".xml" else ""
    return f"{option}={path}: {said}; name a file ending {formats}{junit}"


def write_report(
    path: str | Path, report: Report, environment: dict[str, Any], session: dict[str, Any] | None = None
) -> None:
    """Write ``report`` as Markdown (``.md``), HTML (``.html``) or JSON: the one writer that
    the plugin and the merge share. ``session``: the session's totals, where one session made it.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.suffix.lower() == ".md":
        text = markdown(report.results, environment, session=session)
    elif target.suffix.lower() == ".html":
        text = render(report.to_dict(environment)["results"], environment, session=session)
    else:
        data = report.to_dict(environment)
        if session:
            data["session"] = session
        text = json.dumps(data, indent=2, default=str)
    target.write_text(text, encoding="utf-8")


def summary_lines(shards: Sequence[Shard], merged: Merged) -> list[str]:
    """Rows read per file and each rerun, to check before trusting the gate."""
    lines = [f"merged {len(s.results)} row{'s' * (len(s.results) != 1)} from {s.path}" for s in shards]
    for rerun in merged.reruns:
        path, row = rerun.kept
        dropped = ", ".join(f"{p}: {r['status']}" for p, r in rerun.dropped)
        lines.append(f"{'RERUN':12} {row_name(row)}: kept the last row ({path}: {row['status']}), dropped {dropped}")
    if merged.reruns:
        n = sum(len(r.dropped) for r in merged.reruns)
        lines.append(
            f"dropped {n} earlier row{'s' * (n != 1)} of {len(merged.reruns)} rerun item{'s' * (len(merged.reruns) != 1)}"
        )
    return lines


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "reports", nargs="*", metavar="REPORT", help="JSON reports of the shards (--torchexport-report)"
    )
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT",
        help="the merged report: .json, .md for Markdown, or .html for a page (the html extra)",
    )
    parser.add_argument("--baseline", metavar="PATH", help="gate against this baseline as --torchexport-baseline does")
    parser.add_argument(
        "--allow-mixed", action="store_true", help="merge reports from different torch/onnxruntime versions"
    )


def run(args: argparse.Namespace) -> int:
    """The ``merge`` command on parsed arguments: prints the summary, returns the exit code."""
    try:
        if not args.reports:
            raise UsageError("no reports to merge: give the JSON reports of the shards (--torchexport-report=x.json)")
        wrong = report_format_problem(args.output, "-o")
        if wrong:
            raise UsageError(wrong)
        if Path(args.output).suffix == ".html":
            absent = missing_message(f"-o {args.output}")
            if absent:
                raise UsageError(absent)
        shards = [read_shard(path) for path in args.reports]
        baseline = _read_baseline(args.baseline) if args.baseline else None
        merged = merge(shards, allow_mixed=args.allow_mixed)
    except UsageError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return Exit.USAGE_ERROR
    results = with_verdicts(merged.results, baseline)
    verdict = gate(results, baseline)
    verdict.baseline = args.baseline
    try:
        write_report(args.output, Report.from_dict({"results": results}), merged.environment)
    except OSError as exc:
        print(f"ERROR: -o {args.output}: cannot write it ({exc})", file=sys.stderr)
        return Exit.USAGE_ERROR
    lines = summary_lines(shards, merged)
    for name in merged.environment.get("mixed", {}):
        lines.append(f"mixed environment: {name} {merged.environment[name]}")
    if baseline is not None:
        lines.append(f"---- torchexport baseline {args.baseline} ----")
    elif any(r.get("baseline") == "known" and r["status"] in FAILING for r in merged.results):
        lines.append("note: the shards judged some failures as known; pass --baseline to judge them here too")
    lines += verdict.lines
    lines.append(_closing(len(results), len(shards), args.output, verdict))
    print("\n".join(lines))
    if not results:
        return Exit.NO_RESULTS
    return Exit.FAILED if verdict.failing else Exit.OK


def _read_baseline(path: str) -> dict[str, dict[str, Any]]:
    try:
        return load(path)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UsageError(f"--baseline={path}: cannot read it ({exc})") from None


def _closing(rows: int, reports: int, output: str, verdict: Gate) -> str:
    head = f"torchexport merge: {rows} result{'s' * (rows != 1)} from {reports} report{'s' * (reports != 1)}"
    if not rows:
        return f"{head}: no results to gate, written to {output}"
    if verdict.baseline is None and verdict.lines:  # a conversion: nothing gated
        shown = len(verdict.lines)
        return f"{head} written to {output}: {shown} failing row{'s' * (shown != 1)}, not gated (no --baseline)"
    outcome = f"{len(verdict.failing)} failing" if verdict.failing else "no failure"
    return f"{head} written to {output}: {outcome}"


class CommandLineParser(argparse.ArgumentParser):
    """argparse that exits 4 on a usage error, as pytest does (2 means "interrupted" to pytest)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(Exit.USAGE_ERROR, f"ERROR: {message}\n")


def main(argv: Sequence[str] | None = None) -> int:
    """``merge`` on its own: ``main(["a.json", "b.json", "-o", "merged.md"])``."""
    parser = CommandLineParser(prog="python -m pytest_torchexport merge", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))
