"""The row's extra keys, one typed record: what a stage may add to a ``Result`` beyond its fields.

Every key a stage writes is declared here with its type, so a misspelled key or a value of
the wrong shape is a type error, not a silent new column. The report keeps them as plain JSON
keys beside the row's fields (docs/report.md, "Extra keys the code adds", documents each one,
and ``tests/test_report_summary.py`` holds the two to each other). Tools reading a report
ignore the keys they do not know, so a key is added here, in the docs, and nowhere else.
"""

from __future__ import annotations

from typing import Any, TypedDict


class Location(TypedDict):
    """Where the test is, for annotations when no line of the model's is known."""

    file: str
    line: int


class LatencyMs(TypedDict):
    """The median of a few warm calls of each side at the recorded input, in milliseconds."""

    eager: float
    artifact: float
    input: str


class CppNote(TypedDict, total=False):
    """The C++ load's outcome (``stages/cpp_load.py``)."""

    status: str  # pass, skipped, load_error, run_error, mismatch
    reason: str | None  # why it was skipped
    runtime: str  # the C++ entry point: torch::jit::load, AOTIModelPackageLoader
    run_s: float
    served: bool  # run by the session's one served runner, not a process of its own
    runner_build_s: float  # this check waited for the runner's build


class RowExtra(TypedDict, total=False):
    """The extra keys of a row; each is absent where its stage did not run or had nothing to say."""

    # How the check ran.
    eager_mode: str
    isolation: str
    method: str  # [Another Method] the method checked, when not forward
    call: str  # the kind of call the row checked, where the test made several
    recorded_via: str
    recorded_calls: int
    location: Location
    model: dict[str, Any]  # a model named on the command line: its spec and inputs
    capture: str  # "shared" or "own"
    export_sizes: dict[str, int]
    roundtrip: str  # why the round trip did not run
    artifact_files: list[str]
    artifact_bytes: int
    artifact_dir: str
    torchscript_deprecated: str
    shipped: dict[str, Any]  # [ONNX As Shipped] the post-processing steps and their budget
    # What the search rests on.
    compared: dict[str, Any]
    sizes: dict[str, list[int]]
    per_input: list[dict[str, Any]]
    rejected_examples: int
    paths: int
    numeric_noise: dict[str, Any]
    float64_check: dict[str, Any]  # [Noise Oracle] a mismatch's float64 run: rounding or a defect
    # A failure's numbers and where it starts.
    error_p50: float
    error_p99: float
    passes_with: dict[str, float]
    diverges_at: dict[str, Any]
    diverges_at_unavailable: str
    runtime_optimizer: dict[str, Any]
    # The optional stages.
    standalone: str
    cpp: CppNote
    latency_ms: LatencyMs
    # Budgets: what the check left out, and why.
    eager_s: float
    eager_peak_mb: float
    memory_per_check_mb: int
    memory_budget_mb: float
    budget_limit: str
    size_caps: dict[str, int]
    examples_cap: int
    size_cut: dict[str, Any]
    budget: dict[str, Any]
    # The verdict cache, the baseline, xfail and bundles.
    cached: bool
    cached_at: str
    cache: str
    cache_refused: str
    baseline: str
    xfail_of: str  # the status before xfail= applied
    bundle: dict[str, Any]


__all__ = ["CppNote", "LatencyMs", "Location", "RowExtra"]
