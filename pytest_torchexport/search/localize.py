"""Where a mismatch starts: the first module whose artifact output differs from eager's.

Runs once, on the shrunk failing input. Each artifact submodule is run on the input eager gave
that submodule (recorded by hooks), so an upstream error does not smear downstream. The walk
enters the first differing child, level by level, until a module differs and none of its
children do. TorchScript and unflattened ``torch.export`` submodules run alone ("isolated");
ONNX graphs and export submodules that cannot take eager's input are read from one run of
the whole graph ("in-graph"). See docs/howto-read-a-failure.md.
"""

from __future__ import annotations

import ast
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from .._compat import graph_module_flat_inputs, pytree, quiet_torch
from ..backends.base import Backend, OnnxModelSource, call_tensors
from ..reference.compare import Comparison
from ..reference.eager import seed_rng

if TYPE_CHECKING:
    from typing import TypeVar

    import onnx

    _T = TypeVar("_T")

#: Lines of the artifact's code shown in the failure message.
MESSAGE_LINES = 8
#: Lines of the artifact's code kept in the report's ``artifact_excerpt``.
EXCERPT_LINES = 40


@dataclass
class Located:
    module: str  # qualified name; "" is the top-level module's own code
    cls: str
    max_abs_err: float
    excerpt: str
    walked: list[tuple[str, float]] = field(default_factory=list)  # (module, max abs err)
    compared: int = 0
    seconds: float = 0.0
    method: str = "isolated"
    #: True: the module differs given eager's own input (it introduces the error); False: the
    #: artifact's input to it already differs (carried from upstream); None: cannot tell.
    introduced: bool | None = None
    input_err: float | None = None  # when carried: the error of its input
    enters: tuple[str, str] | None = None  # when carried: see ``_enters``

    def as_dict(self) -> dict[str, Any]:
        data = {
            "module": self.module,
            "class": self.cls,
            "max_abs_err": self.max_abs_err,
            "artifact_excerpt": self.excerpt,
            "walked": [{"module": m, "max_abs_err": e} for m, e in self.walked],
            "compared_modules": self.compared,
            "seconds": round(self.seconds, 4),
            "method": self.method,
        }
        if self.introduced is not None:
            data["introduced"] = self.introduced
        if self.input_err is not None:
            data["input_max_abs_err"] = self.input_err
        if self.enters is not None:
            data["enters"] = {"in": self.enters[0], "before": self.enters[1]}
        return data


def unavailable(backend: Backend, artifact: object) -> str | None:
    """Why this artifact's submodules cannot be run on their own, or None."""
    if scripted_module(backend, artifact) is not None or backend.exported_program(artifact) is not None:
        return None
    if isinstance(backend, OnnxModelSource) and backend.onnx_model(artifact) is not None:
        return None
    return "its submodules cannot be run on their own inputs (TorchScript, torch.export and ONNX artifacts can)"


def locate(
    backend: Backend,
    artifact: object,
    module: torch.nn.Module,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    judge: Callable[[Any, Any], Comparison],
    top_error: float,
) -> Located | None:
    """The first module of ``artifact`` that diverges from eager ``module``; None if unreachable.

    ``judge(expected, actual)`` is the check's own comparison. ``top_error`` is reported when
    no submodule differs on its own input (module ``""``: the top level's own code).
    """
    t0 = time.perf_counter()
    with quiet_torch():
        side = artifact_side(backend, artifact, module, args, kwargs)
    if side is None:
        return None
    eager = EagerSide(module, args, kwargs)
    walked, givens, compared = _walk(eager, side, judge)
    # No submodule differs on its own input: the top level's own code diverges.
    parent, worst = walked[-1] if walked else ("", top_error)
    method = side.method_of(parent) if walked else side.method
    given = givens[-1] if givens else (args, kwargs)
    introduced, input_err = _introduced(side, parent, method, given, judge)
    enters = _enters(side, walked, givens, judge) if introduced is False else None
    return Located(
        module=parent,
        cls=type(eager.modules[parent]).__name__,
        max_abs_err=float(worst or 0.0),
        excerpt=_clip(side.excerpt(parent)),
        walked=walked,
        compared=compared,
        seconds=time.perf_counter() - t0,
        method=method,
        introduced=introduced,
        input_err=input_err,
        enters=enters,
    )


