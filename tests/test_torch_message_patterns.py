"""Every pattern the plugin reads from torch's messages holds on each torch CI runs.

The plugin reads torch's words in a few places: a TracerWarning names a frozen branch or a
baked size (results/explain.py), an exporter's error names its kind, the specialized dim and
the part a person reads (explain.py, stages/exporting.py, stages/static_sizes.py), a load in
a fresh process names the op, class or pytree type it reached for (isolation/loader.py), and
torch's deprecation of TorchScript is said once a session (_compat.py). Each is checked twice:

- on the texts torch 2.13.0, 2.14.1 and 2.15.0 really wrote (``RECORDED``, produced by
  tests/torch_messages.py with each version: run it with another torch to add one), so a
  pattern is held to every version whichever torch runs the suite;
- live: the same producers make the installed torch say it now, so a torch that rewords a
  message fails here first (the compatibility stage runs this file on each version).

torch 2.15.0 reworded one: "Deserializing X in pytree is not registered." became "Deserializing
X in pytree failed because the serialized type is not registered in this process. ...", which
the loader's pattern missed (the finding no longer named the type).

Needles no torch from 2.13.0 to 2.15.0 writes (searched in its Python and C++ strings), kept
for the words they may come back in and listed in ``NOT_WRITTEN`` so none goes unexamined:
"""

import re
import types
import warnings

import pytest
import torch
from torch_messages import PRODUCERS

from pytest_torchexport import _compat
from pytest_torchexport.isolation import loader
from pytest_torchexport.results import explain
from pytest_torchexport.stages import exporting

pytestmark = pytest.mark.torch_compat

VERSIONS = ("2.13.0", "2.14.1", "2.15.0")

