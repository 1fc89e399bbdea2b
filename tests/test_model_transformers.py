"""``transformers:NAME`` model specs (docs/howto-model.md).

The model is built from the installed transformers' config class with random weights (never
the hub: HF_HUB_OFFLINE=1 here), tiny where the SPEC does not say, and called as it is served:
ids in its vocabulary, a padded attention mask, and for a causal LM a decode step with the
prefill's cache. Every test needs transformers: the ``transformers`` marker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pytest_torchexport.recording.models import ModelError, ModelSpec, build, infer_inputs

pytestmark = pytest.mark.transformers
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _transformers():
    pytest.importorskip("transformers")


def test_a_model_type_is_built_tiny_from_its_config_for_its_task_and_the_spec_keeps_its_sizes():
    spec = ModelSpec.parse("transformers:gpt2?n_layer=3")
    assert (spec.kind, spec.target, spec.name) == ("library", "transformers", "gpt2")
    model = build(spec)
    config = model.config
    assert type(model).__name__ == "GPT2LMHeadModel" and not model.training
    assert config.n_layer == 3  # said in the SPEC (n_layer is GPT-2's num_hidden_layers)
    assert (config.n_embd, config.n_head, config.vocab_size) == (32, 2, 1000)  # tiny where it did not say
    assert config.eos_token_id == 999  # the config's ids stay inside the smaller vocabulary
    assert sum(p.numel() for p in model.parameters()) < 200_000
    again = build(spec)  # a fixed seed: the same weights on every run
    assert torch.equal(model.transformer.wte.weight, again.transformer.wte.weight)
    assert [type(build(ModelSpec.parse(f"transformers:{name}"))).__name__ for name in ("bert", "t5")] == [
        "BertForMaskedLM",
        "T5ForConditionalGeneration",
    ]
    by_class = build(ModelSpec.parse("transformers:GPT2Model?n_layer=1"))
    assert type(by_class).__name__ == "GPT2Model" and by_class.config.n_layer == 1 and by_class.config.n_embd == 32


def test_an_unknown_name_is_a_model_error_with_the_closest_types():
    with pytest.raises(ModelError) as raised:
        build(ModelSpec.parse("transformers:gtp2"))
    assert "has no model type 'gtp2'" in str(raised.value) and "Closest names: gpt2" in str(raised.value)
    with pytest.raises(ModelError, match="could not build gpt2"):
        build(ModelSpec.parse("transformers:gpt2?n_embd=30&n_head=4"))  # 30 is no multiple of 4 heads


def test_a_causal_lm_is_called_left_padded_then_with_a_decode_step_and_an_encoder_right_padded():
    spec = ModelSpec.parse("transformers:gpt2?n_layer=1")
    model = build(spec)
    call = infer_inputs(model, spec)
    ids, mask = call.kwargs["input_ids"], call.kwargs["attention_mask"]
    assert ids.shape == mask.shape == (2, 8) and (int(ids.min()), int(ids.max())) == (0, 999)
    assert mask[0].tolist() == [0, 0, 1, 1, 1, 1, 1, 1] and bool(mask[1].all())
    assert call.then is not None and "decode step" in call.source
    with torch.no_grad():
        _, step = call.then(call.kwargs, model(**call.kwargs))
        assert step["input_ids"].shape == (2, 1) and step["attention_mask"].shape == (2, 9)
        cache = step.get("cache", step.get("past_key_values"))  # the release's own name (cache from 5.24)
        assert cache is not None and cache.get_seq_length() == 8
        assert model(**step).logits.shape == (2, 1, 1000)
    bert = ModelSpec.parse("transformers:bert")
    call = infer_inputs(build(bert), bert)
    assert call.then is None and call.kwargs["attention_mask"][0].tolist() == [1] * 6 + [0, 0]


@pytest.mark.slow
def test_check_builds_transformers_models_by_name_and_checks_them_beyond_the_recorded_length(tmp_path):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "HF_HUB_OFFLINE": "1",
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest_torchexport",
            "check",
            "transformers:bert",
            "transformers:gpt2?n_layer=1",
            "--backends",
            "export",
            "--examples",
            "4",
            "--report",
            "out.json",
            "--",
            "-p",
            "no:cacheprovider",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    rows = json.loads((tmp_path / "out.json").read_text())["results"]
    by_test = {}
    for row in rows:
        by_test.setdefault(row["test"].removeprefix("torchexport-model::"), []).append(row)
    assert set(by_test) == {"transformers:bert", "transformers:gpt2?n_layer=1"}, done.stdout + done.stderr
    (bert,) = by_test["transformers:bert"]
    assert bert["module"] == "BertForMaskedLM" and bert["status"] == "pass", bert["message"]
    assert bert["sizes"]["seq"][1] > 8 and "right" in bert["model"]["inputs"]
    gpt2 = by_test["transformers:gpt2?n_layer=1"]
    prefill = next(row for row in gpt2 if row.get("call") in (None, "prefill"))
    assert "decode step" in prefill["model"]["inputs"] and "left" in prefill["model"]["inputs"]
    # The decode step was made, and has its own row.
    assert sorted(row["call"] for row in gpt2) == ["decode", "prefill"]
    import transformers

    if transformers.__version__.startswith("4."):
        # 4.x builds the left-padded mask with vmap: the capture keeps a flat_apply node torch.export's
        # saver cannot serialize, and the row says so
        assert prefill["status"] == "export_error" and "flat_apply" in prefill["likely_cause"], prefill["message"]
        return
    assert prefill["module"] == "GPT2LMHeadModel" and prefill["status"] == "pass", prefill["message"]
    assert prefill["sizes"]["seq"][1] > 8
