"""``python -m pytest_torchexport.replay FILE`` runs no code the file carries.

The project's own repro files (a plain module, one with constructor arguments, shared and tied
submodules, an LSTM) are read with ``torch.load(weights_only=True)`` and the module rebuilt from
its importable classes: they replay without ``--allow-pickle``. A file carrying a pickle
payload is refused, the payload never runs, and the message says why the file needs unpickling;
``--allow-pickle`` unpickles only when asked.
"""

import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from models import Gate, source

from pytest_torchexport import ExportMismatch, check

# After models.Gate (source(Gate) writes the imports these need too).
MODELS = """
    class Block(nn.Module):
        def __init__(self, width, scale):
            super().__init__()
            self.lin = nn.Linear(width, width)
            self.scale = scale
            self.cfg = {"dims": (width, width), "act": "relu"}
            self.register_buffer("shift", torch.full((width,), 0.5), persistent=False)

        def forward(self, x):
            return torch.relu(self.lin(x)) * self.scale + self.shift


    class Net(nn.Module):
        \"\"\"Constructor arguments, a shared block, tied weights, an LSTM, and a frozen branch.\"\"\"

        def __init__(self, width):
            super().__init__()
            self.block = Block(width, 0.5)
            self.again = self.block
            self.rnn = nn.LSTM(width, width, batch_first=True)
            self.emb = nn.Embedding(5, width)
            self.head = nn.Linear(width, 5, bias=False)
            self.head.weight = self.emb.weight

        def forward(self, x):
            y, _ = self.rnn(self.again(self.block(x)))
            if x.sum() > 0:
                return self.head(y)
            return -self.head(y)


    class Hooked(nn.Module):
        \"\"\"An attribute that is a function: only unpickling rebuilds it.\"\"\"

        def __init__(self):
            super().__init__()
            self.act = torch.tanh

        def forward(self, x):
            if x.sum() > 0:
                return self.act(x) * 2
            return self.act(x)
"""


@pytest.fixture
def models(tmp_path, monkeypatch):
    (tmp_path / "safe_models.py").write_text(source(Gate) + "\n\n" + textwrap.dedent(MODELS))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    import safe_models

    yield safe_models
    sys.modules.pop("safe_models", None)


def _repro(module, args) -> str:
    with pytest.raises(ExportMismatch) as info:
        check(module, args, backends=["trace"], examples=8, repro_dir=f"repro-{type(module).__name__}", seed=0)
    return info.value.report.results[0].failing_example["repro"]


