"""Ordinary call shapes, each exported the way a user would do it for that exporter.

A dict or a list as the only argument, ``*args``, keyword-only arguments and ``None``
arguments are how real models are called; a clean model called so must pass on every
backend, and where an exporter genuinely cannot take the shape (TorchScript and an
un-annotated dict) the row says so honestly.
"""

import pytest
import torch
from torch import Tensor, nn

from pytest_torchexport import check
from pytest_torchexport.errors import ExportMismatch

BACKENDS = ["trace", "script", "onnx", "export", "onnx-legacy"]


class DictIn(nn.Module):
    def forward(self, data: dict[str, Tensor]) -> Tensor:
        return data["x"] * 2 + data["bias"]


class DictUnannotated(nn.Module):
    def forward(self, data):
        return data["x"] * 2 + data["bias"]


class ListIn(nn.Module):
    def forward(self, xs: list[Tensor]) -> Tensor:
        return xs[0] * 2 + xs[1]


class TupleIn(nn.Module):
    def forward(self, xs: tuple[Tensor, Tensor]) -> Tensor:
        return xs[0] * 2 + xs[1]


class VarArgs(nn.Module):
    def forward(self, *xs):
        return xs[0] * 2 + xs[1]


class KeywordScalar(nn.Module):
    def forward(self, x: Tensor, *, scale: float = 1.0) -> Tensor:
        return x * scale


class KeywordTensor(nn.Module):
    def forward(self, x: Tensor, *, mask: Tensor) -> Tensor:
        return x.masked_fill(mask, 0.0)


class OptionalMask(nn.Module):
    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if mask is None:
            return x * 2
        return x.masked_fill(mask, 0.0)


def _x(*shape):
    return torch.randn(*shape)


# name -> (module, args, kwargs)
SHAPES = {
    "dict": lambda: (DictIn(), ({"x": _x(3, 4), "bias": _x(3, 4)},), None),
    "dict-unannotated": lambda: (DictUnannotated(), ({"x": _x(3, 4), "bias": _x(3, 4)},), None),
    "list": lambda: (ListIn(), ([_x(3, 4), _x(3, 4)],), None),
    "tuple": lambda: (TupleIn(), ((_x(3, 4), _x(3, 4)),), None),
    "varargs": lambda: (VarArgs(), (_x(3, 4), _x(3, 4)), None),
    "kwonly-scalar": lambda: (KeywordScalar(), (_x(3, 4),), {"scale": 2.0}),
    "kwonly-tensor": lambda: (KeywordTensor(), (_x(3, 4),), {"mask": torch.rand(3, 4) > 0.5}),
    "none-positional": lambda: (OptionalMask(), (_x(3, 4), None), None),
    "none-omitted": lambda: (OptionalMask(), (_x(3, 4),), None),
}

# (shape, backend) -> (status, phrase in the message): the exporters' real limits.
LIMITS = {
    # TorchScript types an un-annotated parameter as Tensor; data["x"] does not compile.
    ("dict-unannotated", "script"): ("export_error", "`data: Dict[str, Tensor]`"),
    ("varargs", "script"): ("export_error", "can't take variable number of arguments"),
    ("kwonly-scalar", "script"): ("export_error", "keyword-only arguments with defaults"),
}


def _check(module, args, kwargs, backend):
    # Inline: a forked child per check would double these tests' time. The standalone
    # load stays on: a fresh loader gets no input plan, and must still take the call.
    try:
        report = check(module.eval(), args, kwargs, backends=[backend], examples=3, isolation="inline")
    except ExportMismatch as exc:
        report = exc.report
    return report.results[0]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", list(SHAPES))
def test_call_shape(shape, backend):
    module, args, kwargs = SHAPES[shape]()
    result = _check(module, args, kwargs, backend)
    status, phrase = LIMITS.get((shape, backend), ("pass", ""))
    assert result.status == status, result.message
    assert phrase in result.message


class ListUnannotated(nn.Module):
    def forward(self, xs):
        return xs[0] * 2 + xs[1]


class OptionalUnannotated(nn.Module):
    def forward(self, x, mask=None):
        if mask is None:
            return x * 2
        return x.masked_fill(mask, 0.0)


@pytest.mark.parametrize(
    "module, args, phrase",
    [
        # Compiles (xs[0] indexes a Tensor), but the scripted forward refuses a list.
        (ListUnannotated(), ([_x(3, 4), _x(3, 4)],), "`xs: List[Tensor]`"),
        (OptionalUnannotated(), (_x(3, 4), None), "passes None"),
        # Compiles, runs, and then torch.jit.save fails on the Tensor-typed None default.
        (OptionalUnannotated(), (_x(3, 4),), "`mask: Optional[Tensor] = None`"),
    ],
    ids=["list", "none-positional", "none-omitted"],
)
def test_script_names_the_annotation_an_untyped_parameter_needs(module, args, phrase):
    result = _check(module, args, None, "script")
    assert result.status == "export_error", result.message
    assert phrase in result.message
    assert "without a type annotation" in result.message


class DictGate(nn.Module):
    """Genuinely defective for export: the branch depends on a value inside the dict."""

    def forward(self, data: dict[str, Tensor]) -> Tensor:
        if data["x"].sum() > 0:
            return data["x"] * 2 + data["bias"]
        return data["x"] - data["bias"]


GATE_VERDICTS = {
    "trace": ("mismatch", "frozen_branch"),
    "onnx-legacy": ("mismatch", "frozen_branch"),
    "onnx": ("export_error", "data_dependent_branch"),
    "export": ("export_error", "data_dependent_branch"),
    "script": ("pass", None),  # script compiles the branch
}


@pytest.mark.parametrize("backend", list(GATE_VERDICTS))
def test_a_defect_behind_a_dict_argument_is_still_caught(backend):
    result = _check(DictGate(), ({"x": torch.ones(3, 4), "bias": _x(3, 4)},), None, backend)
    status, kind = GATE_VERDICTS[backend]
    assert result.status == status, result.message
    if kind:
        finding = next(f for f in result.findings if f.kind == kind)
        assert "test_recording_call_shapes.py" in finding.detail and 'data["x"].sum() > 0' in finding.detail


class StarArgsAndKeywords(nn.Module):
    def forward(self, *xs, **options):
        return xs[0] * options["scale"]


class OptionalRest(nn.Module):
    def forward(self, x, *rest):
        for t in rest:
            x = x + t
        return x * 2


@pytest.mark.parametrize("backend", ["trace", "onnx", "export", "onnx-legacy"])
@pytest.mark.parametrize(
    "module, args, kwargs",
    [
        (StarArgsAndKeywords(), (_x(3, 4),), {"scale": _x(3, 4)}),
        (OptionalRest(), (_x(3, 4),), None),  # *rest empty: no input at all to torch.export
    ],
    ids=["args-and-kwargs", "empty-rest"],
)
def test_star_args_edge_cases(module, args, kwargs, backend):
    result = _check(module, args, kwargs, backend)
    assert result.status == "pass", result.message
