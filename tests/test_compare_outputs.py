"""Comparison: id paths, structure before values, tolerances, NaN, messages, compare=."""

import collections
import dataclasses
import math

import pytest
import torch
from models import MLP

from pytest_torchexport import check
from pytest_torchexport.reference.compare import compare, flatten, tolerances_for


def test_nested_outputs_flatten_with_torch_testing_style_paths():
    Out = collections.namedtuple("Out", "a b")

    @dataclasses.dataclass
    class ModelOutput:
        logits: torch.Tensor
        hidden: tuple

    value = {
        "logits": (torch.zeros(1), [torch.ones(1)]),
        "nt": Out(torch.zeros(1), None),
        "dc": ModelOutput(torch.ones(2), (torch.zeros(1),)),
    }
    paths = [p for p, _ in flatten(value)[0]]
    assert paths == [
        "['logits'][0]",
        "['logits'][1][0]",
        "['nt'].a",
        "['nt'].b",
        "['dc']['logits']",
        "['dc']['hidden'][0]",
    ]


def test_none_leaves_do_not_count():
    assert compare({"a": torch.ones(1), "hidden": None}, [torch.ones(1)]).ok


def test_mismatch_message_has_counts_greatest_errors_index_path_and_remedy():
    expected = {"logits": (torch.tensor([[1.0, 2.0], [3.0, 4.0]]),)}
    actual = {"logits": (torch.tensor([[1.0, 2.5], [3.0, 4.0]]),)}
    cmp = compare(expected, actual)
    assert not cmp.ok
    text = "\n".join(cmp.lines())
    assert "output ['logits'][0]: float32[2, 2]" in text
    assert "Mismatched elements: 1 / 4 (25.0%)" in text
    assert "Greatest absolute difference: 0.5 at index (0, 1) (up to 1e-05 allowed)" in text
    assert "Greatest relative difference: 0.25 at index (0, 1) (up to 1.3e-06 allowed)" in text
    d = cmp.diffs[0]
    # The smallest tolerances that would have passed: exactly enough, not more.
    assert math.isclose(d.needed_atol, 0.5 - 1.3e-6 * 2.0, rel_tol=1e-6)
    assert math.isclose(d.needed_rtol, (0.5 - 1e-5) / 2.0, rel_tol=1e-6)
    assert compare(expected, actual, atol=d.needed_atol * 1.0001).ok
    assert compare(expected, actual, rtol=d.needed_rtol * 1.0001).ok


def test_nan_in_the_same_places_is_equal_and_elsewhere_is_not():
    e = torch.tensor([1.0, math.nan, math.inf])
    assert compare(e, e.clone()).ok
    cmp = compare(e, torch.tensor([math.nan, math.nan, math.inf]))
    assert not cmp.ok and cmp.diffs[0].mismatched == 1


def test_structure_shape_and_dtype_are_checked_before_values():
    assert compare((torch.zeros(2),), (torch.zeros(2), torch.zeros(2))).problem.startswith(
        "Output structure differs: eager returns 1 leaves"
    )
    assert compare({"a": torch.zeros(2)}, {"a": torch.zeros(3)}).problem == "output ['a']: shape [3] != eager's [2]"
    assert (
        compare({"a": torch.zeros(2)}, {"a": torch.zeros(2, dtype=torch.float64)}).problem
        == "output ['a']: dtype float64 != eager's float32"
    )


def test_flat_artifact_outputs_compare_against_eager_structure():
    # onnxruntime returns a flat list; eager a dict: leaves pair up by position.
    assert compare({"a": torch.ones(2), "b": (torch.zeros(1),)}, [torch.ones(2), torch.zeros(1)]).ok


def test_integer_and_bool_outputs_are_exact():
    assert not compare(torch.tensor([1, 2]), torch.tensor([1, 3])).ok
    assert not compare(torch.tensor([True]), torch.tensor([False])).ok


