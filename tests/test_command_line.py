"""The commands' flags agree with each other: -o writes the report, --backends names backends."""

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
