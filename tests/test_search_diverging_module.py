"""diverges_at: the first module whose artifact output differs, named on every backend that fails."""

import pytest
from helpers import shared_run

MODELS = """
import pytest
import torch
from torch import nn


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 8)
        self.norm = nn.LayerNorm(8)

    def forward(self, x):
        return self.norm(x + torch.relu(self.lin(x)))


class Gated(nn.Module):
    # A data-dependent branch: trace (and legacy ONNX, which traces) record one side.
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 8)

    def forward(self, x):
        if x.sum() > 0:
            return self.lin(x)
        return -x


class Lowered(nn.Module):
    # Computes differently once exported, as a wrong lowering would: every exporter sees it.
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 8)
        self.act = nn.GELU()

    def forward(self, x):
        y = self.act(self.lin(x))
        if torch.jit.is_scripting():
            return y + 1
        else:
            if torch.jit.is_tracing() or torch.compiler.is_exporting():
                return y + 1
        return y


class Net(nn.Module):
    def __init__(self, special, cls):
        super().__init__()
        self.blocks = nn.ModuleList([cls() if i == special else Block() for i in range(6)])
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return self.head(x)


class Tagger(nn.Module):
    # nn.TransformerEncoder's fast path: with a padding mask eager runs nested tensors and
    # returns zeros at padded positions; exported graphs take the regular path.
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(8, 16)
        layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True, dropout=0.0)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=True)
        self.head = nn.Linear(16, 2)

    def forward(self, x, mask):
        return self.head(self.encoder(self.embed(x), src_key_padding_mask=mask))


@pytest.mark.torchexport(backends=["export", "onnx"])
def test_fast_path():
    torch.manual_seed(0)
    mask = torch.tensor([[False] * 5, [False, False, False, True, True]])
    Tagger().eval()(torch.randn(2, 5, 8), mask)


@pytest.mark.torchexport(backends=["trace", "onnx-legacy"])
def test_gated():
    torch.manual_seed(0)
    Net(4, Gated).eval()(torch.randn(2, 8))


class SeqNet(nn.Module):
    # The same blocks in an nn.Sequential, which is called: the legacy exporter scopes its
    # children /blocks/blocks.4/..., a ModuleList's (only iterated) /blocks.4/...
    def __init__(self, special, cls):
        super().__init__()
        self.blocks = nn.Sequential(*[cls() if i == special else Block() for i in range(6)])
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.blocks(x))


@pytest.mark.torchexport(backends=["trace", "onnx-legacy"])
def test_gated_sequential():
    torch.manual_seed(0)
    SeqNet(4, Gated).eval()(torch.randn(2, 8))


class Scaled(nn.Module):
    # Called with a keyword: legacy ONNX exports it through a positional adapter.
    def __init__(self):
        super().__init__()
        self.net = Net(2, Lowered)

    def forward(self, x, *, scale):
        return self.net(x) * scale


@pytest.mark.torchexport(backends=["onnx-legacy"])
def test_keywords():
    torch.manual_seed(0)
    Scaled().eval()(torch.randn(2, 8), scale=torch.ones(2, 3))


@pytest.mark.torchexport(backends=["trace", "script", "export", "onnx", "onnx-legacy"])
def test_lowered():
    torch.manual_seed(0)
    Net(2, Lowered).eval()(torch.randn(2, 8))


class Glue(nn.Module):
    # The planted op is the parent's own code between blocks.2 and blocks.3: no block computes
    # differently, but in the artifact's own run blocks.3 and what follows get a wrong input.
    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([Block() for _ in range(5)])
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i == 2 and (torch.jit.is_tracing() or torch.compiler.is_exporting()):
                x = x + 1
        return self.head(x)


@pytest.mark.torchexport(backends=["trace", "onnx"])
def test_glue():
    torch.manual_seed(0)
    Glue().eval()(torch.randn(2, 8))
"""


@pytest.fixture
def rows(tester):
    """One session of real exports (14 failing checks), shared by the tests below."""
    return shared_run(tester, MODELS, "--torchexport-seed=1", failed=14)


def test_encoder_fast_path_is_named_where_it_differs(rows):
    # Eager's layers get nested tensors, which no artifact takes: the encoder itself is named.
    for backend in ("export", "onnx"):
        row = rows[("test_fast_path", backend)]
        assert row["status"] == "mismatch", row["message"]
        where = row["diverges_at"]
        assert (where["module"], where["class"]) == ("encoder", "TransformerEncoder"), (backend, where)
        assert "Diverges at: encoder (TransformerEncoder)" in row["message"]


