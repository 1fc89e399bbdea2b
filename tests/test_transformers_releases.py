"""The transformers releases users run, each checked the same way: CI runs this file on the last
4.x, an early 5.x and the newest 5.x the registry serves (.ci/run), as well as on the pin.

Whatever the release: every item has a row, no row is the plugin's own error (a model's outputs and
caches are read as torch reads them), no row is ``nondeterministic``, a decode step is checked on a
row of its own with the cache fed back under the name the release gives it, and outputs at the
positions a padded mask leaves without a key are never a failure by themselves.
"""

from __future__ import annotations

import textwrap

import pytest
from helpers import HAS_TRANSFORMERS, by_item, report_rows, transformers_release

pytestmark = [pytest.mark.transformers, pytest.mark.slow]

MODELS = textwrap.dedent(
    """
    import inspect

    import pytest
    import torch
    import transformers
    from transformers import (
        BertConfig, BertModel, GPT2Config, GPT2LMHeadModel, T5Config, T5ForConditionalGeneration,
        ViTConfig, ViTModel, Wav2Vec2Config, Wav2Vec2Model,
    )

    pytestmark = pytest.mark.torchexport(backends=["export", "onnx"], examples=3)


    def cache_name(model):
        # transformers 5.24 renamed past_key_values to cache (the old name warns until 5.40)
        return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


    def cache_of(out):
        return getattr(out, "cache", None) or out.past_key_values


    def test_encoder_padded():
        torch.manual_seed(0)
        model = BertModel(BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=32)).eval()
        mask = torch.tensor([[1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 1]])
        model(input_ids=torch.randint(0, 64, (2, 7)), attention_mask=mask)


    def test_causal_lm_prefill_decode():
        torch.manual_seed(0)
        model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, n_positions=32, vocab_size=64,
                                           bos_token_id=0, eos_token_id=0)).eval()
        mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])  # left-padded, as batched generation is served
        out = model(input_ids=torch.randint(0, 64, (2, 5)), attention_mask=mask, use_cache=True)
        step = model(input_ids=out.logits[:, -1:].argmax(-1), attention_mask=torch.cat([mask, torch.ones(2, 1, dtype=mask.dtype)], 1),
                     use_cache=True, **{cache_name(model): cache_of(out)})
        assert step.logits.shape == (2, 1, 64)


    def test_causal_lm_static_cache():
        # a static cache, as ExecuTorch's LLM exports use: allocated before the prefill, filled in place
        torch.manual_seed(0)
        config = GPT2Config(n_layer=1, n_embd=16, n_head=2, n_positions=32, vocab_size=64, bos_token_id=0, eos_token_id=0)
        model = GPT2LMHeadModel(config).eval()
        cache = transformers.StaticCache(config=config, max_cache_len=16)
        out = model(input_ids=torch.randint(0, 64, (2, 5)), cache_position=torch.arange(5), use_cache=True,
                    **{cache_name(model): cache})
        model(input_ids=out.logits[:, -1:].argmax(-1), cache_position=torch.tensor([5]), use_cache=True,
              **{cache_name(model): cache})


    def test_encoder_decoder_prefill_decode():
        torch.manual_seed(0)
        model = T5ForConditionalGeneration(T5Config(vocab_size=64, d_model=16, d_kv=8, d_ff=32, num_layers=1,
                                                    num_heads=2, decoder_start_token_id=0)).eval()
        ids, mask = torch.randint(0, 64, (2, 7)), torch.ones(2, 7, dtype=torch.long)
        out = model(input_ids=ids, attention_mask=mask, decoder_input_ids=torch.zeros(2, 1, dtype=torch.long), use_cache=True)
        model(input_ids=ids, attention_mask=mask, decoder_input_ids=out.logits.argmax(-1), use_cache=True,
              **{cache_name(model): cache_of(out)})


    def test_vision():
        model = ViTModel(ViTConfig(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1,
                                   num_attention_heads=2, intermediate_size=32)).eval()
        model(pixel_values=torch.randn(2, 3, 32, 32))


    def test_audio():
        model = Wav2Vec2Model(Wav2Vec2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                             conv_dim=(8, 8), conv_stride=(5, 2), conv_kernel=(10, 3),
                                             num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)).eval()
        model(input_values=torch.randn(2, 1600))
    """
)

