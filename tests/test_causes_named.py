"""Causes that name what happened, not "numeric".

- A difference confined to query positions that attend to no key (left padding under a causal
  mask, a row of padding only: eager gives 0 or the like, onnxruntime the mean of V) is no
  failure: those outputs are undefined, left out of the comparison, counted in ``compared`` and
  named by a ``masked_rows`` finding.
- A failure none of the experiments explains says so on its "Likely cause:" line.
- An export that binds keyword arguments by position (torch.export's non-strict capture of an fx
  ``GraphModule``, torch 2.13) is found by exporting again with them in ``forward``'s order, and
  named.
"""

from __future__ import annotations

import re
import textwrap

import pytest
from helpers import Pickled, checked, run_with_report, transformers_release

from pytest_torchexport.results import explain
from pytest_torchexport.results.report import Result
from pytest_torchexport.results.table import shared_cause_lines, shared_causes
from pytest_torchexport.search.messages import UNKNOWN_CAUSE

KEYWORDS = textwrap.dedent(
    """
    import pytest
    import torch
    from torch import nn


    class Embeddings(nn.Module):
        def __init__(self):
            super().__init__()
            self.words = nn.Linear(4, 4)
            self.types = nn.Linear(4, 4)

        def forward(self, x, mask=None, types=None):
            return self.words(x) * mask + self.types(types)


    @pytest.mark.torchexport(backends=["export"], examples=3)
    def test_graph_module_called_with_keywords_out_of_order():
        module = torch.fx.symbolic_trace(Embeddings().eval())
        x = torch.randn(2, 4)
        module(x, types=torch.randn(2, 4), mask=torch.randn(2, 4))


    class Tokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.words = nn.Embedding(10, 8)
            self.types = nn.Embedding(2, 8)

        def forward(self, input_ids, token_type_ids, attention_mask):
            return (self.words(input_ids) + self.types(token_type_ids)) * attention_mask.unsqueeze(-1)


    # Bound by position, the token ids reach the two-row type embedding: the artifact raises, on ONNX too
    @pytest.mark.torchexport(backends=["export", "onnx"], examples=3)
    def test_token_ids_out_of_order():
        module = torch.fx.symbolic_trace(Tokens().eval())
        ones = torch.ones(2, 5, dtype=torch.long)
        module(attention_mask=ones, input_ids=torch.randint(0, 10, (2, 5)), token_type_ids=0 * ones)
    """
)


def test_an_export_that_binds_keywords_by_position_is_named(tester):
    tester.makepyfile(test_m=KEYWORDS)
    result, rows = run_with_report(
        tester, "-p", "no:cacheprovider", key=lambda r: (r["test"].rsplit("::", 1)[-1], r["backend"])
    )
    row = rows[("test_graph_module_called_with_keywords_out_of_order", "export")]
    assert row["status"] == "mismatch", row["message"]
    assert row["cause_kind"] == "keyword_order", row["message"]
    assert "the test passes types, mask, forward declares mask, types" in row["likely_cause"]
    assert "numeric" not in row["likely_cause"]
    # The same binding, where it makes the artifact raise: the same cause, on each backend it reaches
    tokens = {backend: row for (test, backend), row in rows.items() if test == "test_token_ids_out_of_order"}
    for backend, row in tokens.items():
        assert (row["status"], row["cause_kind"]) == ("run_error", "keyword_order"), (backend, row["message"])
        assert row["likely_cause"].startswith(f"the {backend} artifact binds the keyword arguments by their order")
    assert sorted(tokens) == ["export", "onnx"]
    result.assert_outcomes(failed=3)


MASKED = textwrap.dedent(
    """
    import pytest
    import torch
    import transformers


    @pytest.mark.torchexport(backends=["onnx"], examples=3)
    def test_gpt2_left_padded():
        torch.manual_seed(0)
        config = transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, n_positions=32, vocab_size=64,
                                         bos_token_id=0, eos_token_id=0, use_cache=False)
        model = transformers.GPT2Model(config).eval()
        mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])  # the first row left-padded
        model(input_ids=torch.randint(0, 64, (2, 6)), attention_mask=mask)
    """
)