# Produced by tests/torch_messages.py on each version (paths made relative; the pickle's module path elided).
RECORDED = {
    "tracer_python_boolean": {
        (
            "2.13.0",
            "2.14.1",
            "2.15.0",
        ): "Converting a tensor to a Python boolean might cause the trace to be incorrect. We can't record the data flow of Python values, so this value will be treated as a constant in the future. This means that the trace might not generalize to other inputs!",
    },
    "tracer_iterating": {
        (
            "2.13.0",
            "2.14.1",
            "2.15.0",
        ): "Iterating over a tensor might cause the trace to be incorrect. Passing a tensor of different shape won't change the number of iterations executed (and might lead to errors or silently give incorrect results).",
    },
    "tracer_python_integer": {
        (
            "2.13.0",
            "2.14.1",
            "2.15.0",
        ): "Converting a tensor to a Python integer might cause the trace to be incorrect. We can't record the data flow of Python values, so this value will be treated as a constant in the future. This means that the trace might not generalize to other inputs!",
    },
    "tracer_python_float": {
        (
            "2.13.0",
            "2.14.1",
            "2.15.0",
        ): "Converting a tensor to a Python float might cause the trace to be incorrect. We can't record the data flow of Python values, so this value will be treated as a constant in the future. This means that the trace might not generalize to other inputs!",
    },
    "tracer_python_number": {
        (
            "2.13.0",
            "2.14.1",
            "2.15.0",
        ): "Converting a tensor to a Python number might cause the trace to be incorrect. We can't record the data flow of Python values, so this value will be treated as a constant in the future. This means that the trace might not generalize to other inputs!",
    },
    "tracer_constant": {
        (
            "2.13.0",
            "2.14.1",
            "2.15.0",
        ): "torch.tensor results are registered as constants in the trace. You can safely ignore this warning if you use this function to create tensors out of constant variables that would be the same every time you call this function. In any other case, this might cause the trace to be incorrect.",
    },
    "jit_deprecation": {
        (
            "2.13.0",
        ): "DeprecationWarning: `torch.jit.trace` is deprecated. Please switch to `torch.compile` or `torch.export`.",
        (
            "2.14.1",
            "2.15.0",
        ): "FutureWarning: `torch.jit.trace` is deprecated. Please switch to `torch.compile` or `torch.export`.",
    },
    "trace_non_tensor_output": {
        (
            "2.13.0",
            "2.14.1",
            "2.15.0",
        ): "RuntimeError: Only tensors, lists, tuples of tensors, or dictionary of tensors can be output from traced functions",
    },
    "export_data_dependent": {
        (
            "2.13.0",
        ): 'GuardOnDataDependentSymNode: Could not guard on data-dependent expression Eq(u0, 1) (unhinted: Eq(u0, 1)).  (Size-like symbols: none)\n\nconsider using data-dependent friendly APIs such as guard_or_false, guard_or_true and statically_known_true.\nCaused by: (_export/non_strict_utils.py:1205 in __torch_function__)\nFor more information, run with TORCH_LOGS="dynamic"\nFor extended logs when we create symbols, also add TORCHDYNAMO_EXTENDED_DEBUG_CREATE_SYMBOL="u0"\nIf you suspect the guard was triggered from C++, add TORCHDYNAMO_EXTENDED_DEBUG_CPP=1\nFor more debugging help, see https://docs.google.com/document/d/1HSuTTVvYH1pTew89Rtpeu84Ht3nQEFTYhAX3Ypa_xJs/edit?usp=sharing\n\nFor C++ stack trace, run with TORCHDYNAMO_EXTENDED_DEBUG_CPP=1\n\nThe following call raised this error:\n  File "tests/torch_messages.py", line 63, in forward\n    if x.sum() > 0:\n\n\nThe error above occurred when calling torch.export.export. If you would like to view some more information about this error, and get a list of all other errors that may occur in your export call, you can replace your `export()` call with `draft_export()`.',
        (
            "2.14.1",
        ): 'GuardOnDataDependentSymNode: Could not guard on data-dependent expression Eq(u0, 1) (unhinted: Eq(u0, 1)).  (Size-like symbols: none)\n\nconsider using data-dependent friendly APIs such as guard_or_false, guard_or_true and statically_known_true.\nCaused by: (_export/non_strict_utils.py:1377 in __torch_function__)\nFor more information, run with TORCH_LOGS="dynamic"\nFor extended logs when we create symbols, also add TORCHDYNAMO_EXTENDED_DEBUG_CREATE_SYMBOL="u0"\nIf you suspect the guard was triggered from C++, add TORCHDYNAMO_EXTENDED_DEBUG_CPP=1\nFor more debugging help, see https://docs.google.com/document/d/1HSuTTVvYH1pTew89Rtpeu84Ht3nQEFTYhAX3Ypa_xJs/edit?usp=sharing\n\nFor C++ stack trace, run with TORCHDYNAMO_EXTENDED_DEBUG_CPP=1\n\nThe following call raised this error:\n  File "tests/torch_messages.py", line 63, in forward\n    if x.sum() > 0:\n\n\nThe error above occurred when calling torch.export.export. If you would like to view some more information about this error, and get a list of all other errors that may occur in your export call, you can replace your `export()` call with `draft_export()`.',
        (
            "2.15.0",
        ): 'GuardOnDataDependentSymNode: Could not guard on data-dependent expression Eq(u0, 1) (unhinted: Eq(u0, 1)).  (Size-like symbols: none)\n\nconsider using data-dependent friendly APIs such as guard_or_false, guard_or_true and statically_known_true. If this was caused by Python `not` on a symbolic boolean, use torch.sym_not() or an equivalent comparison instead; Python `not` cannot be overloaded outside Dynamo bytecode tracing.\nCaused by: (_export/non_strict_utils.py:1410 in __torch_function__)\nFor more information, run with TORCH_LOGS="dynamic"\nFor extended logs when we create symbols, also add TORCHDYNAMO_EXTENDED_DEBUG_CREATE_SYMBOL="u0"\nIf you suspect the guard was triggered from C++, add TORCHDYNAMO_EXTENDED_DEBUG_CPP=1\nFor more debugging help, see https://docs.google.com/document/d/1HSuTTVvYH1pTew89Rtpeu84Ht3nQEFTYhAX3Ypa_xJs/edit?usp=sharing\n\nFor C++ stack trace, run with TORCHDYNAMO_EXTENDED_DEBUG_CPP=1\n\nThe following call raised this error:\n  File "tests/torch_messages.py", line 63, in forward\n    if x.sum() > 0:\n\n\nThe error above occurred when calling torch.export.export. If you would like to view some more information about this error, and get a list of all other errors that may occur in your export call, you can replace your `export()` call with `draft_export()`.',
    },
    "export_constraints_violated": {
        (
            "2.13.0",
            "2.14.1",
            "2.15.0",
        ): "UserError: Constraints violated (batch)! For more information, run with TORCH_LOGS=\"+dynamic\".\n  - You marked batch as dynamic but your code specialized it to be a constant (4). If you're using mark_dynamic, either remove it or use maybe_mark_dynamic. If you're using Dim.DYNAMIC, replace it with either Dim.STATIC or Dim.AUTO.\nSuggested fixes:\n  batch = 4\n\nThe error above occurred when calling torch.export.export. If you would like to view some more information about this error, and get a list of all other errors that may occur in your export call, you can replace your `export()` call with `draft_export()`.",
    },
    "script_expected_type": {
        (
            "2.13.0",
            "2.14.1",
            "2.15.0",
        ): "RuntimeError: \n\nprim::id(AnyClassType? x) -> int:\nExpected a value of type 'Optional[AnyClassType]' for argument 'x' but instead found type 'Tensor (inferred)'.\nInferred the value for argument 'x' to be of type 'Tensor' because it was not annotated with an explicit type.\n:\n  File \"tests/torch_messages.py\", line 166\n    def forward(self, x):\n        return x * id(x)\n                   ~~ <--- HERE\n",
    },
    "script_undefined_value": {
        (
            "2.13.0",
            "2.14.1",
            "2.15.0",
        ): 'RuntimeError: \nundefined value not_defined_anywhere:\n  File "tests/torch_messages.py", line 171\n    def forward(self, x):\n        return x + not_defined_anywhere  # noqa: F821 - what TorchScript refuses\n                   ~~~~~~~~~~~~~~~~~~~~ <--- HERE\n',
    },
    "script_python_builtin": {
        (
            "2.13.0",
            "2.14.1",
            "2.15.0",
        ): 'RuntimeError: \nPython builtin <built-in function vars> is currently not supported in Torchscript:\n  File "tests/torch_messages.py", line 186\n    def forward(self, x):\n        return x * len(vars(self))\n                       ~~~~ <--- HERE\n',
    },
    "script_module_as_value": {
        (
            "2.13.0",
            "2.14.1",
            "2.15.0",
        ): "RuntimeError: \npython value of type 'module' cannot be used as a value. Perhaps it is a closed over global variable? If so, please consider passing it in as an argument or use a local variable instead.:\n  File \"tests/torch_messages.py\", line 191\n    def forward(self, x):\n        return x + warnings\n                   ~~~~~~~~ <--- HERE\n",
    },
    "onnx_legacy_unsupported_op": {
        (
            "2.13.0",
            "2.14.1",
            "2.15.0",
        ): "UnsupportedOperatorError: Exporting the operator 'aten::special_bessel_j0' to ONNX opset version 20 is not supported",
    },
    "script_runtime_size": {
        (
            "2.13.0",
            "2.14.1",
            "2.15.0",
        ): "RuntimeError: The following operation failed in the TorchScript interpreter.\nTraceback of TorchScript (most recent call last):\n  File \"tests/torch_messages.py\", line 225, in forward\n    def forward(self, x):\n        return x.view(4, 3)\n               ~~~~~~ <--- HERE\nRuntimeError: shape '[4, 3]' is invalid for input of size 15\n",
    },
    "onnx_unsupported_op": {
        (
            "2.13.0",
            "2.14.1",
            "2.15.0",
        ): "ConversionError: Failed to convert the exported program to an ONNX model. \x1b[96mThis is step 3/3\x1b[0m of exporting the model to ONNX. Next steps:\n- If there is a missing ONNX function, implement it and register it to the registry.\n- If there is an internal error during ONNX conversion, debug the error and submit a PR to PyTorch.\n- Create an error report with `torch.onnx.export(..., report=True)`, and save the ExportedProgram as a pt2 file. Create an issue in the PyTorch GitHub repository against the \x1b[96m*onnx*\x1b[0m component. Attach the error report and the pt2 model.\n\n## Exception summary\n\n<class 'torch.onnx._internal.exporter._errors.DispatchError'>: No ONNX function found for <OpOverload(op='aten.linalg_eig', overload='default')>. Failure message: No decompositions registered for the real-valued input\n⬆️\n<class 'torch.onnx._internal.exporter._errors.ConversionError'>: Error when translating node %linalg_eig : [num_users=1] = call_function[target=torch.ops.aten.linalg_eig.default](args = (%x,), kwargs = {}). See the stack trace for more information.\n\n(Refer to the full stack trace above for more information.)",
    },
    "export_scripted_module": {
        (
            "2.13.0",
            "2.14.1",
            "2.15.0",
        ): "TorchExportError: Failed to export the model with torch.export. \x1b[96mThis is step 1/3\x1b[0m of exporting the model to ONNX. Next steps:\n- Modify the model code for `torch.export.export` to succeed. Refer to https://pytorch.org/docs/stable/generated/exportdb/index.html for more information.\n- Debug `torch.export.export` and submit a PR to PyTorch.\n- Create an issue in the PyTorch GitHub repository against the \x1b[96m*torch.export*\x1b[0m component and attach the full error stack as well as reproduction scripts.\n\n## Exception summary\n\n<class 'ValueError'>: Exporting a ScriptModule is not supported. Maybe try converting your ScriptModule to an ExportedProgram using `TS2EPConverter(mod, args, kwargs).convert()` instead.\n\n(Refer to the full stack trace above for more information.)",
    },
    "load_pt2_custom_op": {
        (
            "2.13.0",
            "2.14.1",
            "2.15.0",
        ): "Ran into the following error when deserializing\ntorch._export.serde.serialize.SerializeError: We failed to resolve torch.ops.msg_probe.twice.default to an operator. If it's a custom op/custom triton op, this is usually because the custom op is not registered when deserializing. Please import the custom op to register it before deserializing. Otherwise, please file an issue on github. Unsupported target type for node Node(target='torch.ops.msg_probe.twice.default', inputs=[NamedArgument(name='x', arg=Argument(as_tensor=TensorArgument(name='x')), kind=1)], outputs=[Argument(as_tensor=TensorArgument(name='twice'))], metadata={'nn_module_stack': 'L__self__,,__main__.WithOp', 'torch_fn': 'twice_1;OpOverloadPacket.twice'}, is_hop_single_tensor_return=None, name='twice'): <class 'str'>.\nThe above exception was the direct cause of the following exception:\ntorch._export.serde.serialize.SerializeError: Failed deserializing node Node(target='torch.ops.msg_probe.twice.default', inputs=[NamedArgument(name='x', arg=Argument(as_tensor=TensorArgument(name='x')), kind=1)], outputs=[Argument(as_tensor=TensorArgument(name='twice'))], metadata={'nn_module_stack': 'L__self__,,__main__.WithOp', 'torch_fn': 'twice_1;OpOverloadPacket.twice'}, is_hop_single_tensor_return=None, name='twice')\ntorch._export.serde.serialize.SerializeError: We failed to resolve torch.ops.msg_probe.twice.default to an operator. If it's a custom op/custom triton op, this is usually because the custom op is not registered when deserializing. Please import the custom op to register it before deserializing. Otherwise, please file an issue on github. Unsupported target type for node Node(target='torch.ops.msg_probe.twice.default', inputs=[NamedArgument(name='x', arg=Argument(as_tensor=TensorArgument(name='x')), kind=1)], outputs=[Argument(as_tensor=TensorArgument(name='twice'))], metadata={'nn_module_stack': 'L__self__,,__main__.WithOp', 'torch_fn': 'twice_1;OpOverloadPacket.twice'}, is_hop_single_tensor_return=None, name='twice'): <class 'str'>.\nRuntimeError: We ran into an error when deserializing the saved file. Please check the warnings above for possible errors. ",
    },
    "load_pt2_pytree_type": {
        (
            "2.13.0",
            "2.14.1",
        ): "Ran into the following error when deserializing\nNotImplementedError: Deserializing msg_probe.Pair in pytree is not registered.\nRuntimeError: We ran into an error when deserializing the saved file. Please check the warnings above for possible errors. ",
        (
            "2.15.0",
        ): "Ran into the following error when deserializing\nNotImplementedError: Deserializing msg_probe.Pair in pytree failed because the serialized type is not registered in this process. If this type is defined in another package, import that package before loading this artifact so its pytree registrations run. If you control the type, register it with `torch.utils._pytree.register_pytree_node(..., serialized_type_name=...)` or `torch.export.register_dataclass(..., serialized_type_name=...)` before deserializing. The `serialized_type_name` must match 'msg_probe.Pair'.\nRuntimeError: We ran into an error when deserializing the saved file. Please check the warnings above for possible errors. ",
    },
    "load_torchscript_custom_op": {
        (
            "2.13.0",
            "2.14.1",
            "2.15.0",
        ): "RuntimeError: \nUnknown builtin op: msg_probe::twice.\nCould not find any similar ops to msg_probe::twice. This op may not exist or may not be currently supported in TorchScript.\n:",
    },
    "ops_namespace_missing": {
        (
            "2.13.0",
            "2.14.1",
            "2.15.0",
        ): "AttributeError: '_OpNamespace' 'msg_probe_absent' object has no attribute 'twice'",
    },
    "pickle_missing_class": {
        (
            "2.13.0",
            "2.14.1",
            "2.15.0",
        ): "AttributeError: Can't get attribute '_Gone' on <module 'torch.nn' from '.../torch/nn/__init__.py'>",
    },
}

