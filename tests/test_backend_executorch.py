"""The `executorch` backend: a .pte lowered to XNNPACK, run by ExecuTorch's own runtime.

Lowering costs about a second a model (about 6 s for the first one in a process), so the
statuses come from one module-scoped batch of checks and the plugin path from two short
pytester runs.
"""

import functools

import pytest
import torch
from helpers import (
    assert_selected_on_the_command_line,
    checked_one,
    gate_branch_finding,
    installed,
    nested_round_trip,
    run_without,
)
from models import MLP, Gate, Nested
from torch import nn

from pytest_torchexport.backends.executorch import FILENAME, ExecutorchBackend

EX = 5


class FixedBatch(nn.Module):
    """Branches on the batch size: torch.export keeps only the example's size, static in the .pte."""

    def forward(self, x):
        if x.shape[0] == 4:
            return x * 2
        return x * 3


class Sort(nn.Module):
    """Lowers, but the runtime this package ships has no kernel for aten::sort."""

    def forward(self, x):
        return torch.sort(x, 1)[0]


class Affine(nn.Module):
    def forward(self, x, scale=None, bias=None):
        return x * scale + bias


_result = functools.partial(checked_one, backend="executorch", examples=EX)


@pytest.fixture(scope="module")
def results():
    installed(ExecutorchBackend(), "executorch")
    # Also the warm-up: the first lowering imports (and registers ops from) executorch,
    # which must happen outside pytester's inline runs (see tests/conftest.py).
    return {
        "clean": _result(MLP().eval(), (torch.randn(3, 8),), dims={"batch": (1, 16)}),
        "nested": _result(Nested().eval(), (torch.randn(2, 4),)),
        "gate": _result(Gate().eval(), (torch.ones(3, 4),)),
        "fixed": _result(FixedBatch().eval(), (torch.randn(4, 3),), dims={"batch": (1, 8)}),
        "sort": _result(Sort().eval(), (torch.randn(3, 4),)),
        # keywords in another order than forward's: fed by position in the exported order
        "kwargs": _result(
            Affine().eval(), (torch.randn(2, 3),), kwargs={"bias": torch.randn(2, 3), "scale": torch.rand(2, 3)}
        ),
    }


def test_a_clean_model_passes_over_drawn_batch_sizes_through_the_pte(results):
    r = results["clean"]
    assert r.status == "pass", r.message
    assert r.examples >= EX
    assert r.extra["artifact_files"] == [FILENAME] and r.extra["artifact_bytes"] > 0
    assert "roundtrip" not in r.extra  # the loaded .pte is what was validated
    assert r.rtol == 1e-3 and r.atol == 1e-4  # relowered: XNNPACK's kernels are not eager's


def test_nested_outputs_come_back_in_the_module_structure(results):
    r = results["nested"]
    assert r.status == "pass", r.message


def test_keyword_arguments_reach_the_program_in_the_exported_order(results):
    assert results["kwargs"].status == "pass", results["kwargs"].message


def test_the_loaded_program_needs_only_the_file_and_keeps_to_its_bounds(tmp_path):
    """The output structure comes from the .pte itself, not from the in-memory export."""
    backend = installed(ExecutorchBackend(), "executorch")
    files, loaded, out, expected = nested_round_trip(backend, tmp_path, batch=5)
    assert files == [tmp_path / FILENAME]
    assert loaded.buffer is None and set(out) == {"logits", "hidden"}
    torch.testing.assert_close(out, expected, rtol=1e-3, atol=1e-4)
    # Above the declared range: memory was planned for batch <= 8 (the search never draws this).
    with pytest.raises(
        RuntimeError, match=r"input 0 of shape \(9, 4\): the size is outside .* \(memory planned for at most \(8, 4\)\)"
    ):
        backend.run(loaded, (torch.randn(9, 4),), {})


def test_a_data_dependent_branch_is_an_export_error_at_the_line(results):
    r = results["gate"]
    assert r.status == "export_error"
    assert r.message.startswith("executorch could not export the module [backend=executorch, device=cpu]")
    gate_branch_finding(r, "data_dependent_branch")


def test_a_size_the_program_was_not_lowered_for_is_a_run_error_that_says_so(results):
    r = results["fixed"]
    assert r.status == "run_error", r.message
    assert (
        "ExecuTorch cannot run shape (1, 3): the size is outside what the program was lowered for "
        "(the static shape (4, 3): the export fixed these sizes)"
    ) in r.message
    assert "runtime: Attempted to resize a static tensor" in r.message
    assert "specialized_dim" in {f.kind for f in r.findings}


def test_an_op_without_a_kernel_is_a_load_error_with_the_runtimes_reason(results):
    r = results["sort"]
    assert r.status == "load_error", r.message
    assert r.message.startswith("executorch could not load the module [backend=executorch, device=cpu]")
    assert "its runtime has no kernel for aten::sort.values" in r.message
    assert "runtime: Missing operator: [0] aten::sort.values" in r.message
    assert "dim order" not in r.message  # the kernel table it dumps line by line is trimmed
    assert "unsupported_op" in {f.kind for f in r.findings}


def test_selected_on_the_command_line_with_its_own_item_id(tester, results):
    assert_selected_on_the_command_line(tester, "executorch")


def test_a_missing_package_is_a_skipped_row_with_the_install_line(tester, results):
    # The real missing-import path: every executorch module unimportable for this run
    # (pytester restores sys.modules afterwards).
    result, _ = run_without(tester, ("executorch",), ["executorch"], "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.re_match_lines([r'.*executorch is not installed .*pip install "pytest-torchexport\[executorch\]".*'])
