"""Outputs pytree does not flatten are compared by value: transformers' caches, user classes.

transformers' ``DynamicCache`` and ``EncoderDecoderCache`` have no ``==`` and are not pytree
nodes, so a comparison by ``!=`` compared them by identity: two bitwise-equal eager runs of
GPT-2 "disagreed with themselves" and every cached call was a false ``nondeterministic``.
The unit tests read ``reference/compare.py`` directly; the pytester runs check real tiny
models built from config (random weights, never the hub) end to end. Every test that needs
transformers carries the ``transformers`` marker: it skips without it, and fails where
``TORCHEXPORT_REQUIRE_MARKS`` names it (conftest.py).
"""

from __future__ import annotations

import textwrap

import pytest
import torch
from helpers import by_test_and_backend, run_with_report, trace_refuses_transformers_masks

from pytest_torchexport.reference.compare import compare, equal_trees, flatten


class Holder:
    """A user's output class: no ``==``, not a pytree node, tensors in its attributes."""

    def __init__(self, x: torch.Tensor, step: int) -> None:
        self.x = x
        self.step = step


class Opaque:
    """Holds nothing a comparison can read."""

    __slots__ = ()


def test_a_user_class_is_compared_by_what_it_holds_never_by_identity():
    a, b = Holder(torch.ones(3), 1), Holder(torch.ones(3), 1)
    assert a != b  # identity: what the comparison used to go by
    assert equal_trees({"h": a}, {"h": b})
    assert compare({"h": a}, {"h": b}).ok
    assert [p for p, _ in flatten({"h": a})[0]] == ["['h'].x", "['h'].step"]
    b.x[1] = 2.0
    differs = compare({"h": a}, {"h": b})
    assert not differs.ok and not equal_trees({"h": a}, {"h": b})
    assert differs.lines()[0] == "output ['h'].x: float32[3]"
    # A value held beside the tensors is compared by value too.
    stepped = compare(Holder(torch.ones(3), 1), Holder(torch.ones(3), 2))
    assert not stepped.ok and stepped.problem == "output .step: eager returns 1, the artifact 2"


def test_an_output_nothing_reads_is_named_and_left_out_of_the_verdict():
    outputs = {"y": torch.ones(2), "o": Opaque()}
    verdict = compare(outputs, {"y": torch.ones(2), "o": Opaque()})
    assert verdict.ok
    assert verdict.compared.as_dict() == {
        "elements": 2,
        "of": 2,
        "inputs": 1,
        "leaves": {"tensors": 1, "skipped": {"['o'] (Opaque: it holds no tensor or value and defines no ==)": 1}},
    }
    assert equal_trees(outputs, {"y": torch.ones(2), "o": Opaque()})  # not a sign of nondeterminism


@pytest.mark.transformers
def test_two_caches_are_compared_by_value_with_the_attribute_in_the_id_path():
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(
        n_layer=2, n_embd=16, n_head=2, vocab_size=50, n_positions=32, bos_token_id=0, eos_token_id=0
    )
    model = transformers.GPT2Model(config).eval()
    ids = torch.randint(0, 50, (2, 5))
    with torch.no_grad():
        first, second = model(input_ids=ids), model(input_ids=ids)
    name = "cache" if "cache" in first else "past_key_values"  # the field's name from transformers 5.24 on
    assert first[name] is not second[name]
    assert equal_trees(first, second) and compare(first, second).ok
    paths = [p for p, _ in flatten(first)[0]]
    assert f"['{name}'].layers[1].values" in paths
    second[name].layers[1].values[0, 0, 0, 0] += 1.0
    differs = compare(first, second)
    assert not differs.ok and not equal_trees(first, second)
    assert differs.lines()[:2] == [
        f"output ['{name}'].layers[1].values: float32[2, 2, 5, 8]",
        "  Mismatched elements: 1 / 160 (0.6%)",
    ]


# One session of real exports on tiny models built from config, read by the tests below.
MODELS = textwrap.dedent(
    """
    import pytest
    import torch
    import transformers

    CONFIG = dict(vocab_size=64)


    @pytest.mark.torchexport(backends=["trace", "export"])
    def test_gpt2_with_its_cache():
        torch.manual_seed(0)
        config = transformers.GPT2Config(n_layer=2, n_embd=16, n_head=2, n_positions=32, bos_token_id=0,
                                         eos_token_id=0, **CONFIG)
        model = transformers.GPT2Model(config).eval()
        out = model(input_ids=torch.randint(0, 64, (2, 6)), attention_mask=torch.ones(2, 6, dtype=torch.long))
        assert out.past_key_values is not None  # use_cache is on: the output holds a DynamicCache


    @pytest.mark.torchexport(backends=["trace", "export"])
    def test_t5_encoder_decoder():
        torch.manual_seed(0)
        config = transformers.T5Config(d_model=16, d_ff=32, d_kv=8, num_layers=1, num_heads=2,
                                       decoder_start_token_id=0, **CONFIG)
        model = transformers.T5Model(config).eval()
        out = model(input_ids=torch.randint(0, 64, (2, 6)), decoder_input_ids=torch.randint(0, 64, (2, 3)))
        assert out.past_key_values is not None  # an EncoderDecoderCache


    @pytest.mark.torchexport(backends=["trace", "export"])
    def test_bert():
        torch.manual_seed(0)
        config = transformers.BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                         intermediate_size=32, max_position_embeddings=32, **CONFIG)
        model = transformers.BertModel(config).eval()
        model(input_ids=torch.randint(0, 64, (2, 6)))
    """
)


_RUNS: dict[str, dict] = {}


@pytest.fixture
def rows(tester):
    """The rows of one session of MODELS, run once in this process (real exports: tens of seconds)."""
    pytest.importorskip("transformers")
    if "models" not in _RUNS:
        tester.makepyfile(test_m=MODELS)
        result, _RUNS["models"] = run_with_report(
            tester, "-p", "no:cacheprovider", key=by_test_and_backend, subprocess=True
        )
        assert result.ret in (0, 1), result.stdout.str()[-2000:]  # verdicts, never an internal error
    return _RUNS["models"]


@pytest.mark.transformers
def test_deterministic_models_with_caches_are_never_nondeterministic(rows):
    statuses = {key: row["status"] for key, row in rows.items()}
    assert len(statuses) == 6
    assert "nondeterministic" not in statuses.values(), statuses
    # Each row is a verdict on the export (by hand, trace and torch.export refuse a cache output
    # this transformers returns unregistered), never a skip for want of one.
    assert "skipped" not in statuses.values(), statuses
    assert statuses["test_bert", "trace"] == ("export_error" if trace_refuses_transformers_masks() else "pass")
    # No copy of a cached model is taken for another module: identity is never a difference.
    for row in rows.values():
        assert not [f for f in row["findings"] if f["kind"] in ("reference_copy", "not_compared")], row["findings"]