NOT_WRITTEN = {
    # results/explain.py's _TRACER_KINDS: torch writes "Python boolean/integer/float/number/
    # complex/list", no "Python index"
    "Python index",
    # results/explain.py's _ERROR_KINDS: the FX-based ONNX exporter's words (gone before 2.13)
    # and ExecuTorch's (its verifier: tests/test_backend_executorch.py produces them)
    "is not supported by the ONNX exporter",
    "Unsupported FX nodes",
    "not in Core ATen opset",
    "runtime has no kernel for",
    "inferred to be a constant",
    "Module 'TorchScript'",
    # isolation/loader.py's _REACHED
    "No such operator",
}

#: Words torch 2.13.0-2.15.0 do write (in their Python or C++ strings) that no producer here
#: makes it say yet: the next ones to give a producer.
NOT_PRODUCED_YET = {
    "ConstraintViolation",
    # torch/csrc/jit/frontend/tracer.cpp, refusing a traced output that is no tensor container (a
    # transformers ModelOutput holding a cache): read in tests/test_causes_named.py from 2.13.0's text
    "Tracer cannot infer type of",
    # torch/export and torch/_functorch refusing a class pytree does not know (a transformers cache its
    # release registers none for): read in tests/test_causes_named.py from 2.13.0's texts
    "Unsupported input type",
    "in output, which is not a known type",
    "Unknown type annotation",
    "Unsupported: ONNX export of",
    "not in range",
    "not supported in ONNX",
}