def _walk(
    eager: EagerSide,
    side: _Isolated | _Either | _OnnxTaps,
    judge: Callable[[Any, Any], Comparison],
) -> tuple[list[tuple[str, float]], list[tuple[Any, Any]], int]:
    """Descend into the first child (in execution order) that differs on eager's input to it.
    Returns the modules walked with their errors, eager's input to each, and how many were compared."""
    parent, compared = "", 0
    walked: list[Any] = []
    givens: list[tuple[Any, Any]] = []  # eager's input to each module walked
    while True:
        children, calls = eager.level(parent, side)
        found = None
        for name in children:  # execution order
            if name not in calls:
                continue
            sub_args, sub_kwargs, expected = calls[name]
            if nested((sub_args, sub_kwargs, expected)):
                # Eager's fast path (nn.TransformerEncoder with a padding mask) hands its
                # layers nested tensors, which no artifact takes.
                continue
            actual = side.output(name, sub_args, sub_kwargs)
            if actual is FAILED:
                continue
            compared += 1
            cmp = judge(expected, actual)
            if not cmp.ok:
                found = (name, cmp.max_abs)
                givens.append((sub_args, sub_kwargs))
                break
        if found is None:
            return walked, givens, compared
        parent = found[0]
        walked.append(found)


def _enters(
    side: Any,
    walked: list[tuple[str, float]],
    givens: list[tuple[Any, Any]],
    judge: Callable[[Any, Any], Comparison],
) -> tuple[str, str] | None:
    """Where a carried error enters: (module whose own code adds it, module it feeds), taken at the
    outermost walked module whose input already differs; ``""`` is the top level."""
    for depth, ((name, _), given) in enumerate(zip(walked, givens)):
        introduced, _ = _introduced(side, name, "in-graph", given, judge)
        if introduced is False:
            return (walked[depth - 1][0] if depth else "", name)
    return None


def _introduced(
    side: Any,
    name: str,
    method: str,
    given: tuple[Any, Any],
    judge: Callable[[Any, Any], Comparison],
) -> tuple[bool | None, float | None]:
    """Whether module ``name`` introduces the error: (introduced, input error).

    An isolated module was fed eager's input, so it introduces the error. In-graph, its input is
    the artifact's upstream value: a second run reads the values entering it, matched by shape
    and dtype against eager's inputs; one matching none means the error came from upstream."""
    if method != "in-graph" or not name:
        return True, None
    try:
        with quiet_torch():
            entering = side.entering(name)
    except Exception:  # noqa: BLE001 - the second run may raise anything; localisation never decides a verdict
        return None, None
    expected = [v for v in pytree.tree_leaves(given) if isinstance(v, torch.Tensor)]
    matched, carried, worst = False, False, 0.0
    for value in entering:
        if not isinstance(value, torch.Tensor):
            continue
        candidates = [e for e in expected if e.shape == value.shape and e.dtype == value.dtype]
        if not candidates:
            continue  # a weight, constant or reshaped value, not one of the module's inputs
        matched = True
        errors = [judge(e, value) for e in candidates]
        if not any(cmp.ok for cmp in errors):
            carried, worst = True, max(worst, min(cmp.max_abs for cmp in errors))
    if not matched:
        return None, None
    return (False, worst) if carried else (True, None)


def _clip(text: str) -> str:
    lines = [line.rstrip() for line in text.strip().splitlines() if line.strip()]
    if len(lines) > EXCERPT_LINES:
        lines = [*lines[:EXCERPT_LINES], f"... ({len(lines) - EXCERPT_LINES} more lines)"]
    return "\n".join(lines)


# --- eager's side of the walk -------------------------------------------------------------------


def nested(tree: object) -> bool:
    return any(isinstance(v, torch.Tensor) and v.is_nested for v in pytree.tree_leaves(tree))


def clone(tree: _T) -> _T:
    return pytree.tree_map(lambda v: v.detach().clone() if isinstance(v, torch.Tensor) else v, tree)