def _replay(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    # A fresh interpreter, as a user runs it: nothing of the test's process is imported there.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])  # this checkout's plugin, not the models' folder
    return subprocess.run(
        [sys.executable, "-m", "pytest_torchexport", "replay", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_projects_own_repro_files_replay_without_pickle(models, tmp_path):
    gate = _repro(models.Gate().eval(), (torch.ones(3, 4),))
    net = _repro(models.Net(4).eval(), (torch.ones(2, 3, 4),))
    for repro in (gate, net):
        data = torch.load(repro, weights_only=True)  # the whole file, without unpickling anything
        assert (
            data["format"] == 2 and data["pickle"] is None and data["module_tree"]["class"].startswith("safe_models:")
        )
    elsewhere = tmp_path / "elsewhere"  # run from another folder: the models' folder comes from the file
    elsewhere.mkdir()
    out = _replay(elsewhere, str(tmp_path / net))
    assert out.returncode == 1, out.stdout + out.stderr
    assert "still failing: outputs differ from eager" in out.stdout and "unpickling" not in out.stdout
    out = _replay(tmp_path, gate)
    assert out.returncode == 1 and "still failing" in out.stdout, out.stdout + out.stderr


def test_a_module_only_pickle_rebuilds_is_refused_with_the_reason_then_replayed_when_allowed(models, tmp_path):
    repro = _repro(models.Hooked().eval(), (torch.ones(3, 4),))
    data = torch.load(repro, weights_only=True)
    assert data["module_tree"] is None and isinstance(data["pickle"], bytes)
    refused = _replay(tmp_path, repro)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert refused.stdout.splitlines()[0] == (
        f"cannot replay {repro} without unpickling it: the module holds Hooked.act, a "
        "builtins.builtin_function_or_method (only unpickling rebuilds one)."
    )
    assert "Unpickling runs whatever code the file names" in refused.stdout
    assert f"python -m pytest_torchexport replay {repro} --allow-pickle" in refused.stdout
    allowed = _replay(tmp_path, repro, "--allow-pickle")
    assert allowed.returncode == 1, allowed.stdout + allowed.stderr
    assert allowed.stdout.startswith(f"unpickling part of {repro} as --allow-pickle asks: the module holds Hooked.act")
    assert "still failing" in allowed.stdout


class Payload:
    """What a hostile file carries: unpickling it creates a file (it could run anything)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_repro_file_carrying_a_pickle_payload_is_refused_and_never_runs(models, tmp_path):
    repro = _repro(models.Gate().eval(), (torch.ones(3, 4),))
    data = torch.load(repro, weights_only=True)
    marker = tmp_path / "pwned"

    # The payload in the file itself, as an input.
    outer = tmp_path / "outer.pt"
    torch.save({**data, "failing_inputs": (Payload(marker),)}, outer)
    refused = _replay(tmp_path, str(outer))
    assert refused.returncode == 2 and not marker.exists(), refused.stdout + refused.stderr
    assert refused.stdout.startswith(
        f"cannot replay {outer} without unpickling it: it holds Python objects beyond tensors and plain values ("
    )
    assert "Traceback" not in refused.stderr

    # The payload in the nested blob, with a reason written to reassure: refused all the same.
    buffer = io.BytesIO()
    torch.save({"module": Payload(marker)}, buffer)
    nested = tmp_path / "nested.pt"
    torch.save({**data, "pickle": buffer.getvalue(), "pickle_reason": "nothing to worry about\x1b[2J"}, nested)
    refused = _replay(tmp_path, str(nested))
    assert refused.returncode == 2 and not marker.exists(), refused.stdout + refused.stderr
    assert "without unpickling it: nothing to worry about?[2J." in refused.stdout  # printed as plain text

    # A file of the format before this one pickled the module: refused too.
    old = tmp_path / "format1.pt"
    torch.save({**data, "format": 1, "module": buffer.getvalue()}, old)
    refused = _replay(tmp_path, str(old))
    assert refused.returncode == 2 and not marker.exists()
    assert "it was written by an earlier version of the plugin (format 1), which pickled the module" in refused.stdout

    # Asked to, it unpickles: which is what the refusal protects against.
    _replay(tmp_path, str(nested), "--allow-pickle")
    assert marker.exists()


def test_a_tree_that_names_other_modules_or_classes_is_refused(models, tmp_path):
    repro = _repro(models.Gate().eval(), (torch.ones(3, 4),))
    data = torch.load(repro, weights_only=True)
    for name, words in (
        ("antigravity:Fly", "whose module importing the model's module safe_models did not import"),
        ("safe_models:torch", "which is not an nn.Module class"),
        ("os.path; import os:X", "which is not of the form package.module:Class"),
    ):
        tree = {**data["module_tree"], "class": name}
        hostile = tmp_path / "hostile.pt"
        torch.save({**data, "module_tree": tree}, hostile)
        out = _replay(tmp_path, str(hostile))
        assert out.returncode == 2 and words in out.stdout, out.stdout + out.stderr


def test_garbage_is_not_a_repro_file(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"\x80\x02not a torch file")
    out = _replay(tmp_path, "junk.pt")
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stdout + out.stderr
    assert out.stdout.startswith("cannot replay junk.pt")


def test_inputs_only_pickle_rebuilds_are_refused_with_their_name(models, tmp_path):
    """A repro file of a model called with a non-tensor, non-plain argument: the input is pickled."""
    from pytest_torchexport.search.repro import save

    path = tmp_path / "odd.pt"
    save(
        path,
        module=models.Gate().eval(),
        backend="trace",
        device="cpu",
        export_inputs=((torch.ones(3, 4),), {}),
        failing_inputs=(torch.ones(1, 4), Payload(tmp_path / "never")),
        failing_kwargs={},
        options={"dims": {}, "dynamic": None, "rtol": 1e-5, "atol": 1e-5},
        test="t",
        artifact_dir=None,
    )
    data = torch.load(path, weights_only=True)
    assert data["failing_inputs"] is None and data["module_tree"] is not None
    assert data["pickle_reason"] == f"failing_inputs[1], a {__name__}.Payload (only unpickling rebuilds one)"
    out = _replay(tmp_path, str(path))
    assert out.returncode == 2 and "without unpickling it: failing_inputs[1], a" in out.stdout, out.stdout + out.stderr
    assert not (tmp_path / "never").exists()