def test_relowered_backends_get_looser_float_defaults_and_overrides_win():
    assert tolerances_for(torch.float32, relowered=False, rtol=None, atol=None) == (1.3e-6, 1e-5)
    assert tolerances_for(torch.float32, relowered=True, rtol=None, atol=None) == (1e-3, 1e-4)
    assert tolerances_for(torch.float32, relowered=True, rtol=0.5, atol=None) == (0.5, 1e-4)
    assert tolerances_for(torch.int64, relowered=True, rtol=0.5, atol=0.5) == (0.0, 0.0)
    e, a = torch.tensor([1.0]), torch.tensor([1.0 + 5e-5])
    assert not compare(e, a).ok
    assert compare(e, a, relowered=True).ok


def test_compare_callable_replaces_the_value_comparison():
    seen = []

    def as_sets(expected, actual):
        seen.append((expected, actual))
        assert sorted(expected.tolist()) == sorted(actual.tolist()), "different sets of boxes"

    assert compare(torch.tensor([1.0, 2.0]), torch.tensor([2.0, 1.0]), compare_fn=as_sets).ok
    cmp = compare(torch.tensor([1.0, 2.0]), torch.tensor([2.0, 3.0]), compare_fn=as_sets)
    assert not cmp.ok and cmp.lines()[:2] == ["compare= rejected the outputs:", "different sets of boxes"]
    assert len(seen) == 2


def test_compare_option_reaches_check_and_its_failure_is_a_mismatch():
    def never(expected, actual):
        raise AssertionError("boxes differ beyond reordering")

    from pytest_torchexport import ExportMismatch

    with pytest.raises(ExportMismatch) as info:
        check(MLP().eval(), (torch.randn(2, 8),), backends=["trace"], examples=3, compare=never)
    result = info.value.report.results[0]
    assert result.status == "mismatch"
    assert "compare= rejected the outputs:\nboxes differ beyond reordering" in result.message


def test_per_backend_tolerance_override_through_check():
    class Off(torch.nn.Module):  # trace is exact, so inject an error through compare's eyes
        def forward(self, x):
            return x * 1.0

    report = check(
        Off().eval(),
        (torch.randn(2, 3),),
        backends=["trace", "onnx-legacy"],
        examples=3,
        rtol={"onnx-legacy": 0.5},
        atol={"trace": 0.25},
    )
    rows = report.by_backend()
    assert (rows["onnx-legacy"].rtol, rows["onnx-legacy"].atol) == (0.5, 1e-4)
    assert (rows["trace"].rtol, rows["trace"].atol) == (1.3e-6, 0.25)


def test_chunked_statistics_equal_whole_tensor_ones(monkeypatch):
    # chunks of 4M elements on real outputs; 7 here, so 300 elements
    # span many chunks, and the greatest error sits in a late one.
    import pytest_torchexport.reference.compare as cmp_mod

    torch.manual_seed(0)
    e = torch.randn(3, 100)
    a = e + torch.randn(3, 100) * 1e-3
    a[2, 97] = math.nan
    a[1, 50] += 5.0
    whole = compare(e, a).diffs[0]
    monkeypatch.setattr(cmp_mod, "CHUNK", 7)
    chunked = compare(e, a).diffs[0]
    assert dataclasses.asdict(chunked) == dataclasses.asdict(whole)
    assert chunked.abs_index == (2, 97) and chunked.one_sided_nonfinite == 1
    assert chunked.max_abs == math.inf
    # Statistics stay in the output's dtype: a float32 mismatch needs no float64 copy.
    assert chunked.needed_rtol == whole.needed_rtol


def test_quantiles_on_a_sample_are_close_to_exact_ones(monkeypatch):
    import pytest_torchexport.reference.compare as cmp_mod

    torch.manual_seed(0)
    e = torch.randn(200_000)
    a = e + torch.rand(200_000)  # errors uniform in [0, 1): p50 0.5, p99 0.99
    exact = compare(e, a).diffs[0]
    monkeypatch.setattr(cmp_mod, "SAMPLE", 20_000)
    sampled = compare(e, a).diffs[0]
    assert abs(exact.p50 - 0.5) < 0.01 and abs(sampled.p50 - exact.p50) < 0.02
    assert abs(sampled.p99 - exact.p99) < 0.01
    # Everything else is exact, not sampled.
    assert (sampled.max_abs, sampled.mismatched, sampled.needed_atol) == (
        exact.max_abs,
        exact.mismatched,
        exact.needed_atol,
    )


