"""Values a model takes or hands back that are not plain tensors: a pytree node registered without
keys, a user's own state object handed back, 0-d tensors, nested containers. Under ``-W error``
every item is a row, none is the plugin's own error, and every failure names its cause.
"""

from __future__ import annotations

import textwrap

from helpers import by_item, shared_run

SOURCE = textwrap.dedent(
    """
    import collections

    import pytest
    import torch
    import torch.utils._pytree as pytree


    class Pair:
        # registered without a key function, as transformers 4.x registers its ModelOutput classes
        def __init__(self, a, b):
            self.a, self.b = a, b


    pytree.register_pytree_node(Pair, lambda p: ([p.a, p.b], None), lambda xs, _: Pair(*xs))


    class State:
        def __init__(self, t):
            self.t = t


    class TakesPair(torch.nn.Module):
        def forward(self, p):
            return Pair(p.a * 2, p.b + 1)


    class HandsStateBack(torch.nn.Module):
        def forward(self, x, state):
            state.t = state.t + x.sum()
            return x * 2, state


    class Scaled(torch.nn.Module):
        def forward(self, x, scale):
            return x * scale, (x * scale).sum()


    class MixedOutput(torch.nn.Module):
        # as a transformers ModelOutput with output_hidden_states=True: a tuple beside the tensors
        def forward(self, x):
            return {"logits": x * 2, "hidden_states": (x, x + 1)}


    class Nested(torch.nn.Module):
        def forward(self, inputs):
            a = inputs["a"][0] + inputs["a"][1]
            return {"out": [a, (inputs["b"]["c"] * 2,)], "n": collections.OrderedDict(z=a.mean())}


    pytestmark = pytest.mark.torchexport


    def test_keyless():
        TakesPair()(Pair(torch.randn(2, 3), torch.randn(2, 3)))


    def test_state():
        HandsStateBack()(torch.randn(2, 3), State(torch.zeros(())))


    def test_zero_dim_scale():
        Scaled()(torch.randn(4), torch.tensor(3.0))


    def test_zero_dim_only():
        Scaled()(torch.tensor(2.0), torch.tensor(3.0))


    def test_mixed_output():
        MixedOutput()(torch.randn(2, 3))


    def test_nested():
        Nested()({"a": [torch.randn(2, 3), torch.randn(2, 3)], "b": {"c": torch.randn(3)}})
    """
)

BACKENDS = ("trace", "script", "onnx", "export")


def rows(tester) -> dict:
    return shared_run(tester, SOURCE, "-W", "error", key=by_item, passed=13, failed=11)


def test_every_item_is_a_row_and_none_is_the_plugins_own_error(tester):
    found = rows(tester)
    tests = ("keyless", "state", "zero_dim_scale", "zero_dim_only", "mixed_output", "nested")
    assert set(found) == {f"test_{t}[torchexport-{b}]" for t in tests for b in BACKENDS}
    for item, row in found.items():
        assert row["cause_kind"] != "plugin_error", (item, row["message"])
        assert row["status"] in ("pass", "export_error"), (item, row["message"])
        if row["status"] != "pass":
            assert row["likely_cause"] and not row["likely_cause"].startswith("not known"), (item, row["message"])


def test_zero_dim_tensors_and_nested_containers_pass_where_the_exporter_takes_them(tester):
    found = rows(tester)
    for test in ("zero_dim_scale", "zero_dim_only"):
        assert {found[f"test_{test}[torchexport-{b}]"]["status"] for b in BACKENDS} == {"pass"}
    assert found["test_nested[torchexport-export]"]["status"] == "pass"
    assert found["test_nested[torchexport-onnx]"]["status"] == "pass"


def test_a_class_pytree_does_not_know_is_named_with_its_argument_and_the_remedy(tester):
    found = rows(tester)
    for backend in ("export", "onnx"):
        row = found[f"test_state[torchexport-{backend}]"]
        assert row["cause_kind"] == "unregistered_type", row["message"]
        assert row["likely_cause"].startswith("the argument state is a State, a class pytree does not know")
        assert "torch.export.register_dataclass" in row["likely_cause"]
        keyless = found[f"test_keyless[torchexport-{backend}]"]
        assert keyless["cause_kind"] == "unregistered_type", keyless["message"]
        assert "registered with pytree without keys" in keyless["likely_cause"]


def test_trace_names_the_inputs_it_cannot_take(tester):
    found = rows(tester)
    for test in ("keyless", "nested"):
        row = found[f"test_{test}[torchexport-trace]"]
        assert row["likely_cause"].startswith("trace takes tensors, and tuples, lists or dicts of tensors"), row


def test_trace_names_an_output_that_mixes_tensors_and_tuples(tester):
    row = rows(tester)["test_mixed_output[torchexport-trace]"]
    assert row["cause_kind"] == "unsupported_output", row["message"]
    assert "the model returns a dict mixing tensors and containers" in row["likely_cause"], row["likely_cause"]
