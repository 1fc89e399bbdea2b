"""Each kind of call the test makes is checked.

A test that calls its model with and without an argument, or with it in another structure,
gets one row per kind of call on each item, the row's ``call`` naming which; a prefill and a
decode step with a transformers KV cache are "prefill" and "decode"; ``generate`` is checked
through the forward calls it makes, never exported as a method. The transformers tests build
tiny GPT-2 and Llama models from their configs (random weights, no hub).
"""

from __future__ import annotations

import importlib.util
import textwrap

import pytest
from helpers import by_item, report_rows, trace_refuses_transformers_masks

TWO_KINDS = textwrap.dedent(
    """
    import pytest
    import torch
    from torch import nn


    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x, extra=None):
            out = self.lin(x)
            return out if extra is None else out + extra


    class Frozen(nn.Module):
        # exports its first kind of call and fails the other: the extra branch is frozen by trace
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x, extra=None):
            out = self.lin(x)
            if extra is not None and bool(extra.sum() > 0):
                out = out + extra
            return out


    class WithLoss(nn.Module):
        # a training step passes the target; served, the model is called without it
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x, target=None):
            out = self.lin(x)
            if target is None:
                return out
            if not self.training:
                raise RuntimeError("the loss is computed in training only")
            return (out - target).pow(2).mean()


    @pytest.mark.torchexport(backends=["trace", "export"], examples=3)
    def test_two_kinds():
        model = Net().eval()
        model(torch.randn(2, 4))
        model(torch.randn(2, 4), extra=torch.randn(2, 4))
        model(torch.randn(3, 4))  # the first kind again: no third row


    @pytest.mark.torchexport(backends=["trace"], examples=3)
    def test_one_kind_fails():
        model = Frozen().eval()
        model(torch.randn(2, 4))
        model(torch.randn(2, 4), extra=torch.ones(2, 4))


    @pytest.mark.torchexport(backends=["trace"], examples=3)
    def test_training_step_then_served():
        model = WithLoss().train()
        model(torch.randn(2, 4), target=torch.randn(2, 4))
        model.eval()(torch.randn(2, 4))


    @pytest.mark.torchexport(backends=["trace"], examples=3, dynamic={"x": {0: "batch"}, "extra": {0: "batch"}})
    def test_options_fit_the_first_kind():
        model = Net().eval()
        model(torch.randn(2, 4), extra=torch.randn(2, 4))
        model(torch.randn(2, 4))


    @pytest.mark.torchexport(backends=["trace"], examples=3)
    def test_one_kind():
        model = Net().eval()
        for _ in range(3):
            model(torch.randn(2, 4))
    """
)


