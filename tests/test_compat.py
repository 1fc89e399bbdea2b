"""Private APIs: each private name of torch, pytest, hypothesis and executorch the plugin uses,
asserted here with the shape ``pytest_torchexport/_compat.py`` relies on, so an upgrade that moves
one fails this file first (one test per name, named after it) rather than a user's suite.
tests/test_architecture.py holds the rest of the package to reaching them only through ``_compat``.
"""

from __future__ import annotations

import ast
import inspect
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from pytest_torchexport import _compat

PACKAGE = Path(_compat.__file__).parent


# --- torch ----------------------------------------------------------------------------------


def _pytree_names_used() -> set[str]:
    used = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "pytree":
                used.add(node.attr)
    return used


def test_torch_utils_pytree_has_every_name_the_package_uses():
    import torch.utils._pytree as private

    used = _pytree_names_used()
    assert {"tree_flatten", "tree_unflatten", "tree_leaves", "tree_map"} <= used  # the scan sees them
    assert _compat.pytree.tree_flatten is private.tree_flatten  # read through on first use
    assert sorted(name for name in used if not hasattr(private, name)) == []


def test_fx_pytree_flattens_an_exported_modules_call_by_its_in_spec():
    class Two(nn.Module):
        def forward(self, x, y):
            return x + 2 * y

    x, y = torch.randn(2), torch.randn(2)
    graph_module = torch.export.export(Two(), (x,), {"y": y}).module()
    assert hasattr(graph_module, "_in_spec")
    flat = _compat.graph_module_flat_inputs(graph_module, ((x,), {"y": y}))
    assert [t is x or t is y for t in flat] == [True, True]
    torch.testing.assert_close(torch.fx.Interpreter(graph_module).run(*flat), x + 2 * y)


def test_export_tree_utils_reorder_kwargs_puts_keywords_in_the_programs_order():
    class Keywords(nn.Module):
        def forward(self, x, *, a, b):
            return x + a - b

    x, a, b = torch.randn(2), torch.randn(2), torch.randn(2)
    program = torch.export.export(Keywords(), (x,), {"b": b, "a": a})
    reordered = _compat.reorder_kwargs({"a": a, "b": b}, program.call_spec.in_spec)
    assert list(reordered) == ["b", "a"]


def test_onnx_registration_registry_has_the_from_torchlib_classmethod():
    cls = _compat.onnx_registry_class()
    assert cls is not None and cls.__name__ == "ONNXRegistry"
    assert isinstance(cls.__dict__["from_torchlib"], classmethod)


def test_onnx_capture_strategies_are_a_tuple_of_timed_strategy_classes():
    from torch.onnx._internal.exporter import _capture_strategies as strategies

    listed = strategies.CAPTURE_STRATEGIES
    assert isinstance(listed, tuple) and listed[0] is strategies.TorchExportNonStrictStrategy
    assert "__call__" in strategies.CaptureStrategy.__dict__
    seconds: list[float] = []
    with _compat.onnx_capture_strategies(seconds, skip_non_strict=True), _compat.quiet_torch():
        assert strategies.TorchExportNonStrictStrategy not in strategies.CAPTURE_STRATEGIES
        torch.onnx.export(nn.Linear(2, 2).eval(), (torch.randn(1, 2),), dynamo=True, verbose=False)
    assert strategies.CAPTURE_STRATEGIES is listed and len(seconds) == 1  # the strict one, timed; then put back


def test_inductor_has_the_aoti_package_functions():
    import torch._inductor

    for name in _compat.AOTI_FUNCTIONS:
        assert callable(getattr(torch._inductor, name)), name
    assert "package_path" in inspect.signature(torch._inductor.aoti_compile_and_package).parameters
    assert list(inspect.signature(torch._inductor.aoti_load_package).parameters)[0] == "path"
    # the wrappers pass those parameters on as they are named there (a compile takes a minute: not run here)
    assert list(inspect.signature(_compat.aoti_compile_and_package).parameters) == ["program", "package_path"]
    assert list(inspect.signature(_compat.aoti_load_package).parameters) == ["path"]
    assert _compat.aoti_unavailable() is None


