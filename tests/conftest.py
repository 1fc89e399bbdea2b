import os

# Tests run pytest again in subprocesses from a temporary folder (pytester). A relative PYTHONPATH
# (CI lays each transformers release over the venv as PYTHONPATH=.tf-RELEASE) would resolve there to
# nothing, and those runs would import the venv's own release, not the one under test: made absolute
# here, every subprocess imports what this process imports.
if os.environ.get("PYTHONPATH"):
    os.environ["PYTHONPATH"] = os.pathsep.join(
        os.path.abspath(entry) for entry in os.environ["PYTHONPATH"].split(os.pathsep) if entry
    )

# torch and the ONNX stack are imported here, once, on purpose: pytester's inline runs
# restore sys.modules afterwards, and a second in-process import of torch segfaults (and
# of onnxruntime/onnxscript aborts).
import onnx  # noqa: F401
import onnxruntime  # noqa: F401
import onnxscript  # noqa: F401
import pytest
import torch  # noqa: F401

# Likewise the engine, which imports hypothesis's strategy modules lazily: re-imported in
# a later inline run, their classes would differ from the ones hypothesis already holds.
import pytest_torchexport.engine.pipeline  # noqa: F401,E402

# Likewise pygal (the HTML report's plots): it imports the importlib_metadata backport, which
# adds a finder to sys.meta_path that outlives an inline run's sys.modules; the next inline
# run then finds no pytest11 entry points, and the plugin's options are "unrecognized".
# Through the plugin's loader, which takes pygal's legacy import hook off ([pygal Import Hook]).
try:
    from pytest_torchexport.results.plots import load_pygal  # noqa: E402

    load_pygal()
except ImportError:  # the html extra is not installed: its tests say so
    pass

# Likewise the modules that register torch ops or that transformers' lazy loader resolves, which
# several tests' inline runs reach (executorch's and AOTInductor's quantized ops; the tiny
# transformers models): imported first inside an inline run, they would be dropped after it, and
# the next import in this worker fails ("Only a single TORCH_LIBRARY can be used to register the
# namespace quantized_decomposed", "Could not import module 'GPT2LMHeadModel'").
import torch.ao.quantization.fx._decomposed  # noqa: F401,E402

try:
    import transformers.models.bert.modeling_bert  # noqa: F401
    import transformers.models.gpt2.modeling_gpt2  # noqa: F401
    import transformers.models.llama.modeling_llama  # noqa: F401
    import transformers.models.t5.modeling_t5  # noqa: F401
except ImportError:  # transformers is not installed: its tests say so
    pass

pytest_plugins = ["pytester"]

# Few examples keep the suite fast; the search still reaches sizes 1 and 2 and sign flips.
EXAMPLES = 8


@pytest.fixture
def tester(pytester: pytest.Pytester) -> pytest.Pytester:
    """A pytester with a fixed ini: warnings as errors, strict xfail, few examples."""
    pytester.makeini(
        f"""
        [pytest]
        # pytest-randomly (installed for tests/test_ci_tools.py) would shuffle these runs'
        # items and reseed them; the tests that exercise it pass -p randomly themselves.
        addopts = -p no:randomly
        xfail_strict = true
        torchexport_examples = {EXAMPLES}
        # The C++ load (docs/howto-verify.md) costs a runner's start per trace/script check: the
        # runs about it (tests/test_cpp_load.py) turn it on with --torchexport-cpp=auto.
        torchexport_cpp = off
        filterwarnings =
            error
            ignore::DeprecationWarning:onnxscript.*
            ignore::DeprecationWarning:onnx_ir.*
        """
    )
    return pytester


@pytest.fixture(scope="session", autouse=True)
def _exporters_warmed_up():
    """One real check per backend in this process before any inline pytester run.

    The exporters import (and register torch ops from) many modules lazily on first use;
    imported during an inline run they would be dropped afterwards and re-imported by
    the next one, which fails ("Only a single TORCH_LIBRARY can be used...").
    """
    from pytest_torchexport import check
    from pytest_torchexport.isolation.runner import THIS
    from pytest_torchexport.options import BUILTIN_BACKENDS

    backends = ["trace", "script", "onnx", "export", "onnx-legacy"]
    for name in backends:  # a backend's first check forks without its warm-up (isolation/warmup.py)
        THIS.warmup.warm_up(name, BUILTIN_BACKENDS[name], now=True)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU()).eval()
    check(model, (torch.randn(2, 4),), backends=backends, examples=1)


#: Markers of tests that need more than the package itself: none of them is in the fast tier.
_NOT_UNIT = ("slow", "docs", "browser", "transformers", "torchvision", "model_libs")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The fast tier (``-m unit``): every test that runs no pytest session of its own (no
    ``pytester``, directly or through a fixture) and needs no optional library. A green run of
    the package's own logic in minutes, beside the whole suite's half hour."""
    for item in items:
        if "pytester" not in getattr(item, "fixturenames", ()) and not any(
            item.get_closest_marker(m) for m in _NOT_UNIT
        ):
            item.add_marker(pytest.mark.unit)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> pytest.TestReport:
    """``TORCHEXPORT_REQUIRE_MARKS=browser,torchvision,model_libs``: a test that
    carries one of those markers and skips (Chromium, torchvision or timm missing) fails instead.
    CI sets it in the stages that install them, so a missing install cannot pass as a skip."""
    report = yield
    required = {m.strip() for m in os.environ.get("TORCHEXPORT_REQUIRE_MARKS", "").split(",") if m.strip()}
    marks = sorted(m for m in required if item.get_closest_marker(m))
    if report.skipped and marks and not hasattr(report, "wasxfail"):
        why = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = (
            f"{item.nodeid} carries {', '.join(marks)} and skipped ({why}), but TORCHEXPORT_REQUIRE_MARKS="
            f"{','.join(sorted(required))} says it must run in this environment"
        )
    return report


@pytest.fixture(scope="session")
def code_health():
    """benchmarks/code_health.py, loaded as a module (benchmarks/ is no package)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "code_health.py"
    spec = importlib.util.spec_from_file_location("code_health", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def not_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    """A local run: hypothesis explores (no derandomize), as it does without CI."""
    try:
        from hypothesis._settings import _CI_VARS  # the variables hypothesis reads for CI
    except ImportError:  # pragma: no cover - a hypothesis that moved it
        _CI_VARS = {"CI": None}
    for name in _CI_VARS:
        monkeypatch.delenv(name, raising=False)
    from pytest_torchexport._compat import is_in_ci

    assert not is_in_ci()
