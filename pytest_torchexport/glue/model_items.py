"""[Model By Name] ``--torchexport-model=SPEC``: a test made from a model's name, no test file.

Each SPEC becomes the items a marked test would have; the item's body builds the model and
calls it once on inferred inputs, recorded like any test body. See docs/howto-model.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .._compat import torch
from ..errors import ExportMismatch, InvalidArgument
from ..inputs.compact import parse
from ..recording.models import ModelError, ModelSpec, build, describe, expected, infer_inputs, remedy
from . import items
from .markers import MARKER, resolve
from .state import STATE
from .wording import in_flag_words

#: The parent collector's name; every model item's node id starts with it.
PREFIX = "torchexport-model"
SPECS = pytest.StashKey[list]()
INPUTS = pytest.StashKey[Any]()
ONLY = "torchexport_models_only"  # declared in cli.py


def configure(config: pytest.Config) -> None:
    """Read the SPECs and the inputs once, at the start; a bad one is a usage error."""
    # torchexport_models: the ini key's earlier name (cli.INI_ALIASES)
    texts = [
        *(config.getoption("torchexport_model") or []),
        *(config.getini("torchexport_model") or []),
        *(config.getini("torchexport_models") or []),
    ]
    base = Path(config.invocation_params.dir)
    specs, errors = [], []
    for text in dict.fromkeys(t.strip() for t in texts if t.strip()):
        try:
            specs.append(ModelSpec.parse(text, base))
        except ModelError as exc:
            errors.append(str(exc))
    if errors:
        raise pytest.UsageError("\n".join(errors))
    config.stash[SPECS] = specs
    given = config.getoption("torchexport_model_inputs") or config.getini("torchexport_model_inputs")
    config.stash[INPUTS] = None
    if given:
        if not specs:
            raise pytest.UsageError(
                "--torchexport-model-inputs describes the inputs of --torchexport-model models; none was given"
            )

        try:
            config.stash[INPUTS] = parse(given)
        except InvalidArgument as exc:
            raise pytest.UsageError(str(exc)) from None


def ignore(config: pytest.Config) -> bool | None:
    """Under ``--torchexport-models-only`` no test file is collected (None: pytest decides)."""
    return True if config.getoption(ONLY, False) or config.getini(ONLY) else None


def collect(session: pytest.Session, collected: list[pytest.Item]) -> None:
    """Put each SPEC's items first, collected through pytest's hooks so xdist sees them."""
    if not session.config.stash.get(SPECS, []):
        return
    parent = ModelCollector.from_parent(session, name=PREFIX, nodeid=PREFIX)
    report = parent.ihook.pytest_make_collect_report(collector=parent)
    parent.ihook.pytest_collectreport(report=report)
    collected[:0] = [node for node in report.result if isinstance(node, pytest.Item)]


class ModelCollector(pytest.Collector):
    """The parent of every model's items."""

    def collect(self) -> list[pytest.Item]:
        state = self.config.stash[STATE]
        compact = self.config.stash.get(INPUTS, None)
        marker = {"inputs": compact.inputs, "dims": compact.dims} if compact is not None else {}
        made: list[pytest.Item] = []
        for spec in self.config.stash[SPECS]:
            options = resolve(state, marker, f"{PREFIX}::{spec.text}")
            for target in items.targets(options):
                item = ModelItem.from_parent(self, name=f"{spec.text}[{target.id}]", spec=spec)
                if marker:
                    item.add_marker(getattr(pytest.mark, MARKER)(**marker))
                items.attach(item, target)
                made.append(item)
        return made


class ModelItem(pytest.Item):
    """One (backend, device) of a model named by a SPEC; its body builds and calls the model."""

    def __init__(self, *, spec: ModelSpec, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec = spec

    def runtest(self) -> None:
        if self.stash.get(items.REUSE, False):
            return  # [Body Once] the model's first item made the call

        model = build(self.spec)
        inferred = infer_inputs(model, self.spec, self.config.stash.get(INPUTS, None))
        try:
            with torch.no_grad():
                output = model(*inferred.args, **inferred.kwargs)
                if inferred.then is not None:  # a causal LM's decode step after the prefill
                    args, kwargs = inferred.then(inferred.kwargs, output)
                    model(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - eager refusing the inferred call is the usage error to explain
            given = inferred.source.startswith("--torchexport-model-inputs")
            raise ModelError(
                f"{self.spec.text}: {type(model).__name__} does not run on the "
                f"{'inputs given' if given else 'inferred inputs'} ({describe(inferred)}, from {inferred.source}): "
                f"{type(exc).__name__}: {str(exc).splitlines()[0]}\n"
                f"Expected from the model's code: {expected(model)}.\n"
                f"Describe them: {remedy(model, self.spec)}"
            ) from exc
        self.config.stash[STATE].model_inputs[self.spec.text] = f"{describe(inferred)} ({inferred.source})"

    def reportinfo(self) -> tuple[Any, int, str]:
        path = Path(self.spec.target) if self.spec.kind == "file" else self.config.rootpath
        return path, 0, f"{PREFIX}::{self.name}"

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        # The message says it all; the frames would bury it.
        if isinstance(excinfo.value, (ModelError, ExportMismatch)):
            return in_flag_words(str(excinfo.value), bool(self.config.getoption(ONLY, False)))
        return super().repr_failure(excinfo, style=style)


def inputs_note(item: pytest.Item) -> dict[str, Any] | None:
    """A model item's SPEC and the inputs its model was called with, for its row."""
    if not isinstance(item, ModelItem):
        return None
    inputs = item.config.stash[STATE].model_inputs.get(item.spec.text)
    return {"spec": item.spec.text, **({"inputs": inputs} if inputs else {})}


def is_model_error(error: BaseException) -> bool:
    """Whether the error is a SPEC's model that could not be built or called."""
    return isinstance(error, ModelError)


__all__ = ["PREFIX", "ModelCollector", "ModelItem", "collect", "configure", "ignore", "inputs_note", "is_model_error"]