def test_each_kind_of_call_is_a_row_of_its_item(tester):
    tester.makepyfile(test_kinds=TWO_KINDS)
    result = tester.runpytest("--torchexport-report=out.json", "--torchexport-report=out.md")
    rows: dict[str, list[dict]] = {}
    for row in report_rows(tester, key=None):
        rows.setdefault(by_item(row), []).append(row)

    # Two kinds of call, two rows on each item, in the order of the test's first call of each.
    for item in ("test_two_kinds[torchexport-trace]", "test_two_kinds[torchexport-export]"):
        assert [(r["call"], r["status"]) for r in rows[item]] == [("without extra", "pass"), ("with extra", "pass")]
        assert [r.get("recorded_calls") for r in rows[item]] == [2, None]
        assert "(Net, with extra call)" in rows[item][1]["message"]
    # One kind of call: one row, no "call" key (the row a test with one call always had).
    (plain,) = rows["test_one_kind[torchexport-trace]"]
    assert "call" not in plain and plain["status"] == "pass"
    # The item fails when one kind fails, and pytest's outcome is the report's: the failing
    # kind's message, its header naming the call; the kind that passes keeps its pass row.
    first, second = rows["test_one_kind_fails[torchexport-trace]"]
    assert (first["call"], first["status"]) == ("without extra", "pass")
    assert (second["call"], second["status"]) == ("with extra", "mismatch"), second["message"]
    # A kind that does not replay as served (a training step's call with its target) gives way
    # to the kind that does, as a call that does not replay gives way to the next one.
    (served,) = rows["test_training_step_then_served[torchexport-trace]"]
    assert (served["call"], served["status"]) == ("without target", "pass"), served["message"]
    assert any(
        "'with target' calls of WithLoss raise when replayed in eval mode" in f["detail"]
        and "RuntimeError: the loss is computed in training only), so that kind of call was not checked; "
        "its call #2 of 2 (in eval mode), a 'without target' call, was checked instead"
        in f["detail"]
        for f in served["findings"]
        if f["kind"] == "recorded_call"
    ), served["findings"]
    assert [f["kind"] for f in served["findings"]].count("recorded_call") == 1  # said once, however often read
    # dynamic= names the first kind's inputs: a later kind it does not fit is said, not failed.
    (fit,) = rows["test_options_fit_the_first_kind[torchexport-trace]"]
    assert (fit["call"], fit["status"]) == ("with extra", "pass"), fit["message"]
    assert any(
        "the test's 'without extra' calls of Net were not checked: the marker's options do not fit them "
        "(dynamic= names input 'extra'" in f["detail"]
        for f in fit["findings"]
    ), fit["findings"]
    result.assert_outcomes(passed=5, failed=1)
    result.stdout.re_match_lines([r".*test_one_kind_fails\[torchexport-trace\] - .*"])
    assert "(Frozen, with extra call)" in result.stdout.str()
    # The summary shows the kinds: one line each, named.
    result.stdout.re_match_lines(
        [r"test_two_kinds \(without extra\) +Net +trace +pass.*", r"test_two_kinds \(with extra\) +Net +trace +pass.*"],
        consecutive=False,
    )
    result.stdout.re_match_lines(
        [
            r"torchexport: 4 tests made more than one kind of call, each checked on its own "
            r"row: 8 rows from 5 items \(test_two_kinds: without extra, with extra; .*\)"
        ]
    )
    markdown = (tester.path / "out.md").read_text()
    assert "| `test_kinds.py::test_two_kinds` (with extra) | trace |" in markdown
    assert "### `test_kinds.py::test_one_kind_fails[torchexport-trace]` (with extra)" in markdown


# -- transformers: a KV cache, generate -----------------------------------------------------------

# The transformers session runs in a subprocess: in process, pytester drops the modules an inline
# run imported, and the next test's import registers torch ops twice (77a6dc7).
HAS_TRANSFORMERS = importlib.util.find_spec("transformers") is not None

LLMS = textwrap.dedent(
    """
    import inspect

    import pytest
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    # transformers 5.24 renamed past_key_values to cache (the old name warns until 5.40)
    CACHE = "cache" if "cache" in inspect.signature(GPT2LMHeadModel.forward).parameters else "past_key_values"


    def gpt2():
        config = GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64, n_positions=32,
                            bos_token_id=0, eos_token_id=0)
        return GPT2LMHeadModel(config).eval()


    def llama():
        config = LlamaConfig(num_hidden_layers=1, hidden_size=16, intermediate_size=32, num_attention_heads=2,
                             num_key_value_heads=1, vocab_size=64, max_position_embeddings=32,
                             bos_token_id=0, eos_token_id=0, pad_token_id=0)
        return LlamaForCausalLM(config).eval()


    @pytest.mark.torchexport(backends=["trace", "export"], examples=3)
    def test_prefill_then_decode():
        model = gpt2()
        ids = torch.randint(0, 64, (1, 5))
        out = model(ids, use_cache=True)
        step = model(out.logits[:, -1:].argmax(-1), use_cache=True, **{CACHE: out[CACHE]})
        assert step.logits.shape == (1, 1, 64)


    @pytest.mark.torchexport(backends=["export"], examples=3)
    def test_generate():
        model = llama()
        ids = torch.randint(1, 64, (1, 4))
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=2, do_sample=False)
        assert out.shape == (1, 6)
    """
)