@pytest.mark.transformers
@pytest.mark.slow
def test_a_difference_only_where_a_query_attends_to_no_key_is_left_out_and_said_so(tester):
    """Left padding under a causal mask: the first positions of the padded row attend to no key, so
    their outputs are undefined (eager gives 0 or the like, onnxruntime the mean of V). They are left
    out of the comparison, counted, and named; every other position is judged as usual."""
    pytest.importorskip("transformers")
    tester.makepyfile(test_m=MASKED)
    result, rows = run_with_report(tester, "-p", "no:cacheprovider")
    row = rows["onnx"]
    assert row["status"] == "pass", row["message"]
    masked = [f["detail"] for f in row["findings"] if f["kind"] == "masked_rows"]
    assert len(masked) == 1 and "(batch row, position) (0, 0)" in masked[0], row["findings"]
    assert "left out of the comparison" in masked[0]
    assert row["compared"]["masked"] > 0 and row["compared"]["elements"] > 0, row["compared"]
    result.assert_outcomes(passed=1)


BERT_AS_DECODER = textwrap.dedent(
    """
    import pytest
    import torch
    import transformers


    @pytest.mark.torchexport(backends=["onnx"], examples=6)
    def test_bert_as_decoder_left_padded():
        torch.manual_seed(0)
        config = transformers.BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                         intermediate_size=37, is_decoder=True)
        model = transformers.BertModel(config).eval()
        mask = torch.ones(3, 7, dtype=torch.long)
        mask[1, :2] = 0  # left padding: under the causal mask, positions 0 and 1 of row 1 attend to no key
        model(input_ids=torch.randint(0, 99, (3, 7)), attention_mask=mask, use_cache=False)
    """
)


@pytest.mark.transformers
@pytest.mark.slow
def test_a_pooler_reading_a_query_with_no_key_is_left_out_only_there(tester):
    """BERT as a decoder (transformers' own test_model_as_decoder): its pooler reads position 0, which
    left padding leaves no key under the causal mask. On 5.x onnxruntime fills such a query otherwise
    than eager, and the pooled output of that row differs with it: undefined, left out, and said so;
    the other rows' pooled outputs are compared."""
    pytest.importorskip("transformers")
    tester.makepyfile(test_m=BERT_AS_DECODER)
    result, rows = run_with_report(tester, "-p", "no:cacheprovider", subprocess=True)
    row = rows["onnx"]
    assert row["status"] == "pass", row["message"]
    masked = [f["detail"] for f in row["findings"] if f["kind"] == "masked_rows"]
    if transformers_release() >= (5, 0):
        # 4.x masks with the dtype's minimum: a query with no key attends evenly, the same in both
        assert len(masked) == 1 and "pooler_output" in masked[0] and "without a position axis" in masked[0], masked
        assert 0 < row["compared"]["masked"] < row["compared"]["of"], row["compared"]
    result.assert_outcomes(passed=1)


SHARED = textwrap.dedent(
    """
    import pytest
    import torch
    from torch import nn


    class Configured(nn.Module):
        '''Takes **options, as transformers' configs do: TorchScript cannot compile it.'''

        def __init__(self, **options):
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x, **options):
            return self.lin(x)


    @pytest.mark.torchexport(backends=["script"], examples=2)
    @pytest.mark.parametrize("rows", [1, 2, 3])
    def test_configured(rows):
        Configured().eval()(torch.randn(rows + 1, 4))
    """
)