_RUN: dict[str, object] = {}


@pytest.fixture
def release_rows(tester):
    """The rows of one session of MODELS on the installed transformers (shared by this file's tests)."""
    if not HAS_TRANSFORMERS:
        pytest.skip("needs transformers (pip install transformers)")
    if "rows" not in _RUN:
        tester.makepyfile(test_models=MODELS)
        # In a subprocess: an inline run drops the modules it imported (transformers' ops registered twice).
        result = tester.runpytest_subprocess("--torchexport-report=out.json", "-p", "no:cacheprovider")
        rows: dict[str, list[dict]] = {}
        for row in report_rows(tester, key=None):
            rows.setdefault(by_item(row), []).append(row)
        _RUN["rows"], _RUN["stdout"] = rows, result.stdout.str()
    return _RUN["rows"]


def test_every_item_has_rows_and_none_is_the_plugins_own_error(release_rows):
    tests = [
        "encoder_padded",
        "causal_lm_prefill_decode",
        "causal_lm_static_cache",
        "encoder_decoder_prefill_decode",
        "vision",
        "audio",
    ]
    items = {f"test_{t}[torchexport-{b}]" for t in tests for b in ("export", "onnx")}
    assert set(release_rows) == items, sorted(set(release_rows) ^ items)
    for item, rows in release_rows.items():
        for row in rows:
            assert row["cause_kind"] != "plugin_error", (item, row["message"])
            assert "pytest-torchexport's own code raised" not in row["message"], (item, row["message"])
            assert row["status"] != "nondeterministic", (item, row["message"])


def test_decode_steps_are_rows_of_their_own(release_rows):
    for test in ("test_causal_lm_prefill_decode", "test_encoder_decoder_prefill_decode"):
        for backend in ("export", "onnx"):
            rows = release_rows[f"{test}[torchexport-{backend}]"]
            assert [r["call"] for r in rows] == ["prefill", "decode"], [(r["call"], r["message"]) for r in rows]
            # the decode step was replayed with the cache as it was at its call, never the one the test's
            # later calls extended in place
            for row in rows:
                assert not any(f["kind"] == "reference_copy" for f in row["findings"]), row["findings"]
                assert "raise when replayed" not in row["message"], row["message"]


def test_the_causal_lm_decode_step_is_exported_and_matches_where_the_release_allows(release_rows):
    import transformers

    export = release_rows["test_causal_lm_prefill_decode[torchexport-export]"]
    if transformers.__version__.startswith("4."):
        # 4.x builds the padded mask with vmap: torch.export captures it, and its saver cannot serialize
        # the flat_apply node the capture keeps; the row says so instead of the plugin crashing.
        assert [r["status"] for r in export] == ["export_error", "export_error"], [r["message"] for r in export]
        assert all("flat_apply" in r["likely_cause"] for r in export), [r["likely_cause"] for r in export]
    else:
        assert [r["status"] for r in export] == ["pass", "pass"], [r["message"] for r in export]
        assert all(r["examples"] >= 2 for r in export)
        # the decode step holds at cache lengths around the recorded 5, as a generation serves it
        past = export[1]["sizes"]["past"]
        assert past[0] < 5 < past[1], export[1]["sizes"]


def test_the_encoder_decoder_decode_step_is_searched_over_the_cache_length(release_rows):
    # T5's decode step: the self-attention cache is 1 long at the recorded call and grows with each
    # generated token; where the step passes, it held at the lengths around it, not at 1 only.
    for backend in ("export", "onnx"):
        prefill, decode = release_rows[f"test_encoder_decoder_prefill_decode[torchexport-{backend}]"]
        if transformers_release() >= (5, 23):
            assert decode["status"] == "pass", decode["message"]
        if decode["status"] == "pass":
            past = decode["sizes"]["past"]
            assert past[0] <= 1 < past[1], decode["sizes"]


