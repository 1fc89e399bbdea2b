"""[Model By Name] A model named on the command line, built and called as a test body would.

``--torchexport-model=SPEC`` checks a model with no test file. ``build`` makes the model (random
weights, never a download, eval mode) and ``infer_inputs`` finds one call to make; the glue calls
it under the recorder, so everything after is a marked test's. Every failure is a ``ModelError``
whose text says what was asked, what went wrong, and the remedy last. See docs/howto-model.md.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._compat import conv_module_types, package_version, pytree, torch
from ..inputs import compact as compact_inputs
from .model_specs import FORMS, LIBRARIES, ModelError, ModelSpec, call_text, find, install_line
from .transformers_models import build as build_transformers
from .transformers_models import inputs as transformers_inputs

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType

#: The batch of drawn images and features: 1 would let exporters specialize the batch dim.
BATCH = 2


def build(spec: ModelSpec) -> torch.nn.Module:
    """The model of ``spec`` with random weights, in eval mode."""
    if spec.kind == "library" and spec.target == "transformers":
        model: object = build_transformers(spec)
    elif spec.kind == "library":
        model = _library_model(spec)
    else:
        factory = _factory(spec)
        try:
            model = factory(**spec.options)
        except Exception as exc:  # noqa: BLE001 - any error of the user's factory is theirs to read
            raise ModelError(
                f"{spec.text}: the factory {spec.name}({call_text(spec)}) raised {type(exc).__name__}: {exc}\n"
                f"{_where(exc)}Fix the factory, or pass its keyword arguments after ?, "
                f"e.g. {spec.text.partition('?')[0]}?hidden=16"
            ) from exc
    if not isinstance(model, torch.nn.Module):
        raise ModelError(
            f"{spec.text}: the factory {spec.name} returned a {type(model).__module__}.{type(model).__qualname__}, "
            "not a torch.nn.Module; point the SPEC at a class that is an nn.Module or a function that returns one"
        )
    return model.eval()


@dataclass
class Inferred:
    """The call to make: its arguments, and where they came from (said in the report)."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    source: str
    #: the next call, made from this call's kwargs and output (a causal LM's decode step)
    then: Any = None


def infer_inputs(
    model: torch.nn.Module, spec: ModelSpec, compact: compact_inputs.CompactInputs | None = None
) -> Inferred:
    """One call of ``model``, from the first source that applies: ``compact``, the model's
    ``example_inputs()``, the library's documented input size, or the first layer's shape."""
    if compact is not None:
        args, kwargs = compact_inputs.example(compact)
        return Inferred(args, kwargs, f"--torchexport-model-inputs={compact.text}")
    if spec.kind == "library" and spec.target == "transformers":
        args, kwargs, source, then = transformers_inputs(model, spec)
        return Inferred(args, kwargs, source, then)
    own = getattr(model, "example_inputs", None)
    if callable(own):
        try:
            given = own()
        except Exception as exc:  # noqa: BLE001 - the model's own helper: its error is the user's
            raise ModelError(
                f"{spec.text}: the model's example_inputs() raised {type(exc).__name__}: {exc}\n"
                f"Fix it, or describe the inputs: {remedy(model, spec)}"
            ) from exc
        args, kwargs = _as_call(given)
        return Inferred(args, kwargs, "the model's example_inputs()")
    size = _library_size(model, spec)
    if size is not None:
        chw, source = size
        return Inferred((torch.randn(BATCH, *chw),), {}, source)
    first = _first_layer(model)
    if first is not None:
        return first
    raise ModelError(
        f"{spec.text}: no inputs could be inferred for {type(model).__name__}: it has no example_inputs(), "
        f"{'its library gives no input size, ' if spec.kind == 'library' else ''}"
        f"and none of its layers says an input shape (the first is {_first_leaf(model)}).\n"
        f"Describe them: {remedy(model, spec)}"
    )