def test_one_cause_shared_by_many_rows_is_one_line_with_its_count(tester):
    tester.makepyfile(test_m=SHARED)
    result, rows = run_with_report(
        tester, "-p", "no:cacheprovider", "--torchexport-report=out.md", key=lambda r: r["nodeid"], subprocess=True
    )
    causes = {row["status"] for row in rows.values()}
    assert causes == {"export_error"}, rows
    result.stdout.re_match_lines(
        [
            r"torchexport: 3 script checks are export_error for one cause: \S.* "
            r"\(test_configured\[1\], test_configured\[2\], test_configured\[3\]\)$",
        ]
    )
    assert len([line for line in result.outlines if "for one cause" in line]) == 1
    result.assert_outcomes(failed=3)
    # The Markdown report (a CI step summary) says it once too: one line with the count, and the
    # message once, the other checks it fails named under it.
    md = (tester.path / "out.md").read_text()
    shared = [line for line in md.splitlines() if "for one cause" in line]
    assert len(shared) == 1 and shared[0].startswith("- **3** script checks are export_error for one cause: "), shared
    failures = md.split("## Failures", 1)[1]
    assert failures.count("```\n") == 2  # one message block: its opening and closing fences
    assert "The same cause fails 2 more script checks: `test_m.py::test_configured[2-torchexport-script]`" in failures


def _failed(test: str, cause: str) -> Result:
    return Result(
        backend="script",
        device="cpu",
        status="export_error",
        test=f"test_m.py::{test}",
        nodeid=test,
        message=cause,
        likely_cause=cause,
    )


def test_a_cause_that_differs_only_in_an_objects_address_is_one_cause():
    # Each worker process has its own address for BertConfig.__init__: the rows of an xdist run share one cause.
    rows = [
        _failed(
            f"test_{i}",
            f"OSError: Failed to get source for <function BertConfig.__init__ at 0x7f4c{i}8> using inspect.getsource",
        )
        for i in range(3)
    ]
    rows.append(_failed("test_other", "OSError: Failed to get source for <function GPT2Config.__init__ at 0x7f4c0>"))
    assert shared_cause_lines(rows) == [
        "torchexport: 3 script checks are export_error for one cause: OSError: Failed to get source for "
        "<function BertConfig.__init__> using inspect.getsource (test_0, test_1, test_2)"
    ]
    # A test with several kinds of call has a row per kind: its name is said once.
    rows = [_failed("test_model", "same cause") for _ in range(3)] + [_failed("test_other", "same cause")]
    assert [g.tests() for g in shared_causes(rows)] == ["test_model, test_other"]


def test_a_trace_that_refuses_an_output_says_its_class_and_torchs_reason_not_its_values():
    values = "\n".join(f"  tensor([[{i}.0, 1.0, 2.0]])," for i in range(300))
    error = RuntimeError(
        f"Tracer cannot infer type of BaseModelOutputWithPast(last_hidden_state=\n{values}\n"
        "past_key_values=DynamicCache())\n:Only tensors and (possibly nested) tuples of tensors, "
        "lists, or dicts are supported as inputs or outputs of traced functions, but instead got "
        "value of type DynamicCache."
    )
    assert explain.trim_error(error) == (
        "RuntimeError: Tracer cannot infer type of BaseModelOutputWithPast(...): Only tensors and (possibly nested) "
        "tuples of tensors, lists, or dicts are supported as inputs or outputs of traced functions, but instead got "
        "value of type DynamicCache."
    )
    finding = explain.error_finding(error, "trace", "export")
    assert finding is not None and finding.kind == "unsupported_output"  # the cause, before any frozen branch