def _forward(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    a, k = clone((args, kwargs))
    with torch.random.fork_rng(devices=[]), torch.no_grad(), quiet_torch():
        seed_rng(0, "cpu")
        module(*a, **k)


Calls = dict[str, tuple[tuple[Any, ...], dict[str, Any], Any]]


class EagerSide:
    """Eager's module at the failing input: what each submodule is given and gives back."""

    def __init__(self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.module, self.args, self.kwargs = module, args, kwargs
        self.modules = dict(module.named_modules())

    def children_calls(self, parent: str) -> tuple[list[str], Calls]:
        """The direct children called under ``parent``, in call order, with each one's first call
        (args, kwargs, output). One eager forward; only direct children's tensors are kept.
        """
        under = [n for n in self.modules if n != parent and (parent == "" or n.startswith(parent + "."))]
        order: list[str] = []
        inputs: dict[str, tuple[Any, Any]] = {}
        calls: Calls = {}
        stack: list[str] = []
        handles = []

        def pre(name: str) -> Callable[..., None]:
            def hook(_: torch.nn.Module, a: tuple[Any, ...], k: dict[str, Any]) -> None:
                if not stack and name not in order:
                    order.append(name)
                    inputs[name] = clone((a, k))  # before forward: an in-place op must not change it
                stack.append(name)

            return hook

        def post(name: str) -> Callable[..., None]:
            def hook(_: torch.nn.Module, a: tuple[Any, ...], k: dict[str, Any], out: object) -> None:
                if stack and stack[-1] == name:
                    stack.pop()
                if not stack and name in inputs and name not in calls:
                    calls[name] = (*inputs[name], clone(out))  # nor a later in-place `x += ...`

            return hook

        try:
            for name in under:
                handles.append(self.modules[name].register_forward_pre_hook(pre(name), with_kwargs=True))
                handles.append(self.modules[name].register_forward_hook(post(name), with_kwargs=True, always_call=True))
            _forward(self.module, self.args, self.kwargs)
        finally:
            for handle in handles:
                handle.remove()
        return order, calls

    def level(self, parent: str, side: _Isolated | _Either | _OnnxTaps) -> tuple[list[str], Calls]:
        """Called children the artifact side can compare; one it cannot is replaced by its own children."""
        order, calls = self.children_calls(parent)
        out: list[str] = []
        for name in order:
            if side.has(name):
                out.append(name)
            else:  # a module with several output values (ONNX): look at what it calls, in order
                deeper, deeper_calls = self.level(name, side)
                out += deeper
                calls.update(deeper_calls)
        return out, calls


# --- the artifact's side of the walk --------------------------------------------------------------
# Submodule outputs are either run alone on eager's input (TorchScript, unflattened export) or
# read from one run of the whole graph (an FX graph, or an ONNX model with extra outputs).


#: What ``output`` gives for a submodule that cannot be run on eager's input to it.
FAILED = object()


def artifact_side(
    backend: Backend, artifact: object, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> _Isolated | _Either | _OnnxTaps | None:
    modules = _submodules(backend, artifact)
    if modules is not None:
        isolated = _Isolated(modules, _prefix(module, set(modules)))
        if backend.exported_program(artifact) is not None:
            # Unflattened submodules may not take the call's arguments (size placeholders, dropped
            # keywords); then fall back to their value in a run of the whole graph.
            return _Either(isolated, _FxTaps(backend.artifact_module(artifact), module, args, kwargs))
        return isolated
    if isinstance(backend, OnnxModelSource) and backend.onnx_model(artifact) is not None:
        return _OnnxTaps(backend, artifact, module, args, kwargs)
    return None


class _Isolated:
    """Submodules of the artifact run alone, on eager's input to them (TorchScript, export)."""

    method = "isolated"

    def __init__(self, modules: dict[str, Any], prefix: str) -> None:
        self.modules, self.prefix = modules, prefix

    def has(self, name: str) -> bool:
        return self.prefix + name in self.modules

    def output(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> object:
        # Each submodule runs once, so TorchScript's profiling executor would only waste time.
        with torch.jit.optimized_execution(False):
            return _call(self.modules[self.prefix + name], args, kwargs)

    def excerpt(self, name: str) -> str:
        return _excerpt(self.modules.get(self.prefix + name))

    def method_of(self, name: str) -> str:
        return self.method


class _Either:
    """Isolated where the submodule takes eager's input, else the module's value in a run."""

    method = "isolated"

    def __init__(self, isolated: _Isolated, taps: _FxTaps) -> None:
        self.isolated, self.taps = isolated, taps
        self._methods: dict[str, str] = {}

    def has(self, name: str) -> bool:
        return self.isolated.has(name) or self.taps.has(name)

    def output(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> object:
        out = self.isolated.output(name, args, kwargs) if self.isolated.has(name) else FAILED
        if out is FAILED and self.taps.has(name):
            out = self.taps.output(name, args, kwargs)
            self._methods[name] = self.taps.method
        return out

    def excerpt(self, name: str) -> str:
        return self.isolated.excerpt(name) or self.taps.excerpt(name)

    def entering(self, name: str) -> list[Any]:
        return self.taps.entering(name)

    def method_of(self, name: str) -> str:
        return self._methods.get(name, self.method)


def _exits(
    nodes: list[tuple[Any, str | None]], name: str, outputs: Callable[[Any], list[Any]], final: set[Any]
) -> list[Any]:
    """Values produced inside module ``name`` that a node outside it, or the graph's output (``final``), uses."""
    inside = {id(node) for node, scope in nodes if scope is not None and _inside(scope, name)}
    produced = [v for node, scope in nodes if id(node) in inside for v in outputs(node)]
    used_outside = {v for node, scope in nodes if scope is not None and id(node) not in inside for v in _inputs(node)}
    return [v for v in produced if v in used_outside or v in final]


def _entries(
    nodes: list[tuple[Any, str | None]],
    name: str,
    outputs: Callable[[Any], list[Any]],
    constant: Callable[[Any], bool],
) -> list[Any]:
    """The non-constant values that module ``name`` uses but does not produce: its inputs in the graph."""
    inside = [node for node, scope in nodes if scope is not None and _inside(scope, name)]
    produced = {v for node in inside for v in outputs(node)}
    entering: list[Any] = []
    for node in inside:
        for value in _inputs(node):
            if value not in produced and value not in entering and not constant(value):
                entering.append(value)
    return entering


def _inputs(node: Any) -> list[Any]:
    if hasattr(node, "all_input_nodes"):  # an FX node
        return list(node.all_input_nodes)
    return list(node.input)  # an ONNX node


class _FxTaps:
    """Each module's output value in one run of the exported graph (``nn_module_stack``)."""

    method = "in-graph"

    def __init__(
        self, graph_module: Any, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        graph = graph_module.graph
        self.nodes = _unwrapped([(node, _fx_module(node)) for node in graph.nodes], module)
        output = next(node for node in graph.nodes if node.op == "output")
        final = set(output.all_input_nodes)
        self.taps: dict[str, Any] = {}
        for name, _ in module.named_modules():
            if name:
                values = _exits(self.nodes, name, lambda node: [node], final)
                if len(values) == 1:
                    self.taps[name] = values[0]
        self.graph_module, self.call = graph_module, (args, kwargs)
        self.values = self._run(set(self.taps.values()))

    def _run(self, wanted: set[Any]) -> dict[Any, Any]:
        """One FX-interpreter run of the program, keeping the values of the ``wanted`` nodes."""
        values: dict[Any, Any] = {}

        class Recorder(torch.fx.Interpreter):
            def run_node(self, node: torch.fx.Node) -> object:
                result = super().run_node(node)
                if node in wanted:
                    values[node] = clone(result)
                return result

        a, k = clone(self.call)
        flat = graph_module_flat_inputs(self.graph_module, (a, k))
        with torch.no_grad():
            Recorder(self.graph_module).run(*flat)
        return values

    def has(self, name: str) -> bool:
        return name in self.taps

    def output(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> object:
        return self.values.get(self.taps[name], FAILED)

    def entering(self, name: str) -> list[Any]:
        """The artifact's values entering module ``name``, from a second run (see ``_introduced``)."""
        nodes = _entries(self.nodes, name, lambda node: [node], lambda node: node.op == "get_attr")
        values = self._run(set(nodes))
        return [values[node] for node in nodes if node in values]

    def excerpt(self, name: str) -> str:
        return "\n".join(
            node.format_node() or "" for node, scope in self.nodes if scope is not None and _inside(scope, name)
        )

    def method_of(self, name: str) -> str:
        return self.method


def _fx_module(node: torch.fx.Node) -> str | None:
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return None
    path = list(stack.values())[-1][0]
    return None if path.startswith("_empty") else path


def _submodules(backend: Backend, artifact: object) -> dict[str, Any] | None:
    """Qualified name -> a callable submodule of the artifact, or None when there are none."""
    script = scripted_module(backend, artifact)
    if script is not None:
        return {name: sub for name, sub in script.named_modules() if _has_forward(sub)}
    program = backend.exported_program(artifact)
    if program is not None:
        tree = torch.export.unflatten(program)
        return dict(tree.named_modules())
    return None


def scripted_module(backend: Backend, artifact: object) -> torch.jit.ScriptModule | None:
    """The TorchScript module the artifact runs, whose submodules each run alone."""
    module = backend.artifact_module(artifact)
    return module if isinstance(module, torch.jit.ScriptModule) else None


def _has_forward(sub: torch.nn.Module) -> bool:
    try:
        sub.code  # noqa: B018 - raises where the trace never called the submodule
    except (AttributeError, RuntimeError):  # no forward, or "Code has not been generated!"
        return False
    return True


def _prefix(module: torch.nn.Module, art_names: set[str]) -> str:
    """The artifact may wrap the module (keywords bound, tensors only): its names start ``module.``."""
    first = next((name for name, _ in module.named_modules() if name), None)
    if first is None or first in art_names:
        return ""
    return "module." if f"module.{first}" in art_names else ""


def _call(target: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> object:
    """Run an artifact submodule on eager's input to it; ``FAILED`` when it cannot take it."""
    a, k = clone((args, kwargs))
    with torch.no_grad(), quiet_torch():
        try:
            return target(*a, **k)
        except Exception:  # noqa: BLE001 - a submodule may refuse a call in any way; try positionally next
            pass
        tensors = call_tensors(a, k)
        try:
            return target(*tensors)
        except Exception:  # noqa: BLE001 - the artifact does not keep this calling convention
            return FAILED


def _excerpt(target: Any) -> str:
    if target is None:
        return ""
    try:
        text = target.code  # TorchScript: what was recorded
    except (AttributeError, RuntimeError):  # no recorded code: its graph instead
        graph = getattr(target, "graph", None)
        text = str(graph) if graph is not None else ""
    return text


# -- ONNX: module outputs as extra graph outputs ----------------------------------------------


def _unwrapped(nodes: list[tuple[Any, str | None]], module: torch.nn.Module) -> list[tuple[Any, str | None]]:
    """Strip the ``module.`` prefix an exporting adapter adds, so scopes match the user's names."""
    names = {name for name, _ in module.named_modules()}
    scopes = {scope for _, scope in nodes if scope}
    if "module" in names or not scopes or not all(s == "module" or s.startswith("module.") for s in scopes):
        return nodes
    return [(node, None if scope is None else scope.removeprefix("module").removeprefix(".")) for node, scope in nodes]


def _inside(scope: str, name: str) -> bool:
    return name == "" or scope == name or scope.startswith(name + ".")


class _OnnxTaps:
    """Each module's output value, from one run of a copy with those values as outputs."""

    method = "in-graph"

    def __init__(
        self,
        backend: OnnxModelSource,
        artifact: object,
        module: torch.nn.Module,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        import onnx  # deferred: onnx is optional (the ONNX backends' own dependency)

        source = backend.onnx_model(artifact)
        assert source is not None, "localize walks an ONNX artifact only where the backend has its model"
        model = onnx.load_from_string(source) if isinstance(source, bytes) else onnx.load(source)
        graph = model.graph
        names = {name for name, _ in module.named_modules()}
        names |= {f"module.{name}" if name else "module" for name in names}  # see _unwrapped
        self.nodes = _unwrapped([(node, node_module(node, names)) for node in graph.node], module)
        outputs = {o.name for o in graph.output}
        self.taps: dict[str, str] = {}
        for name, _ in module.named_modules():
            if not name:
                continue
            values = _exits(self.nodes, name, lambda node: [o for o in node.output if o], outputs)
            if len(values) == 1:  # one value leaves the module: its output
                self.taps[name] = values[0]
        self.backend, self.artifact, self.model, self.call = backend, artifact, model, (args, kwargs)
        self.values = self._run(set(self.taps.values()))

    def _run(self, wanted: set[str]) -> dict[str, Any]:
        """One run of a copy of the model with the ``wanted`` values as extra outputs."""
        import onnx  # deferred: onnx is optional (the ONNX backends' own dependency)

        model = onnx.ModelProto()
        model.CopyFrom(self.model)
        have = {o.name for o in model.graph.output}
        for value in sorted(wanted - have):
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(value))
        return self.backend.run_onnx_model(self.artifact, model.SerializeToString(), *clone(self.call))

    def entering(self, name: str) -> list[Any]:
        """The artifact's values entering module ``name``, from a second run (see ``_introduced``)."""
        graph = self.model.graph
        constant = {init.name for init in graph.initializer} | {
            out for node in graph.node if node.op_type == "Constant" for out in node.output
        }
        names = _entries(
            self.nodes, name, lambda node: [o for o in node.output if o], lambda value: not value or value in constant
        )
        values = self._run(set(names))
        return [values[value] for value in names if value in values]

    def has(self, name: str) -> bool:
        return name in self.taps

    def output(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> object:
        return self.values.get(self.taps[name], FAILED)

    def excerpt(self, name: str) -> str:
        lines = []
        for node, scope in self.nodes:
            if scope is not None and _inside(scope, name):
                ins = ", ".join(node.input)
                lines.append(f"{', '.join(node.output)} = {node.op_type}({ins})")
        return "\n".join(lines)

    def method_of(self, name: str) -> str:
        return self.method


# --- which module an ONNX node was exported from ---------------------------------------------------
# From the dynamo exporter's name-scope metadata, or the legacy exporter's scoped node names.


_SCOPES = "pkg.torch.onnx.name_scopes"


def node_module(node: onnx.NodeProto, names: Collection[str] = ()) -> str | None:
    """The qualified name of the module an ONNX node was exported from; None if unknown.

    ``names`` (the model's qualified names) settles a legacy scope path that reads two ways.
    """
    for prop in node.metadata_props:
        if prop.key == _SCOPES:  # dynamo: ['', 'blocks.2', 'blocks.2.lin', 'linear_2']
            scopes = ast.literal_eval(prop.value)
            return scopes[-2] if len(scopes) >= 2 else ""
    if node.name.startswith("/"):  # legacy: /blocks.2/act/Gelu, /blocks/blocks.2/act/Gelu
        return legacy_scope(node.name.split("/")[1:-1], names)
    return None


def legacy_scope(components: list[str], names: Collection[str] = ()) -> str:
    """The qualified name behind the legacy exporter's scope path.

    Each component is a called module's name from its last non-numeric atom (torch.onnx's
    ``_unqualified_variable_name``), so a called ``nn.Sequential`` child reads
    ``/blocks/blocks.4/`` while an uncalled ``ModuleList`` child reads ``/blocks.4/``;
    naively joining with dots would give ``blocks.blocks.4``, which is no module.
    """
    qualified = ""
    for component in components:
        own = _unqualified(qualified)
        if own and component.startswith(own + ".") and component[len(own) + 1 :].split(".")[0].isnumeric():
            joined = f"{qualified}.{component}" if qualified else component
            within = qualified + component[len(own) :]  # the container's child: blocks + .4
            # A Sequential ``blocks`` holding an uncalled ModuleList also named ``blocks``
            # reads both ways; the module's own names settle it.
            qualified = joined if names and within not in names and joined in names else within
        else:
            qualified = f"{qualified}.{component}" if qualified else component
    return qualified


def _unqualified(qualified: str) -> str:
    atoms = qualified.split(".") if qualified else []
    for i in range(len(atoms) - 1, -1, -1):
        if not atoms[i].isnumeric():
            return ".".join(atoms[i:])
    return qualified