def test_noise_statistics_in_chunks_equal_whole_ones(monkeypatch):
    import pytest_torchexport.reference.noise as noise_mod

    torch.manual_seed(0)
    r = torch.randn(1000, dtype=torch.float64)
    e, a = r.float(), (r + 1e-6 * torch.randn(1000, dtype=torch.float64)).float()
    whole = noise_mod.leaf_noise("", e, a, r)
    monkeypatch.setattr(noise_mod, "CHUNK", 33)
    chunked = noise_mod.leaf_noise("", e, a, r)
    for field_ in ("artifact_rmse", "eager_rmse", "artifact_max", "eager_max", "rmse_bound", "max_bound"):
        assert math.isclose(getattr(chunked, field_), getattr(whole, field_), rel_tol=1e-12)
    exact_rmse = float(((a.double() - r) ** 2).mean().sqrt())
    assert math.isclose(whole.artifact_rmse, exact_rmse, rel_tol=1e-12)
    assert not chunked.rounding  # 1e-6 noise on N(0, 1) is ~20x eager's float32 rounding


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_one_pass_statistics_equal_the_exact_ones(monkeypatch, dtype):
    # A chunk where every element matches is judged in a few cached operations,
    # a chunk with a NaN, inf or mismatch by the exact path: on every kind of chunk, the
    # numbers (and so the message) are those of the exact path alone.
    import pytest_torchexport.reference.compare as cmp_mod

    gen = torch.Generator().manual_seed(0)
    cases = []
    for i in range(120):
        e = torch.randn(64, generator=gen, dtype=torch.float64) * 10.0 ** (i % 9 - 6)
        a = e + torch.randn(64, generator=gen, dtype=torch.float64) * 10.0 ** (i % 7 - 9)
        e, a = e.to(dtype), a.to(dtype)
        if i % 5 == 1:
            e[::5], a[::7] = 0, 0  # 0/0 and x/0 relative errors
        if i % 5 == 2:
            a[i % 64], e[3], a[3] = math.nan, math.inf, math.inf
        if i % 5 == 3:
            rtol, atol = tolerances_for(dtype, False, None, None)
            a = e + (atol + (rtol * e).abs())  # on the boundary
        if i % 5 == 4:
            a = e.clone()
            a[i % 64] += 1.0
        cases.append((e, a))
    monkeypatch.setattr(cmp_mod, "CHUNK", 16)
    fast = [compare(e, a, relowered=bool(i % 2)) for i, (e, a) in enumerate(cases)]
    monkeypatch.setattr(cmp_mod, "_FAST_DTYPES", ())
    exact = [compare(e, a, relowered=bool(i % 2)) for i, (e, a) in enumerate(cases)]
    assert sum(c.ok for c in exact) not in (0, len(cases))  # both verdicts occur
    for f, x in zip(fast, exact):
        assert (f.ok, repr((f.max_abs, f.max_rel))) == (x.ok, repr((x.max_abs, x.max_rel)))
        assert repr([dataclasses.asdict(d) for d in f.diffs]) == repr([dataclasses.asdict(d) for d in x.diffs])


def test_compared_counts_elements_per_leaf_kind():
    # values count one element each; None leaves are skipped with
    # their reason; a structural difference compares no value; compare= gets every leaf.
    expected = {"logits": torch.zeros(2, 3), "n": 4, "hidden": None, "empty": torch.zeros(2, 0)}
    cmp = compare(expected, {"logits": torch.zeros(2, 3), "n": 4, "hidden": None, "empty": torch.zeros(2, 0)})
    assert cmp.ok and cmp.compared.as_dict() == {
        "elements": 7,
        "of": 7,
        "inputs": 1,
        "leaves": {"tensors": 2, "values": 1, "skipped": {"None": 1}},
    }
    wrong_shape = compare(expected, {"logits": torch.zeros(3, 3), "n": 4, "hidden": None, "empty": torch.zeros(2, 0)})
    assert not wrong_shape.ok and (wrong_shape.compared.elements, wrong_shape.compared.of) == (0, 7)
    custom = compare(expected, expected, compare_fn=lambda e, a: None)
    assert custom.compared.leaves == {"compare=": 3, "skipped": {"None": 1}} and custom.compared.elements == 7