def test_a_class_pytree_does_not_know_is_named_as_such_not_as_a_python_construct():
    # torch 2.13.0's words, as torch.export refused transformers 5.5's EncoderDecoderCache (which that
    # release registers with no pytree) as an input and as an output
    for error in (
        ValueError(
            "Unsupported input type <class 'transformers.cache_utils.EncoderDecoderCache'>. Export only supports "
            "pytree containers of basic types (Tensor, int, float, ...) as input."
        ),
        RuntimeError(
            "Found <class 'transformers.cache_utils.EncoderDecoderCache'> in output, which is not a known type. If "
            "this type holds tensors, you need to register a pytree for it."
        ),
    ):
        finding = explain.error_finding(error, "export", "export")
        assert finding is not None and finding.kind == "unregistered_type", finding
        assert "a class pytree does not know" in finding.detail
    # a save that fails is no construct of the model's code, whatever words it shares with one
    saved = RuntimeError("SerializeError: Failed serializing node flat_apply: Unsupported argument")
    assert explain.error_finding(saved, "export", "save") is None


PADDED_ROWS = textwrap.dedent(
    """
    import pytest
    import torch
    import transformers


    def bert():
        torch.manual_seed(0)
        config = transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                                         max_position_embeddings=64, vocab_size=64, num_labels=3)
        return transformers.BertForSequenceClassification(config).eval()


    @pytest.mark.torchexport(backends=["onnx"], examples=6)
    def test_holes():
        # transformers' own tests' random_attention_mask: holes, mostly 0, the last token kept
        mask = torch.tensor([[0, 0, 1, 0, 0, 0, 1], [0, 1, 0, 0, 0, 0, 1]])
        bert()(input_ids=torch.randint(0, 64, (2, 7)), attention_mask=mask)


    @pytest.mark.torchexport(backends=["onnx"], examples=6)
    def test_a_row_of_padding_only():
        mask = torch.tensor([[1, 1, 1, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0]])
        bert()(input_ids=torch.randint(0, 64, (2, 7)), attention_mask=mask)
    """
)


@pytest.mark.transformers
@pytest.mark.slow
def test_a_row_of_padding_only_is_drawn_where_the_test_sent_one_and_left_out_where_it_differs(tester):
    """A non-causal encoder's pooled output (BertForSequenceClassification's logits): a batch row the
    mask keeps nothing of has no key for any query; onnxruntime and eager fill it differently."""
    pytest.importorskip("transformers")
    tester.makepyfile(test_m=PADDED_ROWS)
    result, rows = run_with_report(
        tester, "-p", "no:cacheprovider", key=lambda r: r["test"].rsplit("::", 1)[-1], subprocess=True
    )
    # Masks drawn as padding keep a token in every row: the recorded holes are mostly 0, and the
    # old majority rule took 0 for "keep", drew [[0]] and called the difference there "numeric".
    holes = rows["test_holes"]
    assert holes["status"] == "pass", holes["message"]
    assert holes["sizes"]["seq"][1] > 7
    padded = rows["test_a_row_of_padding_only"]
    assert padded["status"] == "pass", padded["message"]  # that row's logits are undefined: left out
    # Which input shows it first depends on the search's budget under load (a row of padding only,
    # [[0]], on a quiet machine; a batch holding one beside a kept row otherwise): the finding names
    # the padded row either way.
    found = [f["detail"] for f in padded["findings"] if f["kind"] == "masked_rows"]
    if transformers_release() < (5, 0):
        # 4.x masks with the dtype's minimum, not -inf: a row of padding only attends evenly to every key,
        # the same in eager and onnxruntime, so nothing differs there to leave out
        assert not found, found
        result.assert_outcomes(passed=2)
        return
    (masked,) = found
    assert re.match(
        r"onnx differs from eager only at batch rows? [\d, ]+ of \['logits'\]: attention_mask keeps no "
        r"position of th(at|ose) rows? \(padding only\), so no query there attends to any key",
        masked,
    ), masked
    result.assert_outcomes(passed=2)


# An installed exporter's code, which no site names: compiled under a name that is no user's file.
_VENDOR: dict = {}
exec(  # noqa: S102 - a fixed string
    compile(
        "def export(self, module, args, kwargs, ctx):\n    raise RuntimeError('the device ran out of handles')\n",
        "<vendor exporter>",
        "exec",
    ),
    _VENDOR,
)


