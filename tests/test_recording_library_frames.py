"""A library's own work is not the test's call (found on transformers' own tests, marked).

Marking transformers' Llama tests with ``--torchexport-auto`` checked two things the tests never
called: a float16 ``LayerNorm`` that transformers' fp16 probe (``is_torch_fp16_available_on_device``)
builds and calls inside its own code, and ``LlamaModel.gather_sharded_state_dict_for_save``,
which ``save_pretrained`` calls on the model it saves. The test's Llama forward calls were only
in ``other_modules``. Now where a module is built and who calls it decide ([Built By A
Library]; [Another Method]): the first tests use a stand-in library (a file under a
``site-packages`` folder, which is where the decision looks), the last ones transformers itself.
"""

from __future__ import annotations

import importlib.util
import inspect
import textwrap

import pytest
from helpers import report_rows, run_with_report

LIBRARY = textwrap.dedent(
    """
    import torch
    from torch import nn


    def fp16_probe():
        # transformers' is_torch_fp16_available_on_device: builds a LayerNorm and calls it, for itself
        norm = nn.LayerNorm(5)
        return norm(torch.randn(3, 4, 5)).shape == (3, 4, 5)


    def build(width):
        return nn.Sequential(nn.Linear(4, width), nn.ReLU(), nn.Linear(width, 3))


    def run_built(width):
        # a helper that builds a model and calls it, handing back only the result
        model = build(width)
        return model(torch.randn(2, 4))


    def evaluate(model, x):
        return model(x)


    def save(model):
        # save_pretrained: a method of the model it saves, called with the model's tensors
        return model.gather(model.state_dict())
    """
)

