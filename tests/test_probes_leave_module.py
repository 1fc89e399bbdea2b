"""The plugin's own eager calls never change the module the artifacts are made from.

transformers 4.57's output capture wraps submodules' ``forward`` for the length of a call and
unwraps them only when the call returns. The plugin calls eager at sizes the model may reject
(is dim 0 a batch dim?): such a call left the wrappers on eager's module, every export's
copy then called into eager's own parameters, and ViT's trace row carried "Cannot insert a
Tensor that requires grad as a constant" instead of torch's own message. ``Capturing`` below
does what that decorator did, in a few lines (the ViT that showed it cannot be imported here:
its docstrings need transformers' tokenizers package).
"""

from __future__ import annotations

import textwrap

import torch
from helpers import run_with_report
from torch import nn

from pytest_torchexport.reference.eager import Eager, ModelRaised

CAPTURING = textwrap.dedent(
    """
    import pytest
    import torch
    from torch import nn


    class Capturing(nn.Module):
        '''Wraps a submodule's forward to capture its output, and unwraps it only when the call returns.'''

        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(8, 8)

        def forward(self, x):
            original = self.lin.forward
            captured = []

            def capture(*args, **kwargs):
                out = original(*args, **kwargs)
                captured.append(out)
                return out

            self.lin.forward = capture
            if x.shape[0] > 4:
                raise ValueError("at most 4 rows")
            out = self.lin(x)
            del self.lin.forward
            return out


    @pytest.mark.torchexport(backends=["trace"], examples=3)
    def test_capturing():
        Capturing().eval()(torch.randn(2, 8))
    """
)


def test_a_call_at_a_rejected_size_leaves_nothing_on_the_exported_module(tester):
    tester.makepyfile(test_m=CAPTURING)
    result, rows = run_with_report(tester, "-p", "no:cacheprovider")
    row = rows["trace"]
    assert "requires grad" not in row["message"], row["message"]
    assert row["status"] == "pass", row["message"]
    result.assert_outcomes(passed=1)


class Hooked(nn.Module):
    """A call that registers a hook and sets an attribute, then raises half-way."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.lin.register_forward_hook(lambda module, args, out: out * 2)
        self.lin.forward = lambda y: y  # a wrapper left as an instance attribute
        self.calls = getattr(self, "calls", 0) + 1
        if x.shape[0] > 2:
            raise ValueError("at most 2 rows")
        return self.lin(x)


def test_eager_puts_back_hooks_wrappers_and_attributes_after_each_call():
    eager = Eager(Hooked().eval(), "cpu")
    module = eager.module
    wrapped = ("forward" in vars(module.lin), len(module.lin._forward_hooks), hasattr(module, "calls"))
    assert wrapped == (False, 0, False)
    x = torch.randn(2, 4)
    first = eager(((x,)), {}).outputs
    assert ("forward" in vars(module.lin), len(module.lin._forward_hooks), hasattr(module, "calls")) == wrapped
    try:
        eager(((torch.randn(3, 4),)), {})
    except ModelRaised:
        pass
    else:
        raise AssertionError("the call at 3 rows should raise")
    assert ("forward" in vars(module.lin), len(module.lin._forward_hooks), hasattr(module, "calls")) == wrapped
    assert torch.equal(eager(((x,)), {}).outputs, first)  # the same call, the same module: the same outputs
    # A call made without putting back leaves its changes until restore() names and undoes them.
    eager(((x,)), {}, restore=False)
    assert sorted(set(eager.restore())) == ["Hooked.calls", "Linear._forward_hooks", "Linear.forward"]
    assert eager.restore() == []