class _Refusing(Pickled):
    """A third-party backend whose exporter refuses with an error that names no line of the model."""

    name = "refusing"
    export = _VENDOR["export"]


class _Raising(Pickled):
    """A third-party backend whose artifact raises on inputs whose first value is negative, at every
    size: no branch, size, special value or keyword order explains it."""

    name = "raising"

    def run(self, artifact, args, kwargs):
        if float(args[0].flatten()[0]) < 0:
            raise RuntimeError("handle table full")
        return artifact(*args, **kwargs)


@pytest.mark.parametrize(
    "backend, line",
    [
        (
            _Refusing(),
            "Likely cause: not known: the error above names no line of the model and no limit the plugin knows",
        ),
        (_Raising(), f"Likely cause: {UNKNOWN_CAUSE}"),
    ],
    ids=["export", "search"],
)
def test_a_failure_no_experiment_explains_says_so(backend, line):
    import torch

    row = checked(torch.nn.Linear(4, 3).eval(), (torch.randn(2, 4).abs(),), [backend], examples=8, roundtrip=False)[
        backend.name
    ]
    assert row.status in ("export_error", "run_error"), row.message
    assert line in row.message.splitlines(), row.message


# A function with no source file, as a dataclass's generated __init__ is (transformers 5's configs)
_MADE: dict = {"__name__": "made"}
exec("def doubled(x):\n    return x * 2\n", _MADE)  # noqa: S102 - a fixed string
doubled = _MADE["doubled"]


def test_a_function_script_cannot_read_the_source_of_is_named():
    """script refused GPT-2 on transformers 5 with inspect's raw OSError about GPT2Config.__init__."""
    import torch

    class Doubling(torch.nn.Module):
        def forward(self, x):
            return doubled(x)

    row = checked(Doubling(), (torch.randn(2, 4),), ["script"], examples=2)["script"]
    assert row.status == "export_error", row.message
    assert "doubled has none Python can read" in row.likely_cause, row.message
    assert f"Likely cause: {row.likely_cause}" in row.message.splitlines()


class _Pair:
    """A user's class registered with pytree the plain way, without keys (as transformers registers
    its ModelOutput classes on 4.57 and 5.5)."""

    def __init__(self, a, b):
        self.a, self.b = a, b


def _register_pair() -> None:
    from torch.utils import _pytree as pytree

    if _Pair not in pytree.SUPPORTED_NODES:
        pytree.register_pytree_node(_Pair, lambda p: ([p.a, p.b], None), lambda xs, _: _Pair(*xs))


def test_an_input_registered_with_pytree_without_keys_is_named():
    """torch.export refuses it (Whisper's generate passes encoder_outputs=BaseModelOutput so): the row
    names the argument and the remedy, not the raw ValueError."""
    import torch

    _register_pair()

    class Adds(torch.nn.Module):
        def forward(self, x, pair):
            return x + pair.a * pair.b

    pair = _Pair(torch.randn(2, 4), torch.randn(2, 4))
    row = checked(Adds(), (torch.randn(2, 4),), ["export"], {"pair": pair}, examples=2)["export"]
    assert row.status == "export_error", row.message
    assert row.likely_cause.startswith("the argument pair is a _Pair, which is registered with pytree without keys")
    assert f"Likely cause: {row.likely_cause}" in row.message.splitlines()


def test_an_aten_op_the_onnx_exporter_cannot_translate_is_an_unsupported_op():
    # the dynamo ONNX exporter on BERT's question-answering loss (transformers' own tests)
    error = RuntimeError(
        "ConversionError: Error when translating node %cross_entropy_loss : [num_users=1] = "
        "call_function[target=torch.ops.aten.cross_entropy_loss.default](args = (%clone_5, %clamp, None, 1, "
        "%sym_size_int_13), kwargs = {}). See the stack trace for more information."
    )
    finding = explain.error_finding(error, "onnx", "export")
    assert finding is not None and finding.kind == "unsupported_op", finding


