"""``--torchexport-model-inputs``: input specs in one command-line string.

``x: float32[batch=1..8, 3, 224, 224]`` means ``inputs={"x": TensorSpec(("batch", 3, 224, 224))}``
with ``dims={"batch": (1, 8)}``, the same specs the marker takes. Inputs are separated by ``;``;
a dim's range is written once and later uses name it; integer inputs may add a value range
(``ids: int64[batch=1..4, seq=2..64] in 0..999``). Without ``name:`` the inputs are positional.
A bad string raises ``InvalidArgument`` naming the part it could not read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._compat import torch
from ..errors import InvalidArgument

if TYPE_CHECKING:
    from .specs import TensorSpec

FORM = (
    "NAME: DTYPE[DIM=MIN..MAX, SIZE, ...] [in LOW..HIGH], one per input, separated by ';'; "
    "e.g. 'x: float32[batch=1..8, 3, 224, 224]'"
)
_ONE = re.compile(
    r"^\s*(?:(?P<name>[A-Za-z_]\w*)\s*:\s*)?(?P<dtype>[a-z]\w*)\s*\[(?P<shape>[^\]]*)\]"
    r"\s*(?:in\s+(?P<low>-?[\d.e+-]+)\s*\.\.\s*(?P<high>-?[\d.e+-]+))?\s*$"
)
_RANGE = re.compile(r"^(?P<name>[A-Za-z_]\w*)\s*=\s*(?P<min>\d+)\s*\.\.\s*(?P<max>\d+)$")


@dataclass(frozen=True)
class CompactInputs:
    """What the string declares: ``inputs`` (a tuple, or a dict by name) and ``dims``."""

    inputs: Any
    dims: dict[str, tuple[int, int]]
    text: str


def parse(text: str) -> CompactInputs:
    """``parse("x: float32[batch=1..8, 3, 224, 224]")`` -> the specs and the dims they declare."""

    from .specs import TensorSpec

    dims: dict[str, tuple[int, int]] = {}
    named: dict[str, Any] = {}
    positional: list[Any] = []
    parts = [p for p in text.split(";") if p.strip()]
    if not parts:
        raise InvalidArgument(f"--torchexport-model-inputs is empty; write {FORM}")
    for part in parts:
        match = _ONE.match(part)
        if match is None:
            if re.search(r"\]\s*,\s*\w+\s*:", part):  # "x: float32[2, 4], y: ...": a comma between inputs
                fixed = re.sub(r"\]\s*,\s*(?=\w+\s*:)", "]; ", part.strip())
                raise InvalidArgument(
                    f"--torchexport-model-inputs: inputs are separated by ';', not ',' (a comma separates the "
                    f"sizes inside [...]): write {fixed!r}"
                )
            raise InvalidArgument(f"--torchexport-model-inputs: cannot read {part.strip()!r}; write {FORM}")
        dtype = getattr(torch, match["dtype"], None)
        if not isinstance(dtype, torch.dtype):
            raise InvalidArgument(
                f"--torchexport-model-inputs: {match['dtype']!r} in {part.strip()!r} is no torch dtype; "
                "use float32, float16, bfloat16, float64, int64, int32 or bool"
            )
        shape = tuple(_entry(e.strip(), part, dims) for e in match["shape"].split(",") if e.strip())
        low = _number(match["low"]) if match["low"] is not None else None
        high = _number(match["high"]) if match["high"] is not None else None
        spec = TensorSpec(shape, dtype, low, high)
        if match["name"]:
            if match["name"] in named:
                raise InvalidArgument(f"--torchexport-model-inputs names input {match['name']!r} twice")
            named[match["name"]] = spec
        else:
            positional.append(spec)
    if named and positional:
        raise InvalidArgument(
            "--torchexport-model-inputs: name every input (x: ...; mask: ...) or none of them (positional)"
        )
    for part in parts:
        for entry in _ONE.match(part)["shape"].split(","):  # type: ignore[index]
            name = entry.strip()
            if name and not name.isdigit() and "=" not in name and name not in dims:
                raise InvalidArgument(
                    f"--torchexport-model-inputs: dim {name!r} has no range; write {name}=MIN..MAX at one of its uses, "
                    f"e.g. {name}=1..8"
                )
    return CompactInputs(inputs=named or tuple(positional), dims=dims, text=text)


def example(compact: CompactInputs, generator: torch.Generator | None = None) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """One random call made from the specs, at each dim's smallest size above 1 (sizes 0 and 1
    get specialized by exporters)."""

    def size(entry: Any) -> int:
        if isinstance(entry, int):
            return entry
        low, high = compact.dims[entry]
        return min(max(low, 2), high)

    def make(spec: TensorSpec) -> torch.Tensor:
        shape = [size(e) for e in spec.shape]
        if spec.dtype == torch.bool:
            return torch.rand(shape, generator=generator) > 0.5
        if not spec.dtype.is_floating_point:
            low = int(spec.low) if spec.low is not None else 0
            high = int(spec.high) if spec.high is not None else 9
            return torch.randint(low, high + 1, shape, generator=generator, dtype=spec.dtype)
        t = torch.randn(shape, generator=generator)
        if spec.low is not None or spec.high is not None:
            t = t.clamp(spec.low if spec.low is not None else -1e30, spec.high if spec.high is not None else 1e30)
        return t.to(spec.dtype)

    if isinstance(compact.inputs, dict):
        return (), {name: make(s) for name, s in compact.inputs.items()}
    return tuple(make(s) for s in compact.inputs), {}


def _entry(entry: str, part: str, dims: dict[str, tuple[int, int]]) -> int | str:
    if entry.isdigit():
        return int(entry)
    ranged = _RANGE.match(entry)
    if ranged:
        name, low, high = ranged["name"], int(ranged["min"]), int(ranged["max"])
        if low > high:
            raise InvalidArgument(f"--torchexport-model-inputs: {entry!r} has min above max")
        if name in dims and dims[name] != (low, high):
            raise InvalidArgument(
                f"--torchexport-model-inputs: dim {name!r} has two ranges ({dims[name][0]}..{dims[name][1]} and "
                f"{low}..{high}); write it once and name it elsewhere"
            )
        dims[name] = (low, high)
        return name
    if entry.isidentifier():
        return entry
    raise InvalidArgument(
        f"--torchexport-model-inputs: cannot read the shape entry {entry!r} in {part.strip()!r}; "
        "a shape entry is a size (224), a dim with its range (batch=1..8) or a dim named before (batch)"
    )


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InvalidArgument(f"--torchexport-model-inputs: {text!r} is not a number") from None
    return int(value) if value.is_integer() else value


__all__ = ["FORM", "CompactInputs", "example", "parse"]