def test_export_load_raises_what_torchs_reader_refused(tmp_path):
    """torch.export.load logs its reader's error and raises only "check the warnings above";
    _compat.export_load reads the file again with that reader and raises its error."""

    class Says(nn.Module):
        def forward(self, x):
            return x * 2, "a string"

    path = str(tmp_path / "says.pt2")
    torch.export.save(torch.export.export(Says(), (torch.randn(2),)), path)
    with pytest.raises(RuntimeError, match="check the warnings above"):
        torch.export.load(path)
    from torch.export.pt2_archive._package import load_pt2

    with pytest.raises(Exception, match=r"Unable to deserialize output node Argument\(as_string=a string\)"):
        load_pt2(path)
    with pytest.raises(RuntimeError, match=r"torch.export.load cannot read the file: SerializeError: Unable to"):
        _compat.export_load(path)
    # a file it reads is loaded as torch.export.load loads it
    torch.export.save(torch.export.export(nn.Linear(2, 2), (torch.randn(1, 2),)), path)
    assert isinstance(_compat.export_load(path), torch.export.ExportedProgram)


def test_conv_nd_is_the_base_of_every_convolution():
    (base,) = _compat.conv_module_types()
    assert base.__name__ == "_ConvNd"
    for cls in (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.LazyConv2d):
        assert issubclass(cls, base), cls


def test_module_private_dicts_hold_none_entries_and_repeats():
    module = nn.Linear(2, 2)
    module.register_parameter("absent", None)
    module.register_buffer("scratch", torch.zeros(1), persistent=False)
    module.register_buffer("hole", None)
    module.first = module.second = nn.ReLU()
    module.register_module("none", None)
    assert list(_compat.own_parameters(module)) == ["weight", "bias", "absent"]
    assert _compat.own_parameters(module)["absent"] is None
    assert list(_compat.own_buffers(module)) == ["scratch", "hole"]
    assert list(_compat.own_children(module)) == ["first", "second", "none"]
    assert _compat.non_persistent_buffers(module) == {"scratch"}


def test_script_module_c_has_method_answers_for_compiled_methods_only():
    class Methods(nn.Module):
        def forward(self, x):
            return x + 1

        @torch.jit.export
        def kept(self, x):
            return x * 2

        def dropped(self, x):
            return x - 1

    with _compat.quiet_torch():
        scripted = torch.jit.script(Methods())
    assert _compat.script_has_method(scripted, "forward")
    assert _compat.script_has_method(scripted, "kept")
    assert not _compat.script_has_method(scripted, "dropped")


def test_optimized_module_keeps_the_users_module_as_orig_mod():
    module = nn.Linear(2, 2)
    with _compat.quiet_torch():  # importing dynamo warns that TorchScript is deprecated
        compiled = torch.compile(module)  # compiles at the first call only
    assert type(compiled).__name__ == "OptimizedModule"
    assert _compat.compiled_original(compiled) is module
    assert _compat.compiled_original(module) is None


def test_module_compile_sets_compiled_call_impl():
    module = nn.Linear(2, 2)
    assert not _compat.compiled_in_place(module)
    with _compat.quiet_torch():
        module.compile()  # compiles at the first call only
    assert _compat.compiled_in_place(module)


def test_cuda_is_in_bad_fork_is_false_in_the_test_process():
    assert torch.cuda._is_in_bad_fork() is False


# --- executorch -----------------------------------------------------------------------------


def test_executorch_deserialize_pte_binary_reads_the_calls_structure():
    program = pytest.importorskip("executorch.exir._serialize._program")
    from executorch.exir import to_edge

    assert list(inspect.signature(program.deserialize_pte_binary).parameters) == ["program_data"]
    with _compat.quiet_torch():  # executorch's lowering warns about torch's own pytree API
        exported = torch.export.export(nn.Linear(2, 2), (torch.randn(1, 2),))
        data = to_edge(exported).to_executorch().buffer
    plan = _compat.deserialize_pte(data).program.execution_plan[0]
    assert len(plan.inputs) == 1
    spec = _compat.pytree.treespec_loads(plan.container_meta_type.encoded_inp_str)
    assert spec.num_leaves == 1


