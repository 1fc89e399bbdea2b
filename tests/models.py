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