def tracer_kind(text):
    # results/explain.py's _TRACER_KINDS, in its order: the first needle found names the kind.
    return next((kind for needle, kind, _ in explain._TRACER_KINDS if needle in text), "tracer_warning")


def error_kind(text):
    finding = explain.error_finding(RuntimeError(text), "export", "export")
    return finding.kind if finding else None


def violated(text):
    plan = types.SimpleNamespace(dims={"batch": types.SimpleNamespace(min=2, max=16)})
    dims = exporting.violated_dims(RuntimeError(text), plan)
    detail = exporting.specialized_finding(RuntimeError(text), "export", dims, plan).detail
    return sorted(dims), "You marked batch as dynamic but your code specialized it to be a constant (4)" in detail


def trimmed_head(text):
    # What a person reads of a dynamo ONNX error starts at its "## Exception summary": the first error's class.
    head = explain.trim_error(RuntimeError(text)).splitlines()[0]
    return re.search(r"<class '[\w.]+'>", head).group(0)


def pointed_at(text):
    # TorchScript's "<--- HERE" block survives trimming: the model's line a person needs.
    return [line.strip() for line in explain.trim_error(RuntimeError(text), limit=2).splitlines()[-2:]]


def operation_failed(text):
    # stages/static_sizes.py: TorchScript's first line only says an operation failed; its last says why.
    lines = [line.strip() for line in text.removeprefix("RuntimeError: ").splitlines() if line.strip()]
    return lines[-1] if lines[0].startswith("The following operation failed") else lines[0]


