"""The commands' flags agree with each other: -o writes the report, --backends names backends."""

import pytest

from pytest_torchexport.__main__ import build_parser
from pytest_torchexport.glue import command


def test_check_takes_o_for_its_report_as_merge_and_verify_do():
    for argv in (
        ["check", "timm:resnet18", "-o", "a.json", "-o", "a.md"],
        ["check", "timm:resnet18", "--report=a.json", "--report=a.md"],
    ):
        args = build_parser().parse_args(argv)
        assert args.report == ["a.json", "a.md"]
        assert {"--torchexport-report=a.json", "--torchexport-report=a.md"} <= set(command.pytest_args(args))
    assert build_parser().parse_args(["merge", "x.json", "-o", "out.md"]).output == "out.md"
    assert build_parser().parse_args(["verify", "bundles", "-o", "v.md"]).output == ["v.md"]


def test_verify_takes_backends_as_check_does():
    assert build_parser().parse_args(["verify", "b", "--backends", "onnx,trace"]).backend == ["onnx,trace"]
    assert build_parser().parse_args(["verify", "b", "--backend", "onnx"]).backend == ["onnx"]


def test_the_top_level_help_names_every_kind_of_model_spec():
    text = build_parser().format_help()
    for prefix in ("timm:NAME", "torchvision:NAME", "transformers:NAME", "pkg.module:Factory"):
        assert prefix in text, prefix


def test_a_model_named_on_the_command_line_gets_remedies_in_flags():
    import torch
    from models import Gate

    from pytest_torchexport import ExportMismatch, check
    from pytest_torchexport.glue.wording import in_flag_words

    with pytest.raises(ExportMismatch) as raised:
        check(Gate(), (torch.ones(3, 4),), backends=["trace", "export"], examples=3)
    report = raised.value.report
    messages = [r.message for r in report.results]
    assert all("xfail={" in m for m in messages) and any("backends=[...]" in m for m in messages), messages
    for under_check, backends, baseline in (
        (True, "drop it with --backends", "(--baseline FILE"),
        (False, "drop it with --torchexport-backends", "(--torchexport-baseline=FILE"),
    ):
        said = [in_flag_words(m, under_check) for m in messages]
        assert not any("xfail=" in m or "backends=[" in m for m in said), said
        assert any(backends in m for m in said) and all(baseline in m for m in said), said


def test_the_inputs_remedy_reads_as_the_command_it_is_shown_under(tmp_path):
    import torch

    from pytest_torchexport.glue.wording import in_flag_words
    from pytest_torchexport.recording.models import ModelSpec, remedy

    model = torch.nn.Sequential(torch.nn.Linear(10, 4))
    (tmp_path / "mlp.py").write_text(
        "import torch\n\ndef mlp():\n    return torch.nn.Sequential(torch.nn.Linear(10, 4))\n"
    )
    said = remedy(model, ModelSpec.parse("mlp.py:mlp", tmp_path))
    assert "--torchexport-model-inputs='input: float32[batch=1..8, 10]'" in said  # sized from the first layer
    assert "python -m pytest_torchexport check mlp.py:mlp --inputs 'input: float32[batch=1..8, 10]'" in in_flag_words(
        said, True
    )
    assert in_flag_words(said, False) == said
