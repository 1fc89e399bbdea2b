"""Result records (JSON round-trippable): the data model of every row and report.

Pure data: nothing here prints, writes files or imports torch; ``table.py``, ``markdown.py``
and ``html.py`` render these fields. ``check()`` users get the same objects. See docs/report.md.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import platform
from dataclasses import dataclass, field
from typing import Any, Literal, cast, get_args

from .._compat import package_version
from .row_extra import RowExtra
from .table import summary_lines

REPORT_VERSION = 1

#: Every status a result can carry (docs/statuses.md), best first: the order defines "got
#: worse" for baselines. ``Result.from_dict`` refuses any other.
Status = Literal[
    "pass",
    "xfail",
    "skipped",
    "nondeterministic",
    "xpass",
    "roundtrip_mismatch",
    "usage_error",
    "mismatch",
    "run_error",
    "timeout",
    "load_error",
    "export_error",
]
STATUSES: tuple[Status, ...] = get_args(Status)
#: What each status means and what to do; the reference page is generated from these.
STATUS_DOCS: dict[str, str] = {
    "pass": "the loaded artifact matched eager on every input tried",
    "mismatch": "numbers (or side effects) differ from eager on some input: a defect or a tolerance question",
    "run_error": "the artifact raised on an input eager accepts (a baked-in size, a static ONNX dim)",
    "export_error": "the exporter refused the module: its own reason and the user's line are in the message",
    "load_error": "the saved artifact does not load back (also: a TorchScript, ONNX, AOTInductor or ExecuTorch "
    "artifact that fails in a fresh process that never imported the test's code)",
    "usage_error": "the check could not be set up from what the test did (it called no nn.Module, its recorded "
    "call raises in eval mode under no_grad, an option does not fit the call); the message says what to change",
    "timeout": "the check ran past its time limit (timeout=, --torchexport-timeout); the message names the stage it was in",
    "roundtrip_mismatch": "the loaded artifact differs from the in-memory one, which matches eager",
    "nondeterministic": "eager disagrees with itself, so parity is undefined; never reported as a mismatch",
    "skipped": "the backend or device is not available here, or nothing was checked (eager rejected every input, "
    "or the outputs held no element to compare); the reason says why",
    "xfail": "failed as declared by xfail= (or as recorded in the baseline)",
    "xpass": "passed although marked xfail=: the defect may be fixed; strict, so it fails",
}

#: The kinds of finding: a closed set, each explained in ``FINDING_DOCS`` (a test holds the two together).
FindingKind = Literal[
    "frozen_branch",
    "frozen_value",
    "baked_shape",
    "baked_argument",
    "specialized_dim",
    "assumed_dim",
    "data_dependent_branch",
    "unsupported_op",
    "unsupported_python",
    "scripted_module",
    "tracer_warning",
    "unsupported_output",
    "unregistered_type",
    "compiled_parts",
    "mutates_input",
    "mutates_state",
    "side_effects",
    "training_mode",
    "other_modules",
    "recorded_call",
    "changed_after_call",
    "reference_copy",
    "not_compared",
    "masked_rows",
    "unguarded_sizes",
    "vacuous_output",
    "rejected_inputs",
    "external_data",
    "device_fallback",
    "standalone_load",
    "cpp_load",
    "backend_note",
    "error_site",
    "diverges_at",
    "timeout",
    "numeric_noise",
    "size_budget",
    "budget",
    "onnx_checker",
    "static_size",
    "shipped_step",
    "runtime_optimizer",
]

#: What each finding kind explains. A finding never changes a status by itself.
FINDING_DOCS: dict[FindingKind, str] = {
    "frozen_branch": "a data-dependent branch was recorded for one input only (TracerWarning or path divergence)",
    "frozen_value": "a tensor value (.item()) became a constant in the artifact",
    "baked_shape": "a size read as a Python number became a constant in the artifact",
    "baked_argument": "a Python scalar argument is a constant in the artifact: other values are ignored",
    "specialized_dim": "a dim declared dynamic is static or narrowed in the artifact (with the guard)",
    "assumed_dim": "dim 0 was assumed to be a batch dim (or a text model's dim 1 its sequence), but eager rejects "
    "other sizes: held at the example's size",
    "data_dependent_branch": "torch.export cannot capture a branch on a tensor's value",
    "unsupported_op": "the exporter has no lowering for an operator (with these shapes)",
    "unsupported_python": "TorchScript cannot compile a Python construct",
    "scripted_module": "a ScriptModule was given to an exporter that needs the Python module",
    "tracer_warning": "the TracerWarning text, at the user's line",
    "unsupported_output": "trace refuses an output it cannot hold (None, a non-tensor leaf), at the model's forward",
    "unregistered_type": "torch.export (and the exporters built on it) refuses an input or output of a class pytree "
    "does not know, such as a cache class the installed library registers none for: register it with "
    "torch.utils._pytree or pass its tensors",
    "compiled_parts": "the module held scripted, traced or compiled submodules when the test called it",
    "mutates_input": "forward modifies its inputs in place",
    "mutates_state": "forward updates buffers on every call",
    "side_effects": "the artifact does not reproduce eager's input or state updates",
    "training_mode": "the module was called in training mode, whose outputs differ from eval mode's on the recorded "
    "call (or that could not be told); it was validated in eval mode",
    "other_modules": "the test called other top-level modules too; the first was checked, module= picks another",
    "recorded_call": "which recorded call was checked: one handed to torch.jit.trace/torch.export/torch.onnx.export, "
    "or a later call because the first raises in eval mode under no_grad",
    "changed_after_call": "the test body changed the module after calling it, and no copy of it was taken at the "
    "call (too large to copy, or put off by a warm run of the verdict cache): the module as the body left it was "
    "checked",
    "reference_copy": "the plugin's copy of the module is not the module the test called (a submodule in another "
    "mode, another graph, or other outputs on the recorded call): the test's own module was checked, its modes and "
    "state as at the call put back, and why",
    "not_compared": "an output leaf no comparison can read by value (an object holding no tensor or value and with "
    "no == of its own, code such as a module): named with its id path, and left out of the verdict",
    "masked_rows": "the artifact differed from eager only at query positions that attend to no key (a batch row "
    "the mask keeps nothing of; for a causal model also left padding), or in a pooled output that eager shows "
    "reads one (a pooler reading the first position): what a softmax over no key gives is each runtime's own "
    "choice, so those outputs are undefined and left out of the comparison (counted in compared['masked']); the "
    "positions, and on how many inputs",
    "unguarded_sizes": "the artifact ran inputs outside the shapes its torch.export capture proved (a runtime "
    "without guards, such as onnxruntime) and matched eager on them: served though not proven, checked by value; "
    "where one differs it is a mismatch that quotes the guard",
    "vacuous_output": "outputs are constant or ~0 on every input, so parity proves nothing",
    "rejected_inputs": "eager rejected most generated inputs: declare dims=/inputs=",
    "external_data": "the ONNX artifact is several files that must ship together",
    "device_fallback": "onnxruntime had no CUDA provider and ran on CPU",
    "standalone_load": "loaded and run on the recorded example in a fresh process that never imported the "
    "test's code, the saved artifact fails (naming what it reached for: a custom op, a Python class, a "
    "registered pytree type) or differs; a load_error for the formats meant to load without Python",
    "cpp_load": "loaded and run on the recorded example by libtorch in C++ (torch::jit::load, "
    "AOTIModelPackageLoader), the saved artifact fails (naming what C++ could not resolve: a custom op registered "
    "only in Python, a missing library) or differs; the load_error or mismatch it is",
    "backend_note": "something the backend wants the reader to know (a trace of a ScriptModule, ...)",
    "error_site": "the model's line (the user's, or a library's such as torchvision's) where the export, load or artifact run raised",
    "diverges_at": "the first module whose artifact output differs from eager's, given eager's own input to it",
    "timeout": "the check was stopped at its time limit: the stage it was in and how long it ran",
    "numeric_noise": "some inputs differ beyond the default tolerances by float32 rounding only: as close to a float64 run as eager",
    "size_budget": "declared sizes not tried, the machine could not hold them (the recorded call's measured memory grown to them past the memory allowance: --torchexport-memory; by default half of the free memory each check has), or examples cut (its measured time past the time limit; a time estimate never cuts sizes); what was measured, the caps and how to lift them (the terminal summary says it in one line)",
    "budget": "the search budget (budget=, --torchexport-budget; default a multiple of the test body's time) was spent before every input was tried: what was left untried, by kind (drawn inputs first, then the least valuable probes; the recorded call and each declared dim's min and max are always tried)",
    "onnx_checker": "the ONNX artifact fails onnx.checker.check_model(full_check=True): onnxruntime runs it, stricter "
    "runtimes and converters may refuse it; the artifact is still checked for parity",
    "static_size": "a dim nobody declared dynamic was tried at a few nearby sizes (n-1, n+1, 2n) after a pass: "
    "eager runs there and the artifact raises or differs; the input, the dim, the sizes and the dynamic=/dims= "
    "line that makes it a checked requirement (a finding: which sizes are served is yours to say)",
    "shipped_step": "ONNX as shipped (onnx_fp16/onnx_quantize/onnx_optimize): the failing input passes on the model "
    "before a post-processing step and fails after it, or already fails on the exported model: the step to blame",
    "runtime_optimizer": "the failing input passes with onnxruntime's graph optimizations off: the exported graph is "
    "right and a rewrite onnxruntime applies at load changes the result (the levels, the onnxruntime version)",
}

#: What kind of cause ``Result.likely_cause`` is. The first group is what the engine found,
#: written on the message's "Likely cause:" line; the second is a reason the check states itself.
CauseKind = Literal[
    "compiled_parts",
    # An export, save or load error at a line of the model's, by the exporter's words, else ``error_site``.
    "data_dependent_branch",
    "unsupported_op",
    "unsupported_python",
    "unsupported_output",
    "unregistered_type",
    "scripted_module",
    "error_site",
    "standalone_load",
    "cpp_load",
    "shipped_step",
    "runtime_optimizer",
    "special_value",
    "baked_argument",
    "frozen_branch",
    "baked_shape",
    "frozen_value",
    "specialized_dim",
    "control_flow_path",
    "baked_size",
    "far_scale",
    "nonfinite",
    "roundtrip",
    "masked_rows",
    "keyword_order",
    "numeric",
    "exporter_error",
    "unavailable",
    "usage",
    "eager_replay",
    "test_body",
    "nondeterministic",
    "rejected_inputs",
    "nothing_compared",
    "side_effects",
    "timeout",
    "crash",
    "plugin_error",
    "xpass",
]
CAUSE_KINDS: tuple[CauseKind, ...] = get_args(CauseKind)
#: The kinds an export error at the model's own line is named by (``stages/exporting.py``).
ERROR_SITE_KINDS: frozenset[str] = frozenset(
    CAUSE_KINDS[CAUSE_KINDS.index("data_dependent_branch") : CAUSE_KINDS.index("error_site") + 1]
)
#: The kinds the message writes on its "Likely cause:" line.
FOUND_CAUSES: frozenset[CauseKind] = frozenset(CAUSE_KINDS[: CAUSE_KINDS.index("numeric") + 1])
#: What each cause kind means; docs/report.md lists them.
#: What each key of a row's ``timings`` counts, in seconds (the HTML page's legend; docs/report.md).
TIMING_DOCS: dict[str, str] = {
    "export_s": "the backend's own export work (without the capture it started from)",
    "capture_s": "torch.export's capture the export started from, shared by the test's backends or its own",
    "load_s": "saving the artifact and loading it back",
    "search_s": "the hypothesis search: drawing inputs, eager's and the artifact's runs, comparing",
    "run_s": "time inside the artifact, part of search_s",
    "reference_s": "eager's forwards on the drawn inputs, part of search_s",
    "compare_s": "comparing outputs, float64 runs of eager included, part of search_s",
    "localize_s": "finding the first module whose output differs, after a mismatch",
    "static_size_s": "the sizes nobody declared, tried after a pass",
    "shared_static_size_s": "eager's calls at those sizes, made once for every backend",
    "latency_s": "measuring eager's and the artifact's latency",
    "shared_s": "the test's process's work on the inputs every backend shares, before the checks started",
    "shared_reference_s": "eager's forwards on those shared inputs, part of shared_s",
    "after_exports_s": "the check's own wall time after its exports: what the search budget counts",
    "standalone_s": "loading and running the saved artifact in a fresh process that never imported the test",
    "standalone_wait_s": "waiting for that fresh process's answer after the search was done",
    "cpp_s": "loading and running the saved artifact from C++ (libtorch)",
    "cpp_wait_s": "waiting for the C++ run after the search was done",
    "shipped_step_s": "ONNX as shipped: finding the post-processing step a failing input first fails after",
    "runtime_optimizer_s": "rerunning a failing input with onnxruntime's graph optimizations off",
    "cache_s": "the verdict cache: the key, the lookup and storing the verdict",
    "total_s": "the whole check, from its start to its row",
    "session wall time": "the session from its first check to its last row",
}

CAUSE_KIND_DOCS: dict[str, str] = {
    "keyword_order": "the export binds keyword arguments by their order, not their names: re-exported with them in "
    "forward's order, the failing input passes",
    "masked_rows": "no longer a cause: outputs at query positions that attend to no key are left out of the "
    "comparison (the masked_rows finding); kept for reports written before",
    "compiled_parts": "the module held scripted, traced or compiled submodules when the test called it",
    "data_dependent_branch": "the model branches on a tensor's value, which the exporter cannot capture (at the "
    "line named)",
    "unsupported_op": "the exporter has no lowering for an operator the model uses at the line named, or the "
    "runtime no kernel for a node of the exported file (named in the cause)",
    "unsupported_python": "the exporter cannot capture a Python construct the model uses at the line named",
    "unsupported_output": "the model returns a value the exporter cannot output (None, an object that is not a tensor)",
    "unregistered_type": "the model takes or returns an object of a class pytree does not know",
    "scripted_module": "the exporter was given a ScriptModule, which it cannot export",
    "error_site": "the export, save or load raised at this line of the model's code (the user's, or a library's such "
    "as torchvision's), where its error names no kind above",
    "standalone_load": "the artifact reaches for something only the test's process defines",
    "cpp_load": "the artifact reaches for something a C++ deployment does not have (an op registered only in Python)",
    "shipped_step": "ONNX as shipped: the post-processing step (float16, quantization, offline optimization) the "
    "failing input first fails after, or the export itself",
    "runtime_optimizer": "a graph rewrite onnxruntime applies at load changes the result, not the export",
    "special_value": "a special value (NaN, inf, an extreme) the special_values=True probe put in the input",
    "baked_argument": "a Python scalar argument baked into the artifact",
    "frozen_branch": "a data-dependent branch recorded for one input only",
    "baked_shape": "a size read as a Python number became a constant",
    "frozen_value": "a tensor value (.item()) became a constant",
    "specialized_dim": "a dynamic dim the exporter specialized",
    "control_flow_path": "the failing input takes another path through the model's code than the export example",
    "baked_size": "the artifact fails at sizes other than the one it was exported at",
    "far_scale": "it fails only at inputs far from the example's scale",
    "nonfinite": "NaN or inf on one side only",
    "roundtrip": "the save/load path changed the artifact",
    "numeric": "every input took the same path: the difference is numeric (where it starts, if localised)",
    "exporter_error": "the exporter's (or the saver's, the loader's) own error, where no line of the user's was found",
    "unavailable": "the backend or device is not available here (skipped, or a failure under --torchexport-require)",
    "usage": "the check could not be set up from the test: no module called, options that do not fit the call",
    "eager_replay": "the recorded call raises when replayed as served (eval mode, no_grad)",
    "test_body": "the test body itself skipped, xfailed or failed, or the test was skipped before its body ran",
    "nondeterministic": "eager (or the artifact) disagrees with itself",
    "rejected_inputs": "eager rejected every generated input",
    "nothing_compared": "the outputs held no element to compare",
    "side_effects": "the artifact does not reproduce eager's in-place updates of its inputs or state",
    "timeout": "the check ran past its time limit, or was stopped from outside",
    "crash": "the check's process died (a signal, an exit)",
    "plugin_error": "the plugin's own code raised (a bug of pytest-torchexport, not a verdict): the check did not finish; the row fails with the stage's status and the message holds the traceback",
    "xpass": "a backend marked xfail= passed: the defect may be fixed",
}

FAILING = frozenset(
    {"usage_error", "mismatch", "run_error", "timeout", "export_error", "load_error", "roundtrip_mismatch", "xpass"}
)

#: [One Writer] The verdict's fields, which ``outcome.settle`` alone writes; the rest are facts.
VERDICT = frozenset({"status", "message", "likely_cause", "cause_kind"})


@dataclass
class Finding:
    """An explanation attached to a result; it never changes the status by itself."""

    kind: FindingKind
    detail: str
    where: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "where": self.where, "detail": self.detail}


@dataclass
class Result:
    """One backend on one device for one module."""

    backend: str
    device: str
    status: Status
    module: str = ""
    nodeid: str | None = None
    test: str | None = None
    examples: int = 0
    max_abs_err: float | None = None
    max_rel_err: float | None = None
    atol: float | None = None
    rtol: float | None = None
    failing_example: dict[str, Any] | None = None
    message: str = ""
    findings: list[Finding] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    #: The keys a stage adds beyond these fields, each declared in ``row_extra.RowExtra``.
    extra: RowExtra = field(default_factory=RowExtra)
    #: The likely cause in a few words and its kind, set with the verdict where known; the
    #: message's "Likely cause:" line is written from them, never read back.
    likely_cause: str | None = None
    cause_kind: CauseKind | None = None
    #: [Sources] The files read while the verdict was made, for the verdict cache; not in the report.
    sources: list[str] | None = field(default=None, compare=False)

    @property
    def failed(self) -> bool:
        return self.status in FAILING

    @property
    def reused_at(self) -> str | None:
        """When the run whose verdict this row reuses ran (the verdict cache); None for a fresh verdict."""
        return (self.extra.get("cached_at") or "an earlier run") if self.extra.get("cached") else None

    @property
    def budget_cut(self) -> bool:
        """Whether a time or memory budget shaped what the check tried (``stages/budget.py``,
        ``stages/search_budget.py``): its verdict depends on this machine's speed or memory."""
        return "budget" in self.extra or "budget_limit" in self.extra

    def facts(self) -> dict[str, Any]:
        """Every field but the verdict, by name, deep-copied."""
        return {f.name: copy.deepcopy(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name not in VERDICT}

    def restore(self, facts: dict[str, Any]) -> None:
        """Put back an earlier ``facts()``; the verdict stays."""
        for name, value in facts.items():
            setattr(self, name, value)

    def written_since(self, facts: dict[str, Any]) -> dict[str, Any]:
        """The fields (and ``extra`` keys) that differ from an earlier ``facts()``, for ``take``."""
        written = {name: value for name, value in self.facts().items() if value != facts[name]}
        if "extra" in written:
            before = facts["extra"]
            written["extra"] = {k: v for k, v in written["extra"].items() if k not in before or before[k] != v}
        return written

    def take(self, written: dict[str, Any]) -> None:
        """Copy another result's ``written_since`` into this one; never the verdict."""
        for name, value in copy.deepcopy(written).items():
            if name == "extra":
                self.extra.update(value)
            else:
                setattr(self, name, value)

    @property
    def cause(self) -> str:
        """The cause in a few words, for one table cell."""
        if self.status == "pass":
            # on a pass, the finding that breaks another input comes first
            for finding in ranked(self.findings):
                if finding.kind in _EXPLAINING:
                    return f"{finding.kind}{' ' + finding.where if finding.where else ''}"
                if finding.kind in _NOTABLE:
                    return finding.kind
            return ""
        # The verdict's own cause comes before findings the export noticed on the way.
        named = next((f for f in self.findings if f.kind == self.cause_kind), None)
        if named is not None and named.kind not in _EXPLAINING and self.likely_cause:
            return self.likely_cause.split("\n", 1)[0]
        for finding in ([named] if named else []) + self.findings:
            if finding.kind in _EXPLAINING:
                where = f" {finding.where}" if finding.where else ""
                return f"{finding.kind}{where}"
        # An older row may have no likely_cause: the cell stays empty, never parsed from the message.
        return (self.likely_cause or "").split("\n", 1)[0]

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "nodeid": self.nodeid,
            "test": self.test,
            "module": self.module,
            "backend": self.backend,
            "device": self.device,
            "status": self.status,
            "examples": self.examples,
            "max_abs_err": self.max_abs_err,
            "max_rel_err": self.max_rel_err,
            "atol": self.atol,
            "rtol": self.rtol,
            "failing_example": self.failing_example,
            "message": self.message,
            "likely_cause": self.likely_cause,
            "cause_kind": self.cause_kind,
            "findings": [f.to_dict() for f in (ranked(self.findings) if self.status == "pass" else self.findings)],
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
        }
        data.update(self.extra)
        if self.sources is not None:
            data["sources"] = self.sources
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Result:
        """The row ``to_dict`` wrote; an older row without cause keys loads with both None."""
        names = {f.name for f in dataclasses.fields(cls)} - {"extra", "findings"}
        known = {k: v for k, v in data.items() if k in names}
        if known.get("status") not in STATUSES:
            raise ValueError(f"unknown status {known.get('status')!r}; a status is one of {', '.join(STATUSES)}")
        # Read back as written: a report from another version may hold keys this one does not declare.
        extra = cast("RowExtra", {k: v for k, v in data.items() if k not in names and k != "findings"})
        findings = [Finding(**f) for f in data.get("findings", [])]
        return cls(**known, findings=findings, extra=extra)