# --- pytest ---------------------------------------------------------------------------------


def test_pytest_unittest_test_case_function_is_a_function_item():
    cls = _compat.unittest_item_class()
    assert cls.__name__ == "TestCaseFunction" and issubclass(cls, pytest.Function)


def test_pytest_function_has_the_methods_the_plugin_overrides():
    for name in _compat.FUNCTION_OVERRIDES:
        method = getattr(pytest.Function, name)
        assert list(inspect.signature(method).parameters) == ["self"], name


def test_pytest_item_fixtureinfo_is_what_from_parent_takes(pytester):
    item = pytester.getitem("def test_func(tmp_path): pass")
    info = _compat.fixtureinfo(item)
    assert "tmp_path" in info.argnames
    copy = pytest.Function.from_parent(item.parent, name="test_func", fixtureinfo=info)
    assert copy.fixturenames == item.fixturenames


def test_pytest_fixture_definitions_say_which_fixtures_see_the_item(pytester):
    pytester.makeconftest(
        """
        import pytest

        @pytest.fixture
        def picky(request):
            return request.node.name

        @pytest.fixture
        def plain():
            return 1

        @pytest.fixture(scope="module")
        def wide(request):
            return 2
        """
    )
    item = pytester.getitem("def test_func(picky, plain, wide, tmp_path, monkeypatch): pass")
    assert _compat.item_aware_fixtures(item) == ["picky"]  # tmp_path takes request too: pytest's own


def test_pytest_function_setup_is_where_its_fixtures_are_set_up(pytester):
    pytester.makepyfile(
        """
        import pytest

        @pytest.fixture
        def costly():
            print("SETTING UP")

        def test_a(costly):
            pass

        def test_b(costly):
            pass
        """
    )
    pytester.makeconftest(
        """
        import pytest
        from pytest_torchexport import _compat

        @pytest.hookimpl(tryfirst=True)
        def pytest_runtest_setup(item):
            if item.name == "test_b":
                assert _compat.skip_fixture_setup(item)

        @pytest.hookimpl(tryfirst=True)
        def pytest_pyfunc_call(pyfuncitem):
            return True if pyfuncitem.name == "test_b" else None  # as the plugin's reusing items do
        """
    )
    result = pytester.runpytest("-s", "-q", "-p", "no:torchexport")
    result.assert_outcomes(passed=2)
    assert result.stdout.str().count("SETTING UP") == 1


def test_xdist_worker_queue_lists_the_items_sent_and_not_yet_run(pytester):
    # pytest-xdist's WorkerInteractor: the next item's index and the queue behind it, read by
    # _compat.xdist_queued; None outside a worker. --dist loadfile sends the whole file at once.
    pytester.makepyfile(
        """
        def test_a(request):
            from pytest_torchexport import _compat
            queued = _compat.xdist_queued(request.config)
            names = [request.session.items[i].name for i in queued]
            assert names == ["test_b", "test_c"], names

        def test_b():
            pass

        def test_c(request):
            from pytest_torchexport import _compat
            assert _compat.xdist_queued(request.config) == []
        """
    )
    result = pytester.runpytest("-q", "-p", "no:torchexport", "-p", "no:randomly", "-n", "1", "--dist", "loadfile")
    result.assert_outcomes(passed=3)
    assert _compat.xdist_queued(pytester.parseconfigure()) is None


def test_pytest_unittest_item_keeps_the_bodys_error_as_excinfo(pytester):
    pytester.makeconftest(
        """
        import pytest
        from pytest_torchexport import _compat

        @pytest.hookimpl(wrapper=True)
        def pytest_runtest_call(item):
            try:
                return (yield)
            finally:
                infos = _compat.unittest_excinfo(item)
                print("KEPT", type(infos[0].value).__name__ if infos else None)
        """
    )
    pytester.makepyfile(
        """
        import unittest

        class T(unittest.TestCase):
            def test_x(self):
                raise KeyError("body")
        """
    )
    result = pytester.runpytest("-s", "-p", "no:torchexport")
    result.stdout.fnmatch_lines(["*KEPT KeyError*"])


