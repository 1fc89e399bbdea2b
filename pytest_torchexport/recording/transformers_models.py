"""[Model By Name] ``transformers:NAME``: a transformers model built from its config class.

``transformers:gpt2?n_layer=2`` builds the model of the type's task from
``AutoConfig.for_model``; ``transformers:GPT2LMHeadModel`` names the class instead. Weights are
random from a fixed seed, so nothing is downloaded. Sizes the SPEC does not set are brought down
to ``TINY``, so a check takes seconds. A causal LM is called with a left-padded prefill, then a
decode step with the prefill's cache. See docs/howto-model.md.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from typing import TYPE_CHECKING, Any

from .._compat import torch
from .model_specs import ModelError, ModelSpec, call_text, find

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType

#: Config sizes brought down (never up) where the SPEC does not set them.
TINY: dict[str, int] = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "intermediate_size": 64,
    "vocab_size": 1000,
    "d_ff": 64,
    "d_kv": 16,
    "num_decoder_layers": 2,
    "encoder_layers": 2,
    "decoder_layers": 2,
    "encoder_attention_heads": 2,
    "decoder_attention_heads": 2,
    "encoder_ffn_dim": 64,
    "decoder_ffn_dim": 64,
    "n_inner": 64,
}
#: A convolutional feature extractor's channels per layer (wav2vec2's ``conv_dim``).
TINY_CHANNELS = 32
#: The batch of the inferred call: 1 would let exporters specialize the batch dim.
BATCH = 2
#: tokens in the prefill, samples in a waveform
TOKENS, SAMPLES = 8, 1600
#: padded positions in the one padded row
PADDED = 2
#: so a SPEC is the same model on every run
SEED = 0
INSTALL = "pip install transformers"


def build(spec: ModelSpec) -> torch.nn.Module:
    """The model of ``spec``, random weights, eval mode."""
    transformers = _import(spec)
    cls = getattr(transformers, spec.name, None) if spec.name[:1].isupper() else None
    try:
        if cls is not None and isinstance(getattr(cls, "config_class", None), type):
            config = cls.config_class(**tiny(cls.config_class(), spec))
            with torch.random.fork_rng():
                torch.manual_seed(SEED)
                model = cls(config)
        else:
            config = _config(transformers, spec)
            auto = task(transformers, config)
            with torch.random.fork_rng():
                torch.manual_seed(SEED)
                model = auto.from_config(config)
    except ModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - a keyword the config refuses, sizes that do not fit
        said = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        if _while_importing(exc):  # transformers' own module for the model failed to import
            raise ModelError(
                f"{spec.text}: transformers {transformers.__version__} cannot import its code for {spec.name}: "
                f"{said}\nInstall what that code imports (transformers' optional dependencies, e.g. tokenizers)"
            ) from exc
        raise ModelError(
            f"{spec.text}: transformers could not build {spec.name}({call_text(spec)}): {said}\n"
            "Check the keyword arguments after ? against the model's config class"
        ) from exc
    return model.eval()


def _while_importing(exc: BaseException) -> bool:
    """Whether ``exc`` was raised while Python imported a module (a frame of importlib's)."""
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        tb = tb.tb_next
    return False


def _import(spec: ModelSpec) -> ModuleType:
    if find("transformers") is None:
        raise ModelError(f"{spec.text}: transformers is not installed in this environment.\nInstall it: {INSTALL}")
    try:
        return importlib.import_module("transformers")
    except ImportError as exc:
        raise ModelError(f"{spec.text}: transformers cannot be imported: {exc}\nInstall it: {INSTALL}") from exc


def _config(transformers: ModuleType, spec: ModelSpec) -> object:
    known = list(transformers.CONFIG_MAPPING.keys())
    if spec.name not in known:
        near = difflib.get_close_matches(spec.name, known, n=5, cutoff=0.6)
        raise ModelError(
            f"{spec.text}: transformers {transformers.__version__} has no model type {spec.name!r} "
            f"({len(known)} known) and no model class of that name.\n"
            + (
                f"Closest names: {', '.join(near)}"
                if near
                else "Name a model type (gpt2, bert, t5) or a class (GPT2LMHeadModel)"
            )
        )
    default = transformers.AutoConfig.for_model(spec.name)
    return transformers.AutoConfig.for_model(spec.name, **tiny(default, spec))


def tiny(default: object, spec: ModelSpec) -> dict[str, Any]:
    """The config's keyword arguments: the SPEC's, and each ``TINY`` size it does not set (by name
    or ``attribute_map`` alias). Token ids past the smaller vocabulary are moved inside it."""
    aliases = dict(getattr(default, "attribute_map", {}) or {})
    said = set()
    for key in spec.options:
        said |= {key, aliases.get(key, key)} | {alias for alias, name in aliases.items() if name == key}
    out: dict[str, Any] = {}
    for key, small in TINY.items():
        name = aliases.get(key, key)
        value = getattr(default, name, None)
        if key in said or name in said or not isinstance(value, int) or isinstance(value, bool) or value <= small:
            continue
        out[key] = small
    channels = getattr(default, "conv_dim", None)
    if "conv_dim" not in said and isinstance(channels, (tuple, list)) and channels:
        out["conv_dim"] = (TINY_CHANNELS,) * len(channels)
    out.update(spec.options)
    vocab = out.get("vocab_size", getattr(default, "vocab_size", None))
    if isinstance(vocab, int):
        for key in ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id", "sep_token_id"):
            value = getattr(default, key, None)
            if key not in said and isinstance(value, int) and value >= vocab:
                out[key] = vocab - 1
    return out


def task(transformers: ModuleType, config: object) -> Any:
    """The Auto class of the model type's task: seq2seq LM for an encoder-decoder, else masked
    LM, causal LM, image classification, CTC, and the base model last."""
    kind = type(config)
    if getattr(config, "is_encoder_decoder", False) and kind in transformers.MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING:
        return transformers.AutoModelForSeq2SeqLM
    for mapping, auto in (
        ("MODEL_FOR_MASKED_LM_MAPPING", "AutoModelForMaskedLM"),
        ("MODEL_FOR_CAUSAL_LM_MAPPING", "AutoModelForCausalLM"),
        ("MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING", "AutoModelForImageClassification"),
        ("MODEL_FOR_CTC_MAPPING", "AutoModelForCTC"),
    ):
        if kind in getattr(transformers, mapping, ()):
            return getattr(transformers, auto)
    return transformers.AutoModel


def causal(model: torch.nn.Module) -> bool:
    """A decoder-only LM with a cache: its served calls are a prefill and decode steps."""
    config = getattr(model, "config", None)
    return (
        config is not None
        and not getattr(config, "is_encoder_decoder", False)
        and type(model).__name__.endswith(("ForCausalLM", "LMHeadModel"))
        and cache_argument(model) is not None
    )


#: What transformers calls the cache a forward takes and returns: ``cache`` from 5.24 on,
#: ``past_key_values`` before (still taken, with a deprecation warning, until 5.40).
CACHE_ARGUMENTS = ("cache", "past_key_values")


def cache_argument(model: torch.nn.Module) -> str | None:
    """The name ``model.forward`` takes its cache by, in the installed release's own words."""
    params = inspect.signature(model.forward).parameters
    return next((name for name in CACHE_ARGUMENTS if name in params), None)


def inputs(model: Any, spec: ModelSpec) -> tuple[tuple[Any, ...], dict[str, Any], str, Any]:
    """(args, kwargs, where they came from, the next call or None). A causal LM's mask is padded
    on the left, as served for batched generation; its decode step is built from the output."""
    config = model.config
    main = getattr(model, "main_input_name", "input_ids")
    params = inspect.signature(model.forward).parameters
    generator = torch.Generator().manual_seed(SEED)
    if main == "input_ids":
        embedding = model.get_input_embeddings()
        vocab = int(getattr(embedding, "num_embeddings", 0) or config.vocab_size)
        left = causal(model)
        kwargs: dict[str, Any] = {"input_ids": _ids(vocab, TOKENS, generator)}
        if "attention_mask" in params:
            kwargs["attention_mask"] = _padded(TOKENS, left=left)
        if getattr(config, "is_encoder_decoder", False) and "decoder_input_ids" in params:
            kwargs["decoder_input_ids"] = _ids(vocab, TOKENS // 2, generator)
        side = "left" if left else "right"
        source = f"transformers {type(model).__name__}: ids in its vocabulary of {vocab}, a mask padded on the {side}"
        if left:
            name = cache_argument(model) or "past_key_values"
            return (), kwargs, source + ", then a decode step with the cache", _decode(vocab, generator, name)
        return (), kwargs, source, None
    if main == "pixel_values":
        channels, size = getattr(config, "num_channels", 3), getattr(config, "image_size", 224)
        size = size if isinstance(size, int) else int(size[0])
        pixels = torch.randn(BATCH, channels, size, size, generator=generator)
        return (), {"pixel_values": pixels}, f"transformers {type(model).__name__}: images of {size} x {size}", None
    if main == "input_values":
        wave = torch.randn(BATCH, SAMPLES, generator=generator)
        return (), {"input_values": wave}, f"transformers {type(model).__name__}: {SAMPLES}-sample waveforms", None
    raise ModelError(
        f"{spec.text}: no inputs are inferred for {type(model).__name__}, whose main input is {main!r} "
        "(ids, images and waveforms are).\nDescribe them with --torchexport-model-inputs (docs/howto-model.md)"
    )


def _ids(vocab: int, length: int, generator: torch.Generator) -> torch.Tensor:
    ids = torch.randint(0, vocab, (BATCH, length), generator=generator)
    ids[0, 0], ids[-1, -1] = 0, vocab - 1  # span the vocabulary
    return ids


def _padded(length: int, *, left: bool) -> torch.Tensor:
    mask = torch.ones(BATCH, length, dtype=torch.int64)
    if left:
        mask[0, :PADDED] = 0
    else:
        mask[0, -PADDED:] = 0
    return mask


def _decode(
    vocab: int, generator: torch.Generator, name: str
) -> Callable[[dict[str, Any], object], tuple[tuple[Any, ...], dict[str, Any]]]:
    """The decode step: one new token per row, the prefill's cache fed back as ``name``."""

    def step(kwargs: dict[str, Any], output: object) -> tuple[tuple[Any, ...], dict[str, Any]]:
        new = torch.randint(0, vocab, (BATCH, 1), generator=generator)
        cache = next(getattr(output, n) for n in CACHE_ARGUMENTS if getattr(output, n, None) is not None)
        nxt: dict[str, Any] = {"input_ids": new, name: cache}
        if "attention_mask" in kwargs:
            mask = kwargs["attention_mask"]
            nxt["attention_mask"] = torch.cat([mask, torch.ones(BATCH, 1, dtype=mask.dtype)], dim=1)
        return (), nxt

    return step


__all__ = ["BATCH", "TINY", "build", "causal", "inputs", "task", "tiny"]
