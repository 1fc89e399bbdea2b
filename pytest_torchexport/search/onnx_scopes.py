"""Which module an ONNX node was exported from: the dynamo exporter's name-scope metadata, or
the legacy exporter's scoped node names (``/blocks.2/act/Gelu``) read back into qualified names."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

_SCOPES = "pkg.torch.onnx.name_scopes"


def node_module(node: Any, names: Collection[str] = ()) -> str | None:
    """The qualified name of the module an ONNX node was exported from; None if unknown.

    ``names`` (the module's qualified names) settles the rare scope path that reads two ways.
    """
    import ast

    for prop in node.metadata_props:
        if prop.key == _SCOPES:  # dynamo: ['', 'blocks.2', 'blocks.2.lin', 'linear_2']
            scopes = ast.literal_eval(prop.value)
            return scopes[-2] if len(scopes) >= 2 else ""
    if node.name.startswith("/"):  # legacy: /blocks.2/act/Gelu, /blocks/blocks.2/act/Gelu
        return legacy_scope(node.name.split("/")[1:-1], names)
    return None


def legacy_scope(components: list[str], names: Collection[str] = ()) -> str:
    """[Legacy Scopes] The qualified name behind the legacy exporter's scope path.

    Each component is the *unqualified* name of a module that was called: its qualified
    name from the last atom that is not a number (``_unqualified_variable_name`` in
    torch.onnx's tracing), so a container keeps its own name before the index. An
    ``nn.Sequential`` ``blocks`` is called, and its fifth child is ``/blocks/blocks.4/``;
    a ``ModuleList`` is only iterated, never called, so its child is ``/blocks.4/``.
    Joining the components with dots named ``blocks.blocks.4``, which is no module, and
    every node of the Sequential fell into ``blocks``.
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