TESTS = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import pytest
    import torch
    from torch import nn

    sys.path.insert(0, str(Path(__file__).parent / "lib" / "site-packages"))
    import probe_lib


    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Linear(4, 3)

        def forward(self, x):
            return self.body(x).relu()

        def gather(self, state):
            return {k: v.clone() for k, v in state.items()}

        def save_all(self):  # no tensor of its own: the module's code calls gather
            return self.gather(self.state_dict())


    marked = pytest.mark.torchexport(backends=["export"], dims={"batch": (1, 4)})


    @marked
    def test_probe_then_model():
        assert probe_lib.fp16_probe()
        Net().eval()(torch.randn(2, 4))


    @marked
    def test_library_saves_then_model():
        model = Net().eval()
        probe_lib.save(model)
        model(torch.randn(2, 4))


    @marked
    def test_own_code_then_model():
        model = Net().eval()
        model.save_all()
        model(torch.randn(2, 4))


    @marked
    def test_built_by_library_called_by_test():
        model = probe_lib.build(8).eval()
        model(torch.randn(2, 4))


    @marked
    def test_test_model_called_by_library():
        probe_lib.evaluate(Net().eval(), torch.randn(2, 4))


    @marked
    def test_built_and_called_by_library_only():
        probe_lib.run_built(8)
    """
)


#: one session of each source per process, read by its tests (real exports are paid once)
_RUNS: dict[str, tuple] = {}


@pytest.fixture
def library_run(tester):
    if "library" in _RUNS:
        return _RUNS["library"]
    (tester.path / "lib" / "site-packages").mkdir(parents=True)
    (tester.path / "lib" / "site-packages" / "probe_lib.py").write_text(LIBRARY)
    tester.makepyfile(test_lib=TESTS)
    _RUNS["library"] = run_with_report(tester, "-p", "no:cacheprovider", key=lambda r: r["test"].split("::")[-1])
    return _RUNS["library"]


def test_a_module_a_library_builds_and_calls_for_itself_is_not_the_test_model(library_run):
    result, rows = library_run
    row = rows["test_probe_then_model"]
    assert (row["module"], row["status"]) == ("Net", "pass"), row["message"]
    # not even a sibling to suggest: the probe's LayerNorm was never the test's call
    assert not any("LayerNorm" in f["detail"] for f in row["findings"]), row["findings"]
    # A library helper that builds a model and calls it is no call of the test's either: nothing to check.
    only = rows["test_built_and_called_by_library_only"]
    assert only["status"] == "usage_error", only["message"]
    assert "called no nn.Module" in only["message"]
    result.assert_outcomes(passed=5, failed=1)


def test_a_method_the_library_or_the_module_calls_is_not_the_test_method(library_run):
    _, rows = library_run
    for test in ("test_library_saves_then_model", "test_own_code_then_model"):
        row = rows[test]
        assert (row["module"], row.get("method"), row["status"]) == ("Net", None, "pass"), (test, row["message"])
        assert not any("gather" in f["detail"] for f in row["findings"]), (test, row["findings"])


def test_a_library_built_model_the_test_calls_and_a_test_model_a_library_calls_stay_the_test_calls(library_run):
    _, rows = library_run
    assert (
        rows["test_built_by_library_called_by_test"]["module"],
        rows["test_built_by_library_called_by_test"]["status"],
    ) == (
        "Sequential",
        "pass",
    )
    assert (
        rows["test_test_model_called_by_library"]["module"],
        rows["test_test_model_called_by_library"]["status"],
    ) == (
        "Net",
        "pass",
    )


# -- transformers itself: its fp16 probe, save_pretrained, BERT as a decoder -----------------------

HAS_TRANSFORMERS = importlib.util.find_spec("transformers") is not None

TRANSFORMERS = textwrap.dedent(
    """
    import pytest
    import torch
    from transformers import BertConfig, BertModel, LlamaConfig, LlamaModel
    from transformers.utils.import_utils import is_torch_fp16_available_on_device

    pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning", "ignore::UserWarning")


    def llama():
        config = LlamaConfig(num_hidden_layers=1, hidden_size=16, intermediate_size=32, num_attention_heads=2,
                             num_key_value_heads=1, vocab_size=64, max_position_embeddings=32, pad_token_id=0)
        return LlamaModel(config).eval()


    @pytest.mark.torchexport(backends=["export"], examples=3)
    def test_fp16_probe_then_llama():
        is_torch_fp16_available_on_device.cache_clear()  # runs its probe again, as a fresh process's first call does
        if is_torch_fp16_available_on_device("cpu"):  # transformers' tests ask before a float16 case
            pass
        llama()(torch.randint(1, 64, (2, 7)))


    @pytest.mark.torchexport(backends=["export"], examples=3)
    def test_save_pretrained_then_llama(tmp_path):
        model = llama()
        model.save_pretrained(tmp_path)
        model(torch.randint(1, 64, (2, 7)))


    @pytest.mark.torchexport(backends=["export"], examples=3)
    def test_bert_as_decoder_with_encoder_states():
        config = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=32, max_position_embeddings=32, is_decoder=True, add_cross_attention=True)
        model = BertModel(config).eval()
        out = model(torch.randint(1, 64, (2, 7)), attention_mask=torch.ones(2, 7, dtype=torch.long),
                    encoder_hidden_states=torch.randn(2, 5, 16))
        assert type(out.past_key_values).__name__ == "EncoderDecoderCache"
    """
)


@pytest.fixture
def transformers_run(tester):
    if not HAS_TRANSFORMERS:
        pytest.skip("needs transformers (pip install transformers)")
    if "transformers" not in _RUNS:
        tester.makepyfile(test_tf=TRANSFORMERS)
        # In a subprocess: an inline run drops the modules it imported (transformers' ops registered twice).
        result = tester.runpytest_subprocess("--torchexport-report=out.json", "-p", "no:cacheprovider")
        _RUNS["transformers"] = result, report_rows(tester, key=lambda r: r["test"].split("::")[-1])
    return _RUNS["transformers"]


@pytest.mark.transformers
def test_transformers_fp16_probe_and_save_pretrained_are_not_what_is_checked(transformers_run):
    result, rows = transformers_run
    probe = rows["test_fp16_probe_then_llama"]
    assert probe["module"] == "LlamaModel", probe["message"]
    assert not any("LayerNorm" in f["detail"] for f in probe["findings"]), probe["findings"]
    saved = rows["test_save_pretrained_then_llama"]
    assert (saved["module"], saved.get("method")) == ("LlamaModel", None), saved["message"]
    assert not any("gather_sharded_state_dict_for_save" in f["detail"] for f in saved["findings"]), saved["findings"]


def _has_exporter() -> bool:
    """The installed transformers has an exporter of its own (5.x) to register its caches with."""
    try:
        return importlib.util.find_spec("transformers.exporters.exporter_dynamo") is not None
    except ModuleNotFoundError:  # 4.x: no transformers.exporters at all
        return False


@pytest.mark.transformers
def test_an_encoder_decoder_cache_in_the_outputs_gets_the_exporters_true_verdict(transformers_run):
    # BERT as a decoder called with encoder_hidden_states returns an EncoderDecoderCache. Unregistered,
    # torch.export refuses it ("... EncoderDecoderCache'> in output, which is not a known type"): the
    # verdict on transformers 4.x, which has no exporter of its own to register it with. With
    # transformers' own pytree registration (5.x) the program exports and matches eager.
    _, rows = transformers_run
    row = rows["test_bert_as_decoder_with_encoder_states"]
    if not _has_exporter():
        assert (row["module"], row["status"]) == ("BertModel", "export_error"), row["message"]
        assert "EncoderDecoderCache'> in output, which is not a known type" in row["message"], row["message"]
        return
    assert "not a known type" not in (row["message"] or ""), row["message"]
    assert (row["module"], row["status"]) == ("BertModel", "pass"), row["message"]
    assert row["examples"] >= 1


@pytest.mark.transformers
def test_the_encoder_decoder_cache_registration_round_trips_to_a_cache_eager_takes():
    """What makes the registration sound: the cache rebuilt from its flattened tensors is one the
    model takes back as ``past_key_values`` (a decode step), with the same outputs as the original."""
    if not HAS_TRANSFORMERS:
        pytest.skip("needs transformers (pip install transformers)")
    import copy

    import torch
    from torch.utils import _pytree as pytree
    from transformers import BertConfig, BertLMHeadModel

    from pytest_torchexport.recording.kinds import register_caches

    config = BertConfig(
        vocab_size=64,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        is_decoder=True,
        add_cross_attention=True,
    )
    model = BertLMHeadModel(config).eval()
    encoder = torch.randn(2, 5, 16)
    name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"  # cache from 5.24
    with torch.no_grad():
        cache = model(torch.randint(1, 64, (2, 7)), encoder_hidden_states=encoder)[name]
    register_caches(cache)
    leaves, spec = pytree.tree_flatten(cache)
    if not _has_exporter():
        # 4.x has no exporter of its own to register it with: the cache stays one opaque leaf, and the
        # exporters' refusal of it is the verdict (the test above)
        assert leaves == [cache] and spec.num_leaves == 1, spec
        return
    assert len(leaves) == 8 and all(isinstance(t, torch.Tensor) for t in leaves)  # 2 layers x (self, cross) x (k, v)
    rebuilt = pytree.tree_unflatten([t.clone() for t in leaves], spec)
    assert type(rebuilt) is type(cache) and rebuilt.is_updated == cache.is_updated
    step = torch.randint(1, 64, (2, 1))
    with torch.no_grad():
        expected = model(step, encoder_hidden_states=encoder, **{name: copy.deepcopy(cache)}).logits
        got = model(step, encoder_hidden_states=encoder, **{name: rebuilt}).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