def deprecation(text):
    category, _, message = text.partition(": ")
    categories = {"DeprecationWarning": DeprecationWarning, "FutureWarning": FutureWarning}
    said = _compat.torchscript_deprecation([warnings.WarningMessage(message, categories[category], "x.py", 1)])
    return said.split(": ", 1)[1] if said else None


#: producer -> (how the plugin reads the text, what it must conclude)
READ = {
    "tracer_python_boolean": (tracer_kind, "frozen_branch"),
    "tracer_iterating": (tracer_kind, "baked_shape"),
    "tracer_python_integer": (tracer_kind, "baked_shape"),
    "tracer_python_float": (tracer_kind, "baked_shape"),
    "tracer_python_number": (tracer_kind, "frozen_value"),
    "tracer_constant": (tracer_kind, "baked_shape"),
    "jit_deprecation": (
        deprecation,
        "`torch.jit.trace` is deprecated. Please switch to `torch.compile` or `torch.export`.",
    ),
    "trace_non_tensor_output": (error_kind, "unsupported_output"),
    "export_data_dependent": (error_kind, "data_dependent_branch"),
    "export_constraints_violated": (violated, (["batch"], True)),
    "script_expected_type": (error_kind, "unsupported_python"),
    "script_undefined_value": (
        pointed_at,
        ["return x + not_defined_anywhere  # noqa: F821 - what TorchScript refuses", "~~~~~~~~~~~~~~~~~~~~ <--- HERE"],
    ),
    "script_python_builtin": (error_kind, "unsupported_python"),
    "script_module_as_value": (error_kind, "unsupported_python"),
    "onnx_legacy_unsupported_op": (error_kind, "unsupported_op"),
    "script_runtime_size": (operation_failed, "RuntimeError: shape '[4, 3]' is invalid for input of size 15"),
    "onnx_unsupported_op": (trimmed_head, "<class 'torch.onnx._internal.exporter._errors.DispatchError'>"),
    "export_scripted_module": (error_kind, "scripted_module"),
    "load_pt2_custom_op": (loader.reached_for, "the custom op msg_probe::twice"),
    "load_pt2_pytree_type": (loader.reached_for, "the registered pytree type msg_probe.Pair"),
    "load_torchscript_custom_op": (loader.reached_for, "the custom op msg_probe::twice"),
    "ops_namespace_missing": (loader.reached_for, "the custom op msg_probe_absent::twice"),
    "pickle_missing_class": (loader.reached_for, "the Python class torch.nn._Gone"),
}


