"""Inputs from the data's own range, exports run as users run them, the plugin's assumptions checked."""

import functools

import pytest
import torch
from helpers import checked, kinds, run_with_report
from torch import nn

EX = 6

# isolation="inline" where a test watches forward's calls: in a check's child they are not seen here.
results = functools.partial(checked, eval_mode=True, examples=EX)


class VarKeywords(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x, **kwargs):
        return self.lin(x) * kwargs["mask"].float()


class ManyKeywords(nn.Module):
    """HF-style: keyword-only callers, and a parameter list the legacy exporter fills by position."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x, scale=None, use_cache=False, mask=None):
        return self.lin(x) * mask.float()


class ServedUnderNoGrad(nn.Module):
    """Refuses grad mode, as code paths that only exist for inference do (T5's ONNX export)."""

    def forward(self, x):
        if torch.is_grad_enabled():
            raise RuntimeError("this module is exported for inference only")
        return x * 2


def test_var_keyword_forward_exports_with_dynamic_shapes():
    mask = torch.ones(3, 4, dtype=torch.bool)
    r = results(VarKeywords(), (torch.randn(3, 4),), ["export", "onnx", "onnx-legacy"], kwargs={"mask": mask})
    assert {n: x.status for n, x in r.items()} == {"export": "pass", "onnx": "pass", "onnx-legacy": "pass"}, {
        n: x.message for n, x in r.items()
    }


def test_legacy_onnx_of_a_keyword_call_goes_through_a_positional_adapter():
    kwargs = {"x": torch.randn(3, 4), "mask": torch.ones(3, 4, dtype=torch.bool)}
    r = results(ManyKeywords(), (), ["onnx-legacy"], kwargs=kwargs, roundtrip=True)["onnx-legacy"]
    assert r.status == "pass", r.message


def test_legacy_onnx_inputs_keep_the_keyword_names():
    import onnx

    from pytest_torchexport._compat import quiet_torch
    from pytest_torchexport.backends.base import ExportContext
    from pytest_torchexport.backends.onnx import LegacyOnnxBackend
    from pytest_torchexport.inputs.specs import plan_inputs

    module = ManyKeywords().eval()
    kwargs = {"x": torch.randn(3, 4), "mask": torch.ones(3, 4, dtype=torch.bool)}
    plan = plan_inputs(module, (), kwargs)
    with quiet_torch():
        artifact = LegacyOnnxBackend().export(module, (), kwargs, ExportContext(device="cpu", plan=plan, module=module))
    names = [i.name for i in onnx.load_from_string(artifact.program).graph.input]
    assert names == ["x", "mask"]


def test_every_exporter_runs_under_no_grad():
    r = results(ServedUnderNoGrad(), (torch.randn(2, 3),), ["trace", "export", "onnx", "onnx-legacy"])
    assert {n: x.status for n, x in r.items()} == dict.fromkeys(r, "pass"), {n: x.message for n, x in r.items()}


def _seen_by(module_cls, args, **options):
    seen = []

    class Recording(module_cls):
        def forward(self, x):
            seen.append(x.detach().clone())
            return x.float() * 1.0

    r = results(Recording(), args, ["trace"], **{"examples": 25, **options}, isolation="inline")["trace"]
    assert r.status == "pass", r.message
    return seen


def test_values_stay_at_the_example_scale_unless_special_values():
    x = torch.randn(4, 8)
    scale = float(x.std())

    def far(seen):  # the largest ordinary magnitude drawn (special values' inf and 3e38 aside)
        ordinary = [t.abs()[t.abs() < 1e30] for t in seen]  # a probe filled with NaN or inf has none
        return max(float(o.max()) for o in ordinary if o.numel()) / scale

    assert far(_seen_by(nn.Module, (x,), seed=1)) < 20
    assert far(_seen_by(nn.Module, (x,), seed=1, special_values=True, examples=60)) > 20


def test_integer_inputs_keep_the_recorded_value_range():
    image = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    for t in _seen_by(nn.Module, (image,), seed=1):
        assert t.dtype == torch.uint8
        assert int(t.min()) >= int(image.min()) and int(t.max()) <= int(image.max())


def test_a_failure_only_far_from_the_example_scale_says_so():
    x = torch.randn(4, 8)
    limit = 20 * float(x.std())

    def ill_conditioned(expected, actual):
        # Stands in for a model that loses precision on large inputs: big but finite
        # outputs differ; NaN, inf and 3e38 from special_values are not its concern.
        peak = float(expected.abs().max())
        if limit < peak < 1e6:
            raise AssertionError(f"differs at peak {peak:g}")

    r = results(nn.Identity(), (x,), ["trace"], special_values=True, compare=ill_conditioned, examples=40, seed=3)
    trace = r["trace"]
    assert trace.status == "mismatch", trace.message
    assert "fails only at inputs ~100x the example's scale" in trace.message


CI_TEST = """
import pytest
import torch
from torch import nn


class Baked(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 3)

    def forward(self, x):
        return self.lin(x).reshape(int(x.shape[0]), 3)


@pytest.mark.torchexport(backends=["trace"])
def test_baked():
    Baked().eval()(torch.randn(4, 8))


@pytest.mark.torchexport(backends=["onnx"])
def test_linear():
    nn.Linear(8, 3).eval()(torch.randn(4, 8))
"""


def _verdicts(tester, name):
    _, rows = run_with_report(tester, name=name, key=None)
    keep = ("backend", "status", "examples", "max_abs_err", "failing_example")
    return [{k: row.get(k) for k in keep} for row in rows]


def test_ci_runs_give_identical_verdicts_and_failing_examples(tester, monkeypatch):
    tester.makepyfile(test_ci=CI_TEST)
    monkeypatch.setenv("CI", "true")
    first, second = _verdicts(tester, "one.json"), _verdicts(tester, "two.json")
    assert [r["status"] for r in first] == ["run_error", "pass"]
    assert first == second


def test_the_search_is_derandomized_only_in_ci(monkeypatch):
    x = torch.randn(4, 8)

    def drawn():
        return [(tuple(t.shape), round(float(t.sum()), 4)) for t in _seen_by(nn.Module, (x,))]

    monkeypatch.setenv("CI", "true")
    assert drawn() == drawn()
    monkeypatch.delenv("CI")
    # The suite itself may run in CI (GITHUB_ACTIONS, ...): act as a developer's machine.
    monkeypatch.setattr("pytest_torchexport.stages.shared_search.is_in_ci", lambda: False)
    assert drawn() != drawn()


def test_padding_masks_are_drawn_as_padding():
    mask = torch.ones(2, 7, dtype=torch.int64)
    mask[0, -2:] = 0  # right padding, as a tokenizer makes it
    seen = _seen_by(nn.Module, (mask,), seed=2)
    for t in seen:
        assert t.dtype == torch.int64 and set(t.unique().tolist()) <= {0, 1}
        rows = t.reshape(-1, t.shape[-1])
        assert bool((rows[:, 0] == 1).all()) and bool((rows[:, 1:] <= rows[:, :-1]).all()), t


class AddsBuffer(nn.Module):
    """dim 0 is not a batch: the input is added to a fixed-size buffer (size 1 only broadcasts)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("offset", torch.randn(3, 4))

    def forward(self, x):
        return x + self.offset


def test_an_assumed_batch_dim_that_eager_rejects_is_held_fixed():
    r = results(AddsBuffer(), (torch.randn(3, 4),), ["trace", "export", "onnx"])
    for name, result in r.items():
        assert result.status == "pass", (name, result.message)
        finding = next(f for f in result.findings if f.kind == "assumed_dim")
        assert "eager rejects sizes 4 and 5" in finding.detail and "held at the example's size 3" in finding.detail


def test_a_declared_batch_dim_stays_strict():
    r = results(AddsBuffer(), (torch.randn(3, 4),), ["trace"], dims={"batch": (1, 8)})["trace"]
    assert "assumed_dim" not in kinds(r)
    assert r.status == "skipped" or r.extra["rejected_examples"] > 0


def test_the_export_at_the_recorded_size_1_is_checked_too():
    r = results(nn.Linear(4, 3), (torch.randn(1, 4),), ["export", "trace"])
    assert r["export"].status == "pass", r["export"].message
    finding = next(f for f in r["export"].findings if f.kind == "specialized_dim")
    assert "exported at the recorded size batch=1" in finding.detail
    # the exporter's reason, not the "..." that ends a trimmed message (timm's models read "fails (...)")
    assert "fails (...)" not in finding.detail and "specialized it to be a constant (1)" in finding.detail
    assert "specialized_dim" not in kinds(r["trace"])  # trace does not specialize small dims


@pytest.mark.parametrize(
    "example, is_mask",
    [
        (torch.tensor([[1, 1, 0], [1, 0, 0]]), True),  # an attention mask
        (torch.tensor([[1.0, 0.0], [0.0, 1.0]]), True),  # a float one: drawn as a mask too
        (torch.tensor([[1, 1], [1, 1]]), False),  # one value only
        (torch.tensor([[0, 1], [2, 1]]), False),  # token ids
        (torch.tensor([[0.0, 1.0], [0.5, 1.0]]), False),  # min 0, max 1, but not only those
        (torch.tensor([[0.0, float("nan")], [1.0, 1.0]]), False),
        (torch.randn(2000, 1000), False),  # decided by one min/max pass, no sort
    ],
)
def test_a_recorded_zero_one_tensor_is_a_mask_and_nothing_else_is(example, is_mask):
    from pytest_torchexport.inputs.specs import LeafPlan
    from pytest_torchexport.inputs.strategies import _int_mask

    leaf = LeafPlan("x", "x", tuple(example.shape), example.dtype, None, None, example)
    assert _int_mask(leaf) is is_mask
    values = example.unique()  # the definition: exactly {0, 1}
    assert is_mask == (values.numel() == 2 and bool((values == torch.arange(2, dtype=values.dtype)).all()))


def test_an_additive_float_mask_is_drawn_as_a_mask_of_its_two_values():
    # transformers' own test_custom_4d_attention_mask (T5) passes a [1, 1, 6, 6] float mask of 0 and the
    # dtype's minimum; drawn as an ordinary float, its values left float32's range (36 of 36 non-finite)
    # and every query attended to no key, a failure of the plugin's own making
    minimum = torch.finfo(torch.float32).min
    mask = torch.tril(torch.ones(6, 6)).eq(0).float().mul(minimum)[None, None].repeat(2, 1, 1, 1)
    seen = []

    class Attends(nn.Module):
        def forward(self, scores, attention_mask):
            seen.append(attention_mask.detach().clone())
            return (scores + attention_mask).softmax(-1)

    row = checked(Attends(), (torch.randn(2, 1, 6, 6), mask), ["trace"], examples=25, isolation="inline")["trace"]
    assert row.status == "pass", row.message
    assert len(seen) > 10
    for t in seen:
        assert bool(((t == 0) | (t == minimum)).all()), t
        assert bool((t == 0).any(-1).all()), t  # every query keeps a key