def tag(result: Result) -> str:
    """What every message's first line names: the backend, the device and the module checked."""
    method = result.extra.get("method")  # [Another Method] the method checked, when not forward
    call = result.extra.get("call")  # which kind of call, where the test made several
    return (
        f"[backend={result.backend}, device={result.device}] ({result.module}{'.' + method if method else ''}"
        f"{f', {call} call' if call else ''})"
    )


# Findings that explain a failure better than the first line of the message does.
_EXPLAINING = (
    "side_effects",
    "frozen_branch",
    "frozen_value",
    "data_dependent_branch",
    "unsupported_op",
    "scripted_module",
    "unsupported_python",
    "unsupported_output",
    "unregistered_type",
    "baked_shape",
    "baked_argument",
    "specialized_dim",
    "mutates_input",
    "mutates_state",
)
# Findings worth a word even on a passing row.
_NOTABLE = (
    "vacuous_output",
    "rejected_inputs",
    "training_mode",
    "external_data",
    "device_fallback",
    "assumed_dim",
    # Not explaining: a checker complaint rarely explains a mismatch.
    "onnx_checker",
    "static_size",  # a pass that holds only at the recorded size of an undeclared dim
)


#: Findings on a passing row, most consequential first: what breaks another input, then what
#: makes the pass prove little, then what may matter on other values.
_CONSEQUENCE = (
    "static_size",
    "specialized_dim",
    "frozen_branch",
    "baked_shape",
    "data_dependent_branch",
    "vacuous_output",
    "rejected_inputs",
    "side_effects",
    "training_mode",
    "assumed_dim",
    "frozen_value",
    "baked_argument",
    "mutates_state",
    "mutates_input",
)


