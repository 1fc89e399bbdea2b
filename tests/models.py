"""Tiny modules, each built to reach one behaviour of the engine."""

import torch
from torch import nn


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))

    def forward(self, x):
        return self.net(x)


class Gate(nn.Module):
    """A data-dependent branch: trace freezes it, export refuses it, script keeps it."""

    def forward(self, x):
        if x.sum() > 0:
            return x * 2
        return x - 1


class BakedReshape(nn.Module):
    """A size read as a Python int: trace bakes the batch size in."""

    def forward(self, x):
        return x.reshape(int(x.shape[0]), -1) * 2


class Noisy(nn.Module):
    def forward(self, x):
        return x + torch.randn_like(x)


class MutatesInput(nn.Module):
    def forward(self, x):
        x.add_(1)
        return x * 2


class Counter(nn.Module):
    """Updates a buffer on every call; the output depends on it."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("calls", torch.zeros(1))

    def forward(self, x):
        self.calls += 1
        return x * self.calls


class Zeros(nn.Module):
    def forward(self, x):
        return x * 0


class Nested(nn.Module):
    """Dict, tuple and list outputs: comparison paths like ['logits'][0]."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        y = self.lin(x)
        # Same value type under every key: torch.jit.trace rejects mixed dict values.
        return {"logits": (y, y.sum(-1)), "hidden": (y.relu(), y.tanh())}


class WithDropout(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        return self.drop(self.lin(x))


class SizeOne(nn.Module):
    """Branches on a batch of 1: trace and torch.export both keep only the other path."""

    def forward(self, x):
        if x.shape[0] == 1:
            return x * 0
        return x * 2


class LoopOverSize(nn.Module):
    def forward(self, x):
        out = x[:, 0]
        for i in range(1, x.size(1)):
            out = out + x[:, i]
        return out


class FloatOfSize(nn.Module):
    def forward(self, x):
        return x / float(x.shape[1])


class ItemScale(nn.Module):
    def forward(self, x):
        return x / x.abs().max().item()


class PoolNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d((2, 2))

    def forward(self, x):
        return self.pool(self.conv(x)).flatten(1)


class Scaled(nn.Module):
    def forward(self, x, factor: int):
        return x * factor


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Linear(8 * 4 * 4, 5)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


class EmbeddingBag(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(50, 16)
        self.out = nn.Linear(16, 4)

    def forward(self, ids):
        return self.out(self.emb(ids).mean(1))


class Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
        self.norm = nn.LayerNorm(16)

    def forward(self, x, mask):
        y, _ = self.attn(x, x, x, key_padding_mask=mask, need_weights=False)
        return self.norm(x + y)


class Truncate(nn.Module):
    """Long sequences are cut to 8: torch.export proves only seq <= 8; trace freezes the if."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)

    def forward(self, x):
        if x.shape[1] > 8:
            x = x[:, :8]
        return self.proj(x).mean(1)


def source(*classes: type) -> str:
    """These modules as the start of a test file for pytester sessions, with the imports
    they and a marked test need. Defined here, below the modules, so that the line numbers
    tests read in this file stay put."""
    import inspect

    return "\nimport pytest\nimport torch\nfrom torch import nn\n\n\n" + "\n\n".join(
        inspect.getsource(c) for c in classes
    )


def mlp_and_gate_source() -> str:
    """MLP and Gate as the source of a test file (test_marker_fixture_and_report, test_kept_artifacts, helpers.mlp_test)."""
    return source(MLP, Gate)


class ManualLayerNorm(nn.Module):
    # LayerNorm written out, as in BERT's and GPT-2's original code. onnxruntime fuses the
    # pattern into one LayerNormalization kernel from ORT_ENABLE_BASIC on; at an input of
    # float32's largest value the written-out form overflows to NaN (in eager and in
    # onnxruntime at ORT_DISABLE_ALL alike) and the fused kernel returns 0.
    def __init__(self, d=8):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.bias = nn.Parameter(torch.zeros(d))

    def forward(self, x):
        mu = x.mean(-1, keepdim=True)
        var = (x - mu).pow(2).mean(-1, keepdim=True)
        return (x - mu) / torch.sqrt(var + 1e-5) * self.weight + self.bias


def register_twice(namespace: str):
    """Registers the custom op ``{namespace}::twice`` (x * 2) in this process only: a process
    that never ran this lacks it when it loads an artifact that calls it."""

    @torch.library.custom_op(f"{namespace}::twice", mutates_args=())
    def twice(x: torch.Tensor) -> torch.Tensor:
        return x * 2

    @twice.register_fake
    def _(x):
        return torch.empty_like(x)

    return twice


def fresh_process_lacks(namespace: str) -> str:
    """The start of a file whose artifacts a process that never imported it cannot load alone:
    ``WithOp`` calls the custom op ``{namespace}::twice`` this file registers, ``Tree`` returns
    the pytree type ``{namespace}.Pair`` it registers (test_standalone_load, torch_messages)."""
    import inspect
    import textwrap

    return (
        textwrap.dedent(
            """
        import dataclasses

        import pytest
        import torch
        import torch.utils._pytree as pytree


        """
        )
        + inspect.getsource(register_twice)
        + textwrap.dedent(
            f"""

        register_twice({namespace!r})


        class WithOp(torch.nn.Module):
            def forward(self, x):
                return torch.ops.{namespace}.twice(x) + 1


        @dataclasses.dataclass
        class Pair:
            a: torch.Tensor
            b: torch.Tensor


        pytree.register_dataclass(Pair, serialized_type_name="{namespace}.Pair")


        class Tree(torch.nn.Module):
            def forward(self, x):
                return Pair(x + 1, x * 3)
        """
        )
    )


class Norm(nn.Module):
    """LayerNorm over values at 3e4: computing the mean rounds, in eager as in onnxruntime, differently."""

    def __init__(self):
        super().__init__()
        self.norm = nn.LayerNorm(256)
        self.fc = nn.Linear(256, 8)

    def forward(self, x):
        return self.fc(nn.functional.silu(self.norm(x)))


class GRUClassifier(torch.nn.Module):
    """A bidirectional GRU over token ids: torch.onnx captures it with its own while-loop
    decompositions (test_isolation_crashes, test_shared_capture write its source into their files)."""

    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(50, 16)
        self.gru = torch.nn.GRU(16, 16, batch_first=True, bidirectional=True)
        self.head = torch.nn.Linear(32, 3)

    def forward(self, ids):
        h, _ = self.gru(self.emb(ids))
        return self.head(h.mean(1))