def test_a_decoder_row_whose_encoder_mask_keeps_nothing_is_left_out():
    # BERT as a decoder (transformers' own test_model_as_decoder) drew an encoder_attention_mask whose
    # second row keeps nothing: every query of that row attends to no key in cross-attention, and
    # onnxruntime's outputs there differ from eager's; they are undefined, not a defect.
    import torch

    from pytest_torchexport.search import causes

    expected = torch.zeros(2, 3, 4)
    actual = expected.clone()
    actual[1] += 0.02
    kwargs = {
        "attention_mask": torch.ones(2, 3, dtype=torch.long),
        "encoder_attention_mask": torch.tensor([[1, 1, 0, 0, 1], [0, 0, 0, 0, 0]]),
    }
    found = causes.no_key_positions(torch.nn.Linear(4, 4), expected, actual, (), kwargs)
    assert found is not None
    rows, patched = found
    assert rows.rows == (1,) and torch.equal(patched, expected)
    actual[0, 0, 0] = 1.0  # a difference in a row that keeps keys is never left out
    rows, patched = causes.no_key_positions(torch.nn.Linear(4, 4), expected, actual, (), kwargs)
    assert float(patched[0, 0, 0]) == 1.0


class _CausalPooling:
    """A causal attention layer over a left-padded batch, and two poolers: BERT's (the first
    position, which left padding leaves no key) and GPT-2's classifier's (the last position)."""

    @staticmethod
    def module():
        import torch
        from torch import nn

        class Attention(nn.Module):
            is_causal = True

            def forward(self, x, mask):
                causal = torch.ones(x.shape[1], x.shape[1], dtype=torch.bool).tril()
                keep = causal[None, None] & mask.bool()[:, None, None, :]
                out = nn.functional.scaled_dot_product_attention(x[:, None], x[:, None], x[:, None], attn_mask=keep)
                return out[:, 0]

        class Model(nn.Module):
            def __init__(self):
                super().__init__()
                self.attention = Attention()

            def forward(self, x, attention_mask):
                hidden = self.attention(x, attention_mask)
                return {"hidden": hidden, "first": hidden[:, 0].tanh(), "last": hidden[:, -1].tanh()}

        return Model().eval()


def test_a_pooled_output_that_reads_a_query_with_no_key_is_left_out_where_eager_shows_it():
    # BERT as a decoder on transformers 5.x: left padding leaves position 0 no key, and the pooler
    # reads position 0. Eager's own rerun, with those queries' attention output perturbed, shows
    # which pooled values read them; only those are left out.
    import torch

    from pytest_torchexport.search import causes

    torch.manual_seed(0)
    model = _CausalPooling.module()
    x = torch.randn(2, 4, 8)
    mask = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1]])
    args, kwargs = (x,), {"attention_mask": mask}

    def eager_moved():
        plain = model(x, mask)
        with causes.no_key_queries_moved():
            return plain, model(x, mask)

    with torch.no_grad():
        expected = model(x, mask)
    # What onnxruntime does at those queries (the mean of V), carried into the first position's pooler
    actual = {k: v.clone() for k, v in expected.items()}
    actual["hidden"][1, :2] += 0.5
    actual["first"][1] += 0.1
    rows, patched = causes.no_key_positions(model, expected, actual, args, kwargs, eager_moved=eager_moved)
    assert rows.pooled_rows == (1,) and rows.left_padding == ((1, 0), (1, 1)), rows
    assert all(torch.equal(patched[k], expected[k]) for k in expected)
    # The same difference where the pooled value reads only defined positions is a difference.
    actual["last"][1] += 0.1
    _, patched = causes.no_key_positions(model, expected, actual, args, kwargs, eager_moved=eager_moved)
    assert not torch.equal(patched["last"], expected["last"]) and torch.equal(patched["first"], expected["first"])
    # And in a row the mask keeps whole, always.
    actual["last"][1] -= 0.1
    actual["first"][0] += 0.1
    _, patched = causes.no_key_positions(model, expected, actual, args, kwargs, eager_moved=eager_moved)
    assert not torch.equal(patched["first"][0], expected["first"][0])
    actual["first"][0] -= 0.1

    # A rerun that moves a defined position (a model that differs between two runs) tells nothing,
    # and without a rerun nothing pooled in a row that keeps keys is left out.
    def restless():
        plain = model(x, mask)
        return plain, {k: v + 1e-3 for k, v in plain.items()}

    for rerun in (restless, None):
        found = causes.no_key_positions(model, expected, actual, args, kwargs, eager_moved=rerun)
        assert found is not None and found[0].pooled_rows == (), rerun
        assert not torch.equal(found[1]["first"][1], expected["first"][1])