@pytest.mark.transformers
def test_prefill_and_decode_each_checked_and_generate_through_forward(tester):
    if not HAS_TRANSFORMERS:
        pytest.skip("needs transformers (pip install transformers)")
    tester.makepyfile(test_llms=LLMS)
    result = tester.runpytest_subprocess("--torchexport-report=out.json")
    rows: dict[str, list[dict]] = {}
    for row in report_rows(tester, key=None):
        rows.setdefault(by_item(row), []).append(row)

    # A prefill and a decode step: both checked, each with its own inputs (the decode step's
    # recorded cache is its seed: its key/value tensors are inputs the exporter takes), each
    # its true verdict: torch.export takes the DynamicCache and matches eager on both;
    # trace cannot return a DynamicCache, and says so on both.
    export = rows["test_prefill_then_decode[torchexport-export]"]
    assert [(r["call"], r["status"]) for r in export] == [("prefill", "pass"), ("decode", "pass")], [
        r["message"] for r in export
    ]
    assert all(r["examples"] >= 1 for r in export)
    trace = rows["test_prefill_then_decode[torchexport-trace]"]
    assert [(r["call"], r["status"]) for r in trace] == [("prefill", "export_error"), ("decode", "export_error")]
    if trace_refuses_transformers_masks():
        assert all("masking_utils.py" in row["likely_cause"] for row in trace), [r["likely_cause"] for r in trace]
    else:
        # The tracer's refusal of the cache it returns, in words, not its raw error
        assert all(row["likely_cause"].startswith("the outputs hold a KV cache (a DynamicCache at ") for row in trace)
    for row in (*export, *trace):
        assert not any(f["kind"] == "mutates_input" for f in row["findings"]), row["findings"]
        assert not any(f["kind"] == "reference_copy" for f in row["findings"]), row["findings"]
    assert "(GPT2LMHeadModel, decode call)" in result.stdout.str()

    # generate: never exported as a method; the forward calls it made are checked, named.
    generate = rows["test_generate[torchexport-export]"]
    assert [r["call"] for r in generate] == ["prefill", "decode"]
    assert all("method" not in r for r in generate)
    loop = [f["detail"] for f in generate[1]["findings"] if f["kind"] == "recorded_call"]
    assert any("LlamaForCausalLM.generate, a Python loop over forward" in d for d in loop), generate[1]["findings"]
    import transformers

    if transformers.__version__.startswith("4."):
        # 4.x builds the padded mask with vmap: the capture keeps a flat_apply node that torch.export's
        # saver cannot serialize, and the rows say so (the plain prefill above has no mask to build).
        assert [r["status"] for r in generate] == ["export_error", "export_error"], [r["message"] for r in generate]
        assert all("flat_apply" in r["likely_cause"] for r in generate), [r["likely_cause"] for r in generate]
        result.assert_outcomes(passed=1, failed=2)
        return
    assert [r["status"] for r in generate] == ["pass", "pass"], [r["message"] for r in generate]
    result.assert_outcomes(passed=2, failed=1)


def test_kinds_are_told_apart_by_what_carries_tensors_and_named_by_what_differs():
    """The grouping alone (no export): which calls are one kind, and each kind's name."""
    import torch
    from torch import nn

    from pytest_torchexport.recording.calls import Call
    from pytest_torchexport.recording.kinds import group

    class Decoder(nn.Module):
        def forward(self, input_ids, attention_mask=None, past_key_values=None, use_cache=False):
            return input_ids

    model = Decoder()

    def call(*args, **kwargs):
        return Call(model, args, kwargs, live=model)

    ids, mask = torch.zeros(1, 5, dtype=torch.long), torch.ones(1, 5)
    cache = ((torch.zeros(1, 2, 5, 8), torch.zeros(1, 2, 5, 8)),)  # a legacy tuple cache: known by its name
    kinds = group(
        [
            call(ids, use_cache=True),
            call(ids[:, :1], past_key_values=cache, use_cache=True),
            call(ids, None, None, True),  # the prefill again: None and flags carry no tensor
            call(ids[:, :1], past_key_values=cache),
        ]
    )
    assert [(k.name, len(k.calls)) for k in kinds] == [("prefill", 2), ("decode", 2)]
    # Two decode kinds: each named by what tells it from the other.
    kinds = group([call(ids), call(ids, past_key_values=cache), call(ids, mask, past_key_values=cache)])
    assert [k.name for k in kinds] == ["prefill", "decode (without attention_mask)", "decode (with attention_mask)"]
    # No cache: a 2-D and a 4-D mask (Llama's custom mask), named by the dims.
    kinds = group([call(ids, mask), call(ids, mask[:, None, None, :])])
    assert [k.name for k in kinds] == ["attention_mask 2-D", "attention_mask 4-D"]
    # One kind: no name (the row has no "call").
    assert [k.name for k in group([call(ids), call(ids[:, :2])])] == [None]
