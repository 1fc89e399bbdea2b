"""[Localisation] The artifact's side of the walk: each of its submodules' output, reached as
its kind of artifact allows (see ``localize.py``): run alone on eager's input to it
(TorchScript, unflattened ``torch.export``), or its value in one run of the whole graph (the
exported program's FX graph, an ONNX model with those values as extra outputs). ``FAILED``
is the output of a submodule that cannot take eager's input."""

from __future__ import annotations

from typing import Any

import torch

from .._compat import quiet_torch
from ..backends.base import Backend, OnnxModelSource, call_tensors
from .eager_side import clone
from .onnx_scopes import node_module

#: What ``output`` gives for a submodule that cannot be run on eager's input to it.
FAILED = object()


def artifact_side(backend: Backend, artifact: Any, module: torch.nn.Module, args: Any, kwargs: Any) -> Any:
    modules = _submodules(backend, artifact)
    if modules is not None:
        isolated = _Isolated(modules, _prefix(module, set(modules)))
        if backend.exported_program(artifact) is not None:
            # Unflattened submodules take the sizes and values their graph needs, not always
            # the call's arguments: where one cannot take eager's input, use its value in a run.
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

    def output(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        # Each submodule runs once: TorchScript's profiling executor would spend its first
        # calls profiling and optimising (~0.1 s a submodule on an encoder) for nothing.
        with torch.jit.optimized_execution(False):
            return _call(self.modules[self.prefix + name], args, kwargs)

    def excerpt(self, name: str) -> str:
        return _excerpt(self.modules.get(self.prefix + name))

    def method_of(self, name: str) -> str:
        return self.method


class _Either:
    """Isolated where the submodule takes eager's input, else the module's value in a run."""

    method = "isolated"

    def __init__(self, isolated: _Isolated, taps: Any) -> None:
        self.isolated, self.taps = isolated, taps
        self._methods: dict[str, str] = {}

    def has(self, name: str) -> bool:
        return self.isolated.has(name) or self.taps.has(name)

    def output(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
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


def _exits(nodes: list[tuple[Any, str | None]], name: str, outputs: Any, final: set[Any]) -> list[Any]:
    """Values produced inside module ``name`` that a node outside it (or the graph's output) uses.

    ``nodes`` is (node, module) in graph order; ``outputs(node)`` its values; ``users`` of
    a value are looked up through ``final`` (the graph's outputs) and the nodes' inputs.
    """
    inside = {id(node) for node, scope in nodes if scope is not None and _inside(scope, name)}
    produced = [v for node, scope in nodes if id(node) in inside for v in outputs(node)]
    used_outside = {v for node, scope in nodes if scope is not None and id(node) not in inside for v in _inputs(node)}
    return [v for v in produced if v in used_outside or v in final]


def _entries(nodes: list[tuple[Any, str | None]], name: str, outputs: Any, constant: Any) -> list[Any]:
    """Values used by nodes inside module ``name`` that no node inside it produced (its inputs
    as the graph sees them), less ``constant`` ones (weights, initializers, constants)."""
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

    def __init__(self, graph_module: Any, module: torch.nn.Module, args: Any, kwargs: Any) -> None:
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
        from .._compat import graph_module_flat_inputs

        values: dict[Any, Any] = {}

        class Recorder(torch.fx.Interpreter):
            def run_node(self, node: Any) -> Any:
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

    def output(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return self.values.get(self.taps[name], FAILED)

    def entering(self, name: str) -> list[Any]:
        """The artifact's values entering module ``name`` (a second run: [Introduced Or Carried])."""
        nodes = _entries(self.nodes, name, lambda node: [node], lambda node: node.op == "get_attr")
        values = self._run(set(nodes))
        return [values[node] for node in nodes if node in values]

    def excerpt(self, name: str) -> str:
        return "\n".join(
            node.format_node() or "" for node, scope in self.nodes if scope is not None and _inside(scope, name)
        )

    def method_of(self, name: str) -> str:
        return self.method


def _fx_module(node: Any) -> str | None:
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return None
    path = list(stack.values())[-1][0]
    return None if path.startswith("_empty") else path


def _submodules(backend: Backend, artifact: Any) -> dict[str, Any] | None:
    """Qualified name -> a callable submodule of the artifact, or None when there are none."""
    script = scripted_module(backend, artifact)
    if script is not None:
        return {name: sub for name, sub in script.named_modules() if _has_forward(sub)}
    program = backend.exported_program(artifact)
    if program is not None:
        tree = torch.export.unflatten(program)
        return dict(tree.named_modules())
    return None


def scripted_module(backend: Backend, artifact: Any) -> torch.jit.ScriptModule | None:
    """The TorchScript module the artifact runs, whose submodules each run alone."""
    module = backend.artifact_module(artifact)
    return module if isinstance(module, torch.jit.ScriptModule) else None


def _has_forward(sub: Any) -> bool:
    try:
        sub.code  # noqa: B018 - raises where the trace never called the submodule
    except (AttributeError, RuntimeError):  # no forward (AttributeError); fx's "Code has not been generated!"
        return False
    return True


def _prefix(module: torch.nn.Module, art_names: set[str]) -> str:
    """The artifact may wrap the module (keywords bound, tensors only): its names start ``module.``."""
    first = next((name for name, _ in module.named_modules() if name), None)
    if first is None or first in art_names:
        return ""
    return "module." if f"module.{first}" in art_names else ""


def _call(target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Run an artifact submodule on eager's input to it; ``FAILED`` when it cannot take it."""
    a, k = clone((args, kwargs))
    with torch.no_grad(), quiet_torch():
        try:
            return target(*a, **k)
        except Exception:  # noqa: BLE001 - the artifact's submodule may refuse a call in any way; tried positionally next
            pass
        tensors = call_tensors(a, k)
        try:
            return target(*tensors)
        except Exception:  # noqa: BLE001 - a calling convention the artifact does not keep, raised any way; _FAILED says so
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
    """Scopes as the user's module names them: an adapter the backend exported through
    (keywords bound, tensors positional) holds the module as ``module``."""
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
        self, backend: OnnxModelSource, artifact: Any, module: torch.nn.Module, args: Any, kwargs: Any
    ) -> None:
        import onnx

        source = backend.onnx_model(artifact)
        assert source is not None, "localize walks an ONNX artifact only where the backend has its model"
        model = onnx.load_from_string(source) if isinstance(source, bytes) else onnx.load(source)
        graph = model.graph
        names = {name for name, _ in module.named_modules()}
        names |= {f"module.{name}" if name else "module" for name in names}  # through an adapter (_unwrapped)
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
        import onnx

        model = onnx.ModelProto()
        model.CopyFrom(self.model)
        have = {o.name for o in model.graph.output}
        for value in sorted(wanted - have):
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(value))
        return self.backend.run_onnx_model(self.artifact, model.SerializeToString(), *clone(self.call))

    def entering(self, name: str) -> list[Any]:
        """The artifact's values entering module ``name`` (a second run: [Introduced Or Carried])."""
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

    def output(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
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