def test_names_the_first_diverging_module_with_the_artifacts_code(rows):
    # The frozen branch in blocks.4: the trace's own code there shows the one path it kept.
    # In a ModuleList or an nn.Sequential alike (the legacy exporter scopes them differently).
    for test, backend in [(t, b) for t in ("test_gated", "test_gated_sequential") for b in ("trace", "onnx-legacy")]:
        row = rows[(test, backend)]
        assert row["status"] == "mismatch", row["message"]
        where = row["diverges_at"]
        assert (where["module"], where["class"]) == ("blocks.4", "Gated"), (test, backend, where)
        assert where["max_abs_err"] > 0.1
        assert "Diverges at: blocks.4 (Gated)" in row["message"]
        assert any(f["kind"] == "diverges_at" and f["where"] == "blocks.4" for f in row["findings"])
    assert "(lin).forward(argument_1" in rows[("test_gated", "trace")]["diverges_at"]["artifact_excerpt"]
    assert "Gemm(" in rows[("test_gated", "onnx-legacy")]["diverges_at"]["artifact_excerpt"]
    assert "/blocks/blocks.4/" in rows[("test_gated_sequential", "onnx-legacy")]["diverges_at"]["artifact_excerpt"]

    # A lowering difference inside blocks.2, on every backend; upstream blocks agree.
    excerpts = {
        "trace": "torch.add",
        "script": "torch.add(y, 1)",
        "export": "aten.add.Tensor",
        "onnx": "= Add(",
        "onnx-legacy": "/blocks.2/Add_output_0 = Add(",
    }
    for backend, code in excerpts.items():
        row = rows[("test_lowered", backend)]
        where = row["diverges_at"]
        assert (where["module"], where["class"]) == ("blocks.2", "Lowered"), (backend, where)
        assert where["max_abs_err"] == pytest.approx(1.0, abs=1e-4)
        assert code in where["artifact_excerpt"], (backend, where["artifact_excerpt"])
        assert code.split("(")[0] in row["message"]  # a few lines of the excerpt in the message
        assert "Likely cause: the difference starts in blocks.2 (Lowered)" in row["message"]
        assert [w["module"] for w in where["walked"]] == ["blocks.2"]
        assert where["method"] == ("in-graph" if backend.startswith("onnx") else "isolated")
        assert row["timings"]["localize_s"] > 0  # timed; its cost is what it walked (below), not the clock
        # The planted op's module introduces the error, in isolation and in-graph.
        assert where["introduced"] is True, (backend, where)
        assert "introduced here" in row["message"]

    # Through an adapter (keywords): the names are still the user's.
    assert rows[("test_keywords", "onnx-legacy")]["diverges_at"]["module"] == "net.blocks.2"


def test_introduced_at_the_planted_op_carried_downstream(rows):
    # Every block computes as eager does; the parent's own code adds 1 after blocks.2.
    # Run in isolation (trace), no block differs on eager's input: the top level's own code
    # introduces it. In ONNX's own run, blocks.3 and its first layer get the wrong input: the
    # first module that differs there only carries the error, which enters in the top level's code.
    trace = rows[("test_glue", "trace")]["diverges_at"]
    assert (trace["module"], trace["method"], trace["introduced"]) == ("", "isolated", True)
    onnx = rows[("test_glue", "onnx")]
    where = onnx["diverges_at"]
    assert where["module"].startswith("blocks.3") and where["method"] == "in-graph", where
    assert where["introduced"] is False
    assert where["input_max_abs_err"] == pytest.approx(1.0, abs=1e-4)
    assert where["enters"] == {"in": "", "before": "blocks.3"}
    assert "carried from upstream, not introduced here" in onnx["message"]
    assert "the error enters in the top-level module's own code before blocks.3" in onnx["message"]
    # Upstream of the planted op, the blocks agree: blocks.0-2 are walked past, not entered.
    assert not any(w["module"].startswith(("blocks.0", "blocks.1", "blocks.2")) for w in where["walked"])


@pytest.mark.parametrize(
    ("path", "names", "qualified"),
    [
        ("/blocks.4/lin/Gemm", (), "blocks.4.lin"),  # a ModuleList child: the list is never called
        ("/blocks/blocks.4/lin/Gemm", (), "blocks.4.lin"),  # an nn.Sequential child
        ("/stages/stages.0/stages.0.0/body/body.1/Relu", (), "stages.0.0.body.1"),
        ("/layer1/layer1.0/conv1/Conv", (), "layer1.0.conv1"),
        ("/body/body/Relu", (), "body.body"),
        ("/head/Gemm", (), "head"),
        ("/Add", (), ""),
        # A Sequential `blocks` holding an uncalled ModuleList `blocks`: the names decide.
        ("/blocks/blocks.4/Neg", ("", "blocks", "blocks.blocks", "blocks.blocks.4"), "blocks.blocks.4"),
    ],
)
def test_legacy_scope_names(path, names, qualified):
    from types import SimpleNamespace

    from pytest_torchexport.search.localize import node_module

    assert node_module(SimpleNamespace(name=path, metadata_props=[]), names) == qualified