def ranked(findings: list[Finding]) -> list[Finding]:
    """``findings`` most consequential first (``_CONSEQUENCE``); the rest keep their order after."""
    order = {kind: i for i, kind in enumerate(_CONSEQUENCE)}
    return sorted(findings, key=lambda f: order.get(f.kind, len(order)))


@dataclass
class Report:
    """Every result of one ``check()`` call or one pytest session."""

    results: list[Result] = field(default_factory=list)
    #: The run's totals (items, rows, wall_s, checks_s), as written.
    session: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return not any(r.failed for r in self.results)

    @property
    def failures(self) -> list[Result]:
        return [r for r in self.results if r.failed]

    def by_backend(self) -> dict[str, Result]:
        return {r.backend if r.device == "cpu" else f"{r.backend}-{r.device}": r for r in self.results}

    def to_dict(self, environment: dict[str, Any] | None = None) -> dict[str, Any]:
        data = {
            "version": REPORT_VERSION,
            "environment": environment if environment is not None else collect_environment(),
            "results": [r.to_dict() for r in self.results],
        }
        if self.session is not None:
            data["session"] = dict(self.session)
        return data

    def to_json(self, environment: dict[str, Any] | None = None) -> str:
        return json.dumps(self.to_dict(environment), indent=2, default=_json_default)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        return cls([Result.from_dict(r) for r in data.get("results", [])], session=data.get("session"))

    def __str__(self) -> str:
        return "\n".join(summary_lines(self.results))


def _json_default(value: object) -> float | str:
    if isinstance(value, float):
        return value
    return str(value)


def collect_environment(devices: list[str] | None = None) -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "torch": package_version("torch"),
        "onnx": package_version("onnx"),
        "onnxruntime": package_version("onnxruntime"),
        "onnxscript": package_version("onnxscript"),
        "platform": platform.platform(),
        "devices": devices or ["cpu"],
    }
