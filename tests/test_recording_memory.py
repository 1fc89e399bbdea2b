"""The recorder keeps what it needs of a call the model raised on (one line of text), never the
exception: an exception holds its traceback, the traceback every frame, and the frames the
test's tensors. Suites that call models inside ``pytest.raises`` would otherwise keep all of it
alive for the rest of the session."""

import gc
import weakref

import pytest
import torch
from models import MLP
from torch import nn


class Sentinel:
    """Stands for a large tensor that only the raising call's frames refer to."""


class Refuses(nn.Module):
    def forward(self, x):
        held = Sentinel()  # a local of the frame the traceback keeps
        self.refs.append(weakref.ref(held))
        raise ValueError(f"bad input of shape {tuple(x.shape)}")


def test_raised_calls_keep_nothing_alive():
    from pytest_torchexport.recording.recorder import Recorder

    model = Refuses()
    model.refs = []
    with Recorder() as recorder:
        for _ in range(50):
            with pytest.raises(ValueError):
                model(torch.zeros(2, 3))
    said = [call.raised for call in recorder.recording.calls if getattr(call, "raised", None)]
    assert said and said[0] == "ValueError: bad input of shape (2, 3)"
    gc.collect()
    alive = [ref for ref in model.refs if ref() is not None]
    assert len(model.refs) == 50
    assert alive == [], f"{len(alive)} of 50 raising calls' frames are still held after the recording"


class Outer(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x) * 2


def _copied(recording):
    """Each call's module class and whether a copy of it was taken."""
    return [(type(call.live).__name__, call.module is not call.live) for call in recording.calls]


def test_only_the_module_its_check_picks_is_copied():
    # A test that compares its model with a copy of it (a
    # reloaded one) checks the model: the second module is not copied.
    import copy

    from pytest_torchexport.recording.recorder import Recorder

    model = MLP().eval()
    with Recorder() as recorder:
        model(torch.randn(2, 8))
        copy.deepcopy(model)(torch.randn(2, 8))
    assert _copied(recorder.recording) == [("MLP", True), ("MLP", False)]
    assert recorder.recording.pick(None).live is model
    # module= names the one to check: only modules of that name are copied
    with Recorder(module="Outer") as recorder:
        model(torch.randn(2, 8))
        Outer(MLP()).eval()(torch.randn(2, 8))
    assert _copied(recorder.recording) == [("MLP", False), ("Outer", True)]
    # one that contains the first may be the outermost: copied
    with Recorder() as recorder:
        model(torch.randn(2, 8))
        Outer(model).eval()(torch.randn(2, 8))
    assert _copied(recorder.recording) == [("MLP", True), ("Outer", True)]
    assert type(recorder.recording.pick(None).live).__name__ == "Outer"


def test_a_module_picked_after_all_is_checked_live_with_a_fingerprint():
    # The first module, then another, then one that contains the first: the second is picked
    # (the first is inside the third), uncopied: kept live with a fingerprint, as a module past
    # the copy budget, so a change after its call is said.
    from pytest_torchexport.recording.recorder import Recorder

    first, second = MLP().eval(), MLP().eval()
    with Recorder() as recorder:
        first(torch.randn(2, 8))
        second(torch.randn(2, 8))
        Outer(first).eval()(torch.randn(2, 8))
    picked = recorder.recording.pick(None)
    assert picked.live is second and picked.module is second and picked.fingerprint is not None