def test_a_static_cache_makes_a_decode_step_exported_where_the_release_registers_it(release_rows):
    # The cache handed to the prefill is empty (allocated, nothing written): that call is the prefill,
    # the next the decode step. Where transformers' own exporter can register cache classes (5.23 on),
    # the plugin registers StaticCache as it does, so its tensors are inputs and both steps pass; on
    # earlier releases the exporters refuse the class, and the rows say so.
    try:
        import transformers.exporters.exporter_dynamo  # noqa: F401
    except ImportError:
        registers = False
    else:
        registers = True
    for backend in ("export", "onnx"):
        rows = release_rows[f"test_causal_lm_static_cache[torchexport-{backend}]"]
        assert [r["call"] for r in rows] == ["prefill", "decode"], [(r["call"], r["message"]) for r in rows]
        for row in rows:
            if registers:
                assert row["status"] == "pass", row["message"]
            else:
                assert row["status"] == "export_error", row["message"]
                assert row["cause_kind"] == "unregistered_type", row["message"]
                assert "StaticCache" in row["message"], row["message"]


def test_outputs_at_positions_with_no_key_are_no_failure(release_rows):
    # GPT-2's left-padded prefill on onnx: what a softmax over no key gives differs between eager and
    # onnxruntime at the padded positions; where it is the only difference, the row does not fail on it.
    for rows in release_rows.values():
        for row in rows:
            if row["status"] == "mismatch":
                assert not any(f["kind"] == "masked_rows" for f in row["findings"]), row["message"]


def test_vision_and_audio_models_get_their_true_verdicts(release_rows):
    for item in ("test_vision[torchexport-export]", "test_vision[torchexport-onnx]"):
        (row,) = release_rows[item]
        assert row["status"] == "pass", row["message"]
    # Wav2Vec2's .pt2 refuses clips shorter than its convolutions need (torch.export specializes a size-1
    # frame count: 'Guard failed: input_values.size()[1] >= 30'), which eager takes: a true run_error
    # quoting the guard where the search draws one, a pass where it does not.
    (row,) = release_rows["test_audio[torchexport-export]"]
    assert row["status"] in ("pass", "run_error"), row["message"]
    if row["status"] == "run_error":
        assert "Guard failed: input_values.size()[1] >=" in row["message"], row["message"]


def test_check_returns_or_raises_its_report_on_a_model_output():
    """check() on a model returning a ModelOutput: its report, never another exception, on any release."""
    if not HAS_TRANSFORMERS:
        pytest.skip("needs transformers (pip install transformers)")
    import torch
    from transformers import BertConfig, BertModel

    from pytest_torchexport import ExportMismatch, check

    torch.manual_seed(0)
    model = BertModel(
        BertConfig(
            vocab_size=64,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=32,
        )
    ).eval()
    try:
        report = check(model, (torch.randint(0, 64, (2, 7)),), backends=["export"], examples=2)
    except ExportMismatch as exc:
        report = exc.report
    (row,) = report.results
    assert row.cause_kind != "plugin_error", row.message
    assert row.status == "pass", row.message


def test_the_runs_in_subprocesses_import_the_release_under_test(pytester):
    """Every test here runs pytest again in a temporary folder: were the release's folder on a
    relative PYTHONPATH left as it is, those runs would import another transformers and their
    verdicts would be another release's."""
    if not HAS_TRANSFORMERS:
        pytest.skip("needs transformers (pip install transformers)")
    import transformers

    pytester.makepyfile("import transformers\n\ndef test_release():\n    print('RELEASE', transformers.__version__)\n")
    result = pytester.runpytest_subprocess("-s", "-p", "no:cacheprovider", "-p", "no:randomly")
    result.stdout.fnmatch_lines([f"* RELEASE {transformers.__version__}"])