def describe(inferred: Inferred) -> str:
    """The call as the report shows it: ``float32[2, 3, 224, 224]``."""
    flat = pytree.tree_leaves((inferred.args, inferred.kwargs))
    shapes = [
        f"{str(t.dtype).removeprefix('torch.')}[{', '.join(map(str, t.shape))}]" for t in flat if hasattr(t, "shape")
    ]
    return ", ".join(shapes)


def _as_call(given: object) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``example_inputs()``'s answer (a tensor, a tuple, a dict, or ``(args, kwargs)``) as a call."""
    if isinstance(given, dict):
        return (), dict(given)
    if isinstance(given, (tuple, list)):
        if len(given) == 2 and isinstance(given[0], (tuple, list)) and isinstance(given[1], dict):
            return tuple(given[0]), dict(given[1])
        return tuple(given), {}
    return (given,), {}


# -- libraries


def _import_library(spec: ModelSpec) -> ModuleType:
    if find(spec.target) is None:
        raise ModelError(
            f"{spec.text}: {spec.target} is not installed in this environment ({sys.executable}).\n"
            f"Install it: {install_line(spec.target)}"
        )
    try:
        return importlib.import_module(spec.target)
    except ImportError as exc:
        raise ModelError(
            f"{spec.text}: {spec.target} is installed but cannot be imported: {type(exc).__name__}: {exc}\n"
            f"Install what it needs: {install_line(spec.target)} (with its dependencies)"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - a library built for another torch fails in any way
        raise ModelError(_mismatched(spec, exc)) from None


def _mismatched(spec: ModelSpec, exc: BaseException) -> str:
    """The message for a library built for another torch: both versions, and how to pair them."""
    said = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    versions = [f"torch {package_version('torch')}"]
    for name in dict.fromkeys((spec.target, "torchvision")):
        found = package_version(name)
        if found and (name == spec.target or name in said):
            versions.append(f"{name} {found}")
    return (
        f"{spec.text}: {spec.target} does not load against this torch ({', '.join(versions)}): "
        f"{type(exc).__name__}: {said}\nInstall the build that pairs with your torch: {install_line(spec.target)}"
    )


def _library_model(spec: ModelSpec) -> torch.nn.Module:
    library = _import_library(spec)
    if spec.target == "timm":
        known = library.list_models()
        base = spec.name.split(".")[0]  # resnet18.a1_in1k is resnet18 with a pretrained tag
        if base not in known:
            raise ModelError(_unknown(spec, known))
        make = library.create_model
        call: dict[str, Any] = {"pretrained": False, **spec.options}
    else:
        import torchvision.models

        known = torchvision.models.list_models()
        if spec.name not in known:
            raise ModelError(_unknown(spec, known))
        make = torchvision.models.get_model
        builder = torchvision.models.get_model_builder(spec.name)
        call = {"weights": None, **_no_backbone_weights(builder), **spec.options}
    try:
        return make(spec.name, **call)
    except Exception as exc:  # noqa: BLE001 - a keyword the model does not take, a size it refuses
        raise ModelError(
            f"{spec.text}: {spec.target} could not build {spec.name}({call_text(spec)}): {type(exc).__name__}: {exc}\n"
            "Check the keyword arguments after ? against the model's constructor"
        ) from exc


def _no_backbone_weights(builder: Callable[..., object]) -> dict[str, Any]:
    """Never download: torchvision's detection and segmentation builders fetch backbone
    weights even with ``weights=None``, unless told not to."""
    try:
        params = inspect.signature(builder).parameters
    except (TypeError, ValueError):
        return {}
    return {"weights_backbone": None} if "weights_backbone" in params else {}


def _unknown(spec: ModelSpec, known: list[str]) -> str:
    near = difflib.get_close_matches(spec.name, known, n=5, cutoff=0.6)
    listing = (
        "torchvision.models; print(torchvision.models.list_models())"
        if spec.target == "torchvision"
        else ("timm; print(timm.list_models())")
    )
    return f"{spec.text}: {spec.target} has no model named {spec.name!r} ({len(known)} models known).\n" + (
        f"Closest names: {', '.join(near)}" if near else f'List them: python -c "import {listing}"'
    )


def _library_size(model: torch.nn.Module, spec: ModelSpec) -> tuple[tuple[int, ...], str] | None:
    cfg = getattr(model, "pretrained_cfg", None)
    if isinstance(cfg, dict) and cfg.get("input_size"):
        chw = tuple(int(v) for v in cfg["input_size"])
        return chw, f"timm's pretrained_cfg input_size {chw}"
    if spec.kind == "library" and spec.target == "torchvision":
        return _torchvision_size(model, spec.name)
    return None


def _torchvision_size(model: torch.nn.Module, name: str) -> tuple[tuple[int, ...], str] | None:
    """The input size torchvision documents through the weights' preset transforms; detection
    models, which resize their inputs, take 320 x 320."""
    import torchvision.models

    try:
        preset = torchvision.models.get_model_weights(name).DEFAULT.transforms()
    except (
        ValueError,
        KeyError,
        AttributeError,
    ):  # no weights enum: no documented size
        return None
    size = getattr(preset, "crop_size", None) or getattr(preset, "resize_size", None)
    first = _first_conv(model)
    channels = first.in_channels if first is not None else 3
    rank = first.weight.dim() - 2 if first is not None else 2
    if size:
        size = list(size) * (2 if len(size) == 1 else 1)
        if rank == 3:  # video: (channels, frames, height, width)
            return (channels, 16, *size), f"torchvision's preset crop size {tuple(size)}, 16 frames"
        return (channels, *size), f"torchvision's preset transforms size {tuple(size)}"
    if "detection" in type(model).__module__:
        return (channels, 320, 320), "torchvision detection: 3 x 320 x 320 images (the model resizes them)"
    return None


# -- factories


def _factory(spec: ModelSpec) -> Callable[..., object]:
    module = _load_file(spec) if spec.kind == "file" else _import_module(spec)
    owner: Any = module
    for part in spec.name.split("."):
        if not hasattr(owner, part):
            names = [n for n in dir(owner) if not n.startswith("_") and callable(getattr(owner, n, None))]
            near = difflib.get_close_matches(part, names, n=5)
            raise ModelError(
                f"{spec.text}: {spec.target if owner is module else owner.__name__} has no {part!r}"
                + (
                    f"; closest names: {', '.join(near)}"
                    if near
                    else f"; it defines: {', '.join(names[:12]) or 'nothing callable'}"
                )
            )
        owner = getattr(owner, part)
    if not callable(owner):
        raise ModelError(
            f"{spec.text}: {spec.name} is a {type(owner).__name__}, not a class or a function that returns an nn.Module"
        )
    return owner


def _import_module(spec: ModelSpec) -> ModuleType:
    try:
        return importlib.import_module(spec.target)
    except Exception as exc:  # noqa: BLE001 - the user's module: an ImportError or its own error
        raise ModelError(
            f"{spec.text}: cannot import {spec.target}: {type(exc).__name__}: {exc}\n"
            f"{_where(exc)}Make it importable (installed, or its folder on PYTHONPATH / pytest's pythonpath ini)"
        ) from exc


def _load_file(spec: ModelSpec) -> ModuleType:
    """The file as a module registered in ``sys.modules``, since TorchScript reads a class's
    source through it."""
    path = Path(spec.target).resolve()
    name = "torchexport_model_" + "".join(c if c.isalnum() else "_" for c in str(path.with_suffix("")))[-80:]
    if name in sys.modules:
        return sys.modules[name]
    module_spec = importlib.util.spec_from_file_location(name, path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - the user's file: its own error
        del sys.modules[name]
        raise ModelError(
            f"{spec.text}: running {path} raised {type(exc).__name__}: {exc}\n{_where(exc)}".rstrip()
        ) from exc
    return module


# -- the first layer


def _first_leaf(model: torch.nn.Module) -> str:
    for name, sub in model.named_modules():
        if not list(sub.children()):
            return f"{name}: {type(sub).__name__}" if name else f"the model itself, {type(sub).__name__}"
    return type(model).__name__


def _first_conv(model: torch.nn.Module) -> Any:

    for sub in model.modules():
        if isinstance(sub, conv_module_types()):
            return sub
    return None


def _first_layer(model: torch.nn.Module) -> Inferred | None:
    """The expected input of the first layer that implies one."""
    for name, sub in model.named_modules():
        where = f"first layer {name or 'the model'} ({type(sub).__name__}"
        if isinstance(sub, conv_module_types()):
            conv: Any = sub  # for the type checker
            rank = conv.weight.dim() - 2
            shape = (BATCH, conv.in_channels, *([32] * rank))
            return Inferred((torch.randn(shape),), {}, f"{where}, {conv.in_channels} channels): 32 per spatial dim")
        if isinstance(sub, torch.nn.Linear):
            return Inferred((torch.randn(BATCH, sub.in_features),), {}, f"{where}, {sub.in_features} features)")
        if isinstance(sub, torch.nn.Embedding):
            ids = torch.randint(0, sub.num_embeddings, (BATCH, 16))
            ids[0, 0], ids[-1, -1] = 0, sub.num_embeddings - 1  # span the vocabulary
            return Inferred((ids,), {}, f"{where}, {sub.num_embeddings} ids): 16 tokens")
        if isinstance(sub, torch.nn.RNNBase):
            shape = (BATCH, 8, sub.input_size) if sub.batch_first else (8, BATCH, sub.input_size)
            return Inferred((torch.randn(shape),), {}, f"{where}, {sub.input_size} features): 8 steps")
    return None


# -- text


def expected(model: torch.nn.Module) -> str:
    """What the model's own code says it takes: forward's arguments, and the first layer's shape."""
    from ..inputs.specs import forward_params  # deferred: the plugin's import stays torch-free

    params = forward_params(model) or []
    first = _first_layer(model)
    layer = f"; its {first.source.split(':')[0]}" if first is not None else ""
    return f"{type(model).__name__}.forward takes ({', '.join(params)}){layer}"


def remedy(model: torch.nn.Module, spec: ModelSpec) -> str:
    """The flag to add, with an example spec per forward argument, sized from the first layer where
    one says its input shape (an MLP's features, a CNN's channels), else an image's."""
    from ..inputs.specs import forward_params  # deferred: the plugin's import stays torch-free

    params = forward_params(model) or ["x"]
    first = _first_layer(model)
    sizes = ", ".join(map(str, first.args[0].shape[1:])) if first is not None else "3, 224, 224"
    specs = "; ".join(
        f"{name}: float32[{'batch=1..8' if i == 0 else 'batch'}, {sizes if i == 0 else '3, 224, 224'}]"
        for i, name in enumerate(params)
    )
    return (
        f"python -m pytest --torchexport-model={spec.text} --torchexport-model-inputs='{specs}' "
        "(the check command's --inputs; your sizes and dtypes, ; between inputs; see docs/howto-model.md)"
    )


def _where(exc: BaseException) -> str:
    """The user's line that raised, as 'at file:line'."""
    tb = exc.__traceback__
    last = None
    while tb is not None:
        last = tb
        tb = tb.tb_next
    if last is None:
        return ""
    return f"at {last.tb_frame.f_code.co_filename}:{last.tb_lineno}\n"


__all__ = [
    "BATCH",
    "FORMS",
    "LIBRARIES",
    "Inferred",
    "ModelError",
    "ModelSpec",
    "build",
    "describe",
    "expected",
    "infer_inputs",
    "remedy",
]
