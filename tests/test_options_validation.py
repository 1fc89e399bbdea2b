"""Option validation: every bad value names the option and lists what is valid."""

import pytest

from pytest_torchexport.errors import InvalidArgument
from pytest_torchexport.options import DEFAULT_BACKENDS, Options


def test_default_options():
    o = Options.build()
    assert o.backends == DEFAULT_BACKENDS == ("trace", "script", "onnx", "export")
    assert (o.examples, o.roundtrip, o.special_values, o.vary_scalars) == (25, True, False, False)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (
            {"backend": "trace"},
            "unknown torchexport option(s) 'backend' (did you mean 'backends'?); valid options: "
            "backends, devices, examples",
        ),
        ({"backends": "trace,onxx"}, "unknown torchexport backend(s) 'onxx' (did you mean 'onnx'?); valid backends:"),
        ({"backends": ["trt"]}, "unknown torchexport backend(s) 'trt'; valid backends: trace, script, onnx, export"),
        ({"backends": []}, "torchexport backends= is empty"),
        ({"devices": "cpu,tpu"}, "unknown torchexport device(s) 'tpu'; valid devices: cpu, cuda, auto"),
        ({"examples": 0}, "examples= takes an integer >= 1, got 0"),
        ({"rtol": -1}, "rtol= takes a number >= 0 or {backend: number}, got -1"),
        ({"atol": {"nope": 1}}, "atol= names unknown backend(s) 'nope'"),
        ({"xfail": "trace"}, 'xfail= takes {backend: "reason"}'),
        ({"dims": {"batch": (4, 2)}}, "dims= takes {\"name\": (min, max)} with 0 <= min <= max, got 'batch': (4, 2)"),
        ({"dynamic": {"x": {"0": "batch"}}}, "dynamic= maps a dim index (int) to a dim name (str)"),
        ({"roundtrip": "yes"}, "roundtrip= takes True or False"),
        ({"compare": 3}, "compare= takes a callable(expected, actual)"),
        ({"module": 3}, "module= takes a class name (str)"),
    ],
)
def test_bad_values_name_the_option_and_the_valid_ones(given, message):
    with pytest.raises(InvalidArgument) as info:
        Options.build(**given)
    assert message in str(info.value)
    assert isinstance(info.value, TypeError)


def test_comma_separated_names_and_per_backend_tolerances():
    o = Options.build(backends="trace, onnx", rtol={"onnx": 1e-3}, atol=1e-4)
    assert o.backends == ("trace", "onnx")
    assert o.tolerance("rtol", "onnx") == 1e-3 and o.tolerance("rtol", "trace") is None
    assert o.tolerance("atol", "trace") == 1e-4
