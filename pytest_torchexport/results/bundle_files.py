"""A bundle's files: plain JSON and safetensors, nothing pickled, so reading one never runs
code from it. One folder per check::

    DIR/<test>/<backend>[-<device>]/
        bundle.json          what was checked and how, each case's inputs and outputs as a tree
        tensors.safetensors  every tensor the cases name, by key
        artifact/            the saved artifact, as the backend saved it

The safetensors format is written here, so no side needs the ``safetensors`` package. A tree
is JSON whose tensors are ``{"tensor": key}`` and whose containers are tagged (``{"tuple": [...]}``).
See docs/howto-verify.md.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

import torch

FORMAT = 1
MANIFEST = "bundle.json"
TENSORS = "tensors.safetensors"
ARTIFACT = "artifact"

_DTYPES = {
    "float64": "F64",
    "float32": "F32",
    "float16": "F16",
    "bfloat16": "BF16",
    "int64": "I64",
    "int32": "I32",
    "int16": "I16",
    "int8": "I8",
    "uint8": "U8",
    "bool": "BOOL",
}
_NAMES = {code: name for name, code in _DTYPES.items()}


class UnsupportedValue(Exception):
    """A value a bundle cannot hold as plain data (an object, a complex tensor)."""


def encode(tree: object, tensors: dict[str, Any], prefix: str) -> object:
    """``tree`` as JSON, its tensors added to ``tensors`` under keys starting with ``prefix``."""
    if isinstance(tree, torch.Tensor):
        if str(tree.dtype).removeprefix("torch.") not in _DTYPES:
            raise UnsupportedValue(f"a {tree.dtype} tensor")
        key = f"{prefix}{len(tensors)}"
        tensors[key] = tree.detach().to("cpu").contiguous()
        return {"tensor": key}
    if tree is None or isinstance(tree, (bool, int, str)):
        return tree
    if isinstance(tree, float):
        return tree if math.isfinite(tree) else {"float": repr(tree)}
    if isinstance(tree, (tuple, list)):
        return {
            type(tree).__name__ if type(tree) in (tuple, list) else "tuple": [encode(v, tensors, prefix) for v in tree]
        }
    if isinstance(tree, dict) and all(isinstance(k, str) for k in tree):
        return {"dict": {k: encode(v, tensors, prefix) for k, v in tree.items()}}
    raise UnsupportedValue(f"a {type(tree).__name__} value")


def decode(node: object, tensors: dict[str, Any]) -> object:
    """The tree ``encode`` wrote, its tensors taken from ``tensors``."""
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    if not isinstance(node, dict) or len(node) != 1:
        raise ValueError(f"not a bundle tree node: {node!r:.80}")
    ((tag, value),) = node.items()
    if tag == "tensor":
        return tensors[value]
    if tag == "float":
        return float(value)
    if tag == "tuple":
        return tuple(decode(v, tensors) for v in value)
    if tag == "list":
        return [decode(v, tensors) for v in value]
    if tag == "dict":
        return {k: decode(v, tensors) for k, v in value.items()}
    raise ValueError(f"unknown bundle tree tag {tag!r}")


def save_tensors(path: Path, tensors: dict[str, Any]) -> None:
    """``tensors`` (contiguous, on CPU) in the safetensors format."""
    header: dict[str, Any] = {}
    blobs, at = [], 0
    for key, tensor in tensors.items():
        data = tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b""
        header[key] = {
            "dtype": _DTYPES[str(tensor.dtype).removeprefix("torch.")],
            "shape": list(tensor.shape),
            "data_offsets": [at, at + len(data)],
        }
        blobs.append(data)
        at += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as out:
        out.write(struct.pack("<Q", len(text)) + text)
        for blob in blobs:
            out.write(blob)


def load_tensors(path: Path) -> dict[str, Any]:
    data = Path(path).read_bytes()
    (length,) = struct.unpack_from("<Q", data, 0)
    header = json.loads(data[8 : 8 + length])
    body = memoryview(data)[8 + length :]
    out = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        dtype = getattr(torch, _NAMES[info["dtype"]])
        raw = bytearray(body[begin:end])
        flat = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
        out[key] = flat.reshape(info["shape"])
    return out


def find(root: Path) -> list[Path]:
    """The bundle folders under ``root`` (or ``root`` itself), in a stable order."""
    root = Path(root)
    if (root / MANIFEST).exists():
        return [root]
    return sorted(p.parent for p in root.rglob(MANIFEST))


__all__ = [
    "ARTIFACT",
    "FORMAT",
    "MANIFEST",
    "TENSORS",
    "UnsupportedValue",
    "decode",
    "encode",
    "find",
    "load_tensors",
    "save_tensors",
]
