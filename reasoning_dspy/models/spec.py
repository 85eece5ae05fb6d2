"""What the rest of the library knows about a loaded model: its decoder layers (found by
attribute path, whatever the architecture), their residual width, and how a layer's output looks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

# Attribute paths to the decoder-layer list, tried in order. Covers Llama/Mistral/Qwen/Gemma
# (`model.layers`), GPT-2/GPT-J/Bloom (`transformer.h`), GPT-NeoX (`gpt_neox.layers`) and OPT.
LAYER_PATHS: tuple[str, ...] = (
    "model.layers",
    "model.model.layers",
    "transformer.h",
    "gpt_neox.layers",
    "model.decoder.layers",
    "layers",
    "h",
)

class ModelLoadError(RuntimeError):
    """The model could not be loaded; the message says why and what to do instead."""


def kv_cache_kwarg(model: nn.Module) -> str:
    """The keyword that passes a KV cache to this model's `forward`/`generate`: `cache` in recent
    transformers (which deprecate `past_key_values`), `past_key_values` before that."""
    import inspect

    return "cache" if "cache" in inspect.signature(type(model).forward).parameters else "past_key_values"


def find_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """Return `(path, layers)` for the decoder-layer list of any supported architecture."""
    for path in LAYER_PATHS:
        obj: Any = model
        for attr in path.split("."):
            obj = getattr(obj, attr, None)
            if obj is None:
                break
        if isinstance(obj, nn.ModuleList) and len(obj) > 0:
            return path, obj
    raise ValueError(
        f"cannot find the decoder layers of {type(model).__name__}: tried {', '.join(LAYER_PATHS)}. "
        "Pass a Llama/Mistral/Qwen-style or GPT-2-style causal LM."
    )


def layer_output(output: Any) -> torch.Tensor:
    """The hidden state a decoder layer returned, `[batch, seq, d_model]`: transformers >= 5 layers
    return the tensor itself, older ones a tuple whose first item it is. Every hook goes through here."""
    return output[0] if isinstance(output, tuple) else output


def replace_layer_output(output: Any, hidden: torch.Tensor) -> Any:
    """`output` with its hidden state swapped for `hidden`, in the same form (tensor or tuple)."""
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


@dataclass
class ModelSpec:
    """What the rest of the library needs to know about a loaded model."""

    name: str
    n_layers: int
    d_model: int
    layers_path: str
    layers: nn.ModuleList = field(repr=False)

    def layer(self, index: int) -> nn.Module:
        """The decoder layer `index` (negative counts from the end), with a clear range error."""
        return self.layers[self.check_layer(index)]

    def check_layer(self, index: int) -> int:
        """Normalise a possibly negative layer index, or raise a specific error."""
        if not isinstance(index, int) or isinstance(index, bool):
            raise TypeError(f"layer must be an int, got {type(index).__name__}")
        if not -self.n_layers <= index < self.n_layers:
            raise IndexError(
                f"layer {index} is out of range for {self.name}, which has {self.n_layers} decoder "
                f"layers (valid: 0..{self.n_layers - 1}, or negative from the end)"
            )
        return index % self.n_layers


def model_spec(model: nn.Module, name: str | None = None) -> ModelSpec:
    """Describe `model`: layer count, residual width and where its layers live."""
    path, layers = find_layers(model)
    config = getattr(model, "config", None)
    d_model = getattr(config, "hidden_size", None) or getattr(config, "n_embd", None)
    if d_model is None:
        d_model = model.get_input_embeddings().weight.shape[1]
    name = name or getattr(config, "_name_or_path", None) or type(model).__name__
    return ModelSpec(name=name, n_layers=len(layers), d_model=int(d_model), layers_path=path, layers=layers)


@dataclass
class LoadedModel:
    """A model, its tokenizer and its `ModelSpec`; unpacks as
    `model, tokenizer, model_spec = load_model(...)`."""

    model: nn.Module
    tokenizer: Any
    model_spec: ModelSpec

    def __iter__(self):
        return iter((self.model, self.tokenizer, self.model_spec))

    @property
    def spec(self) -> ModelSpec:
        """Deprecated name of `model_spec`."""
        import warnings

        warnings.warn("LoadedModel.spec is deprecated; use .model_spec", DeprecationWarning, stacklevel=2)
        return self.model_spec