def recorded():
    for name, texts in RECORDED.items():
        for versions, text in texts.items():
            for version in versions:
                yield pytest.param(name, text, id=f"{name}-{version}")


@pytest.mark.parametrize(("name", "text"), list(recorded()))
def test_each_torch_versions_real_text_is_read(name, text):
    read, expected = READ[name]
    assert read(text) == expected


@pytest.mark.parametrize("name", sorted(PRODUCERS))
def test_the_installed_torch_says_it_so_the_pattern_reads(name):
    text = PRODUCERS[name]()
    read, expected = READ[name]
    assert read(text) == expected, f"torch {torch.__version__} now says:\n{text}"


def test_every_version_ci_runs_is_recorded_for_every_producer():
    assert set(RECORDED) == set(PRODUCERS) == set(READ)
    for name, texts in RECORDED.items():
        assert sorted(v for versions in texts for v in versions) == sorted(VERSIONS), name


def test_every_needle_is_read_from_a_real_text_or_listed_as_written_by_no_torch():
    texts = [text for texts in RECORDED.values() for text in texts.values()]
    needles = [needle for needle, _, _ in explain._TRACER_KINDS]
    needles += [needle for group, _, _ in explain._ERROR_KINDS for needle in group]
    unread = {n for n in needles if not any(n in t for t in texts)} - NOT_WRITTEN - NOT_PRODUCED_YET
    assert not unread, f"needles no recorded text exercises: {sorted(unread)}"
    assert not [n for n in NOT_WRITTEN | NOT_PRODUCED_YET if any(n in t for t in texts)], (
        "now read: take it off the list"
    )