def test_pytest_terminal_writer_has_fullwidth(pytester):
    config = pytester.parseconfigure()
    width = _compat.terminal_width(config.pluginmanager.get_plugin("terminalreporter"))
    assert isinstance(width, int) and width > 0


# --- hypothesis -----------------------------------------------------------------------------


def _database_keys(digest: bytes) -> set[bytes]:
    from hypothesis import given, settings
    from hypothesis import strategies as st
    from hypothesis.database import InMemoryExampleDatabase

    database = InMemoryExampleDatabase()

    @settings(database=database, max_examples=20, derandomize=False)
    @given(st.integers())
    def fails(x):
        assert x < 5

    _compat.add_database_digest(fails, digest)
    with pytest.raises(AssertionError):
        fails()
    return set(database.data)


def test_hypothesis_internal_add_digest_keys_the_database_apart():
    first, again, other = _database_keys(b"a"), _database_keys(b"a"), _database_keys(b"b")
    assert first and first == again
    assert not first & other


def test_hypothesis_get_local_constants_takes_no_arguments():
    from hypothesis.internal.conjecture.providers import _get_local_constants

    assert list(inspect.signature(_get_local_constants).parameters) == []
    assert _compat.scan_local_constants() is True


def test_plugin_modules_are_never_local_to_hypothesis(tmp_path, monkeypatch):
    """[Own Constants] hypothesis's providers.is_local_module_file, _local_constants, _seen_modules,
    _sys_modules_len and CONSTANTS_CACHE: after the wrap, a plugin file is not local however the
    plugin is installed, a user's module still is, a scan made before is forgotten (a plugin-only
    literal scanned in is gone after the next scan) and a second call wraps nothing again."""
    from hypothesis.internal.conjecture import providers
    from hypothesis.internal.constants_ast import Constants

    user = tmp_path / "user_model.py"
    user.write_text("THRESHOLD = 918273645\n")
    plugin_file = str(Path(_compat.__file__).parent / "options.py")
    # hypothesis's state for this test only: local is what an editable install makes of the
    # plugin's folder, and this test's user module; nothing else is scanned
    monkeypatch.setattr(
        providers, "is_local_module_file", lambda path: path.startswith((_compat.PLUGIN_FOLDER, str(tmp_path)))
    )
    monkeypatch.setattr(providers, "_local_constants", Constants(integers={764251398}))  # a plugin literal scanned
    monkeypatch.setattr(providers, "_seen_modules", {id(sys)})
    monkeypatch.setattr(providers, "_sys_modules_len", len(sys.modules))
    assert _compat.plugin_modules_not_local() is True
    wrapped = providers.is_local_module_file
    assert wrapped(plugin_file) is False
    assert wrapped(_compat.PLUGIN_FOLDER + "stages/capture.py") is False
    assert wrapped(str(user)) is True
    assert 764251398 not in providers._local_constants.integers
    assert providers._sys_modules_len is None and not providers._seen_modules
    assert _compat.plugin_modules_not_local() is True
    assert providers.is_local_module_file is wrapped
    monkeypatch.syspath_prepend(str(tmp_path))
    import user_model  # noqa: F401 - a user's module, imported so the scan finds it

    assert 918273645 in providers._get_local_constants().integers
    monkeypatch.delitem(sys.modules, "user_model")


def test_is_in_ci_gives_hypothesis_s_own_answer_without_importing_it(monkeypatch):
    from hypothesis._settings import _CI_VARS, is_in_ci

    assert _compat._CI_VARS == _CI_VARS  # the same variables, with the same values
    for name in _CI_VARS:
        monkeypatch.delenv(name, raising=False)
    assert is_in_ci() is False and _compat.is_in_ci() is False
    for name, value in _CI_VARS.items():
        for given in ("true", "false", ""):
            monkeypatch.setenv(name, given)
            assert _compat.is_in_ci() is is_in_ci() is (value is None or given == value), (name, given)
            monkeypatch.delenv(name)


