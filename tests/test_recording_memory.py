"""The recorder keeps what it needs of a call the model raised on (one line of text), never the
exception: an exception holds its traceback, the traceback every frame, and the frames the
test's tensors. Suites that call models inside ``pytest.raises`` would otherwise keep all of it
alive for the rest of the session."""

import gc
import weakref

import pytest
import torch
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