def test_a_runtime_with_no_kernel_for_a_node_is_a_load_error_that_names_it():
    """transformers' own bfloat16 BERT tests on onnx: onnxruntime's CPU kernels cover no bfloat16
    Gemm or Add. The file was exported; the row says the runtime cannot run it, not "could not
    export ... not known"."""
    import torch

    row = checked(torch.nn.Linear(4, 3).to(torch.bfloat16), (torch.randn(2, 4, dtype=torch.bfloat16),), ["onnx"])[
        "onnx"
    ]
    assert row.status == "load_error", row.message
    assert row.cause_kind == "unsupported_op", row.message
    assert row.message.startswith("onnx could not load the module"), row.message
    assert row.likely_cause.startswith("onnxruntime has no kernel for Gemm (opset 13)"), row.message
    assert "the model's weights are bfloat16" in row.likely_cause, row.message


def test_a_pt2_file_torch_cannot_read_back_quotes_the_readers_error():
    """transformers' own test_prepare_inputs_for_generation_kwargs_forwards: a call that returns a
    string. torch.export saves it and cannot load it, and says only "check the warnings above"."""
    import torch

    class Prepares(torch.nn.Module):
        def forward(self, input_ids):
            return {"input_ids": input_ids * 2, "custom_arg": "test_value"}

    row = checked(Prepares(), (torch.tensor([[1, 2, 3], [4, 5, 6]]),), ["export"], examples=2)["export"]
    assert row.status == "load_error", row.message
    assert "SerializeError: Unable to deserialize output node Argument(as_string=test_value)" in row.message
    assert row.likely_cause.startswith("export saved the program, but torch.export.load cannot read back its output"), (
        row.message
    )


def test_a_pt2_file_with_a_value_dependent_size_names_the_op_that_made_it():
    """transformers' own T5ForSequenceClassification tests on export: the EOS positions pass
    through ``torch.unique_consecutive``, whose output size depends on the ids' values. torch.export
    captures and saves it; torch.export.load refuses "expected no unbacked symbols", which named
    no cause."""
    import torch

    class LastEos(torch.nn.Module):
        def forward(self, hidden, ids):
            eos = ids.eq(2)
            sentences = torch.unique_consecutive(eos.sum(1)).shape[0]
            torch._check(sentences == 1)
            return hidden[eos, :].view(hidden.size(0), -1, hidden.size(-1))[:, -1, :]

    ids = torch.tensor([[1, 1, 1, 1, 2], [1, 1, 1, 1, 2]])
    row = checked(LastEos(), (torch.randn(2, 5, 3), ids), ["export"], examples=2)["export"]
    assert row.status == "load_error", row.message
    assert "expected no unbacked symbols, got 1: {u0}" in row.message
    assert row.likely_cause.startswith(
        "export saved the program, but torch.export.load cannot read it back: the program holds a size computed "
        "from a tensor's values (u0, made by aten.unique_consecutive.default in LastEos at "
    ), row.message
    assert re.search(r"test_causes_named\.py:\d+\)", row.likely_cause), row.likely_cause
    assert "Likely cause: not known" not in row.message