def test_hypothesis_home_directory_is_the_folder_set_last(tmp_path):
    from hypothesis import configuration

    before = _compat.hypothesis_home_directory(configuration.storage_directory(intent_to_write=False))
    configuration.set_hypothesis_home_dir(tmp_path)
    try:
        stored = configuration.storage_directory(intent_to_write=False)
        assert Path(_compat.hypothesis_home_directory(stored)) == tmp_path
    finally:
        configuration.set_hypothesis_home_dir(before)


def test_every_private_api_of_compat_is_tested_here():
    """A name added to ``_compat``'s private-API part gets its test in this file."""
    source = Path(_compat.__file__).read_text()
    part = ast.parse(source[source.index("# Private APIs.") :])
    names = [n.name for n in part.body if isinstance(n, ast.FunctionDef)] + [
        t.id for n in part.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)
    ]
    assert "add_database_digest" in names and "FUNCTION_OVERRIDES" in names
    here = Path(__file__).read_text()
    untested = [name for name in names if name != "__getattr__" and f"_compat.{name}" not in here]
    assert untested == []


def test_torch_c_says_which_cxx_string_abi_its_libraries_use():
    """The C++ runner (isolation/cpp.py) is compiled with the ABI the wheel's libraries have."""
    import torch

    assert isinstance(torch._C._GLIBCXX_USE_CXX11_ABI, bool)
    assert _compat.torch_cxx11_abi() is torch._C._GLIBCXX_USE_CXX11_ABI


def test_a_pytree_node_registered_without_keys_is_read_by_its_plain_flatten():
    # transformers 4.x registers ModelOutput so (context: its field names); a user's class likewise
    # (context: anything). torch's own tree_flatten_with_path raises on both.
    import torch
    import torch.utils._pytree as pytree

    class Named(dict):
        pass

    class Pair:
        def __init__(self, a, b):
            self.a, self.b = a, b

    pytree.register_pytree_node(Named, lambda d: (list(d.values()), list(d)), lambda v, c: Named(zip(c, v)))
    pytree.register_pytree_node(Pair, lambda p: ([p.a, p.b], None), lambda v, c: Pair(*v))
    try:
        tree = {"out": Named(logits=torch.ones(1), hidden=(torch.zeros(2),)), "pair": Pair(torch.ones(3), 4)}
        with pytest.raises(ValueError, match="flatten_with_keys_fn"):
            pytree.tree_flatten_with_path(tree)
        pairs, spec = _compat.tree_flatten_with_path(tree)
        assert [pytree.keystr(path) for path, _ in pairs] == [
            "['out']['logits']",
            "['out']['hidden'][0]",
            "['pair'][0]",
            "['pair'][1]",
        ]
        assert spec == pytree.tree_flatten(tree)[1]
        assert [leaf for _, leaf in _compat._key_paths((), tree, None)] == pytree.tree_leaves(tree)
    finally:
        pytree.SUPPORTED_NODES.pop(Named, None)
        pytree.SUPPORTED_NODES.pop(Pair, None)


class _Scales(torch.nn.Module):
    def forward(self, x):
        return x * 2


class _Gathers(torch.nn.Module):
    def forward(self, x, n):
        k = n.item()
        torch._check(k <= x.shape[0])  # an assert inside the graph, not an input guard
        return x[:k] * 2


def test_program_guards_are_checked_without_the_graph_only_where_they_are_all_it_asserts():
    batch = torch.export.Dim("batch", min=3, max=16)
    with _compat.quiet_torch(fds=True):
        plain = torch.export.export(_Scales(), (torch.randn(3, 8),), dynamic_shapes=({0: batch},)).module()
        gathers = torch.export.export(_Gathers(), (torch.randn(4, 3), torch.tensor(2))).module()
    check = _compat.program_guards(plain)
    assert check is not None
    with pytest.raises(Exception, match=r"x.size\(\)\[0\] >= 3"):
        check((torch.randn(2, 8),), {})
    with pytest.raises(Exception, match=r"x.size\(\)\[1\] == 8"):
        check((torch.randn(4, 9),), {})
    check((torch.randn(7, 8),), {})  # within the guards: no error, and the graph is not run
    # Its graph asserts on a value only a run sees: the caller runs the program instead.
    assert _compat.program_guards(gathers) is None
