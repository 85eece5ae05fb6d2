"""A LoRA adapter on disk: PEFT's standard layout with `reasoner.json` beside it (which names the
base model), and `load_adapter`, which applies a saved adapter to a base model after checking that
it was trained for that model."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

from torch import nn

from reasoning_dspy.models.spec import LoadedModel, model_spec

INFO_FILE = "reasoner.json"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


class AdapterError(ValueError):
    """A saved adapter cannot be applied: unreadable files, or trained for another base model."""


def _check_weights(folder: Path, model: nn.Module, name: str, trained_for: str) -> None:
    """Refuse an unreadable weights file, or one whose LoRA matrices do not fit the model's layers."""
    from safetensors import SafetensorError, safe_open

    path = folder / ADAPTER_WEIGHTS
    try:
        with safe_open(path, "pt") as fh:
            shapes = {k: fh.get_slice(k).get_shape() for k in fh.keys()}
            for k in fh.keys():  # reading every tensor catches a file cut short after its header
                fh.get_tensor(k)
    except (OSError, SafetensorError, ValueError, RuntimeError) as err:
        raise AdapterError(f"adapter weights {path} are unreadable (corrupted or truncated?): {err}") from None
    modules = dict(model.named_modules())
    for key, shape in shapes.items():
        for part, dim in ((".lora_A.weight", 1), (".lora_B.weight", 0)):
            if not key.endswith(part):
                continue
            target = key[:-len(part)].removeprefix("base_model.model.")
            module = modules.get(target)
            if module is None:
                raise AdapterError(f"adapter {folder} (trained for {trained_for}) adapts {target}, which the given "
                                   f"model {_describe(model, name)} does not have")
            weight = getattr(module, "weight", None)
            want = None if weight is None else (weight.shape[1] if dim == 1 else weight.shape[0])
            if want != shape[dim]:
                side = "input" if dim == 1 else "output"
                raise AdapterError(f"adapter {folder} was trained for {trained_for}: its {target} has {side} width "
                                   f"{shape[dim]}, but in the given model {_describe(model, name)} it is {want}")


def _describe(model: nn.Module, name: str | None = None) -> str:
    spec = model_spec(model, name)
    return f"{spec.name!r} (d_model {spec.d_model}, {spec.n_layers} layers)"


def adapter_info(folder: str | os.PathLike) -> dict[str, Any]:
    """`reasoner.json` of a saved adapter (empty for a PEFT adapter saved elsewhere)."""
    path = Path(folder) / INFO_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise AdapterError(f"{path} is not valid JSON ({err}); the adapter folder is damaged") from None


def load_adapter(loaded_or_model: LoadedModel | nn.Module, folder: str | os.PathLike, *, merge: bool = True,
                 check_name: bool = True) -> Any:
    """Apply the adapter saved in `folder` to a base model; with `merge`, fold it into the weights.

    Modifies the given model in place (PEFT injects its layers into it) and returns it: a
    `LoadedModel` for a `LoadedModel`, else the model (with `merge=False`, the `PeftModel`). Refuses
    a missing or damaged folder, and an adapter trained for another base model: a different base name
    (from `reasoner.json`; `check_name=False` skips that for a renamed copy of the same weights) or
    layer shapes that do not fit.
    """
    from peft import PeftModel

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"adapter folder {str(folder)!r} does not exist; pass the out folder of a "
                                "finished finetune run")
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{str(folder)!r} is not an adapter folder: it has no {name} (a run stopped "
                                    "before its end saves only checkpoint/; resume it to finish)")
    loaded = loaded_or_model if isinstance(loaded_or_model, LoadedModel) else None
    model = loaded.model if loaded is not None else loaded_or_model
    given = model_spec(model, loaded.model_spec.name if loaded else None)
    info = adapter_info(folder)
    trained_for = (f"{info['base_model']!r} (d_model {info['d_model']}, {info['n_layers']} layers)" if info
                   else "its base model")
    if info and (info["d_model"] != given.d_model or info["n_layers"] != given.n_layers
                 or (check_name and info["base_model"] != given.name)):
        raise AdapterError(f"adapter {folder} was trained for {trained_for}, but the given model is "
                           f"{_describe(model, given.name)}; load {info['base_model']!r} (or pass check_name=False "
                           "if it is the same weights under another name)")
    _check_weights(folder, model, given.name, trained_for)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # transformers deprecations peft still calls
        peft_model = PeftModel.from_pretrained(model, str(folder), is_trainable=False)
    result = peft_model.merge_and_unload() if merge else peft_model
    result.eval()
    if loaded is None:
        return result
    return LoadedModel(result, loaded.tokenizer, model_spec(result, given.name)) if merge else LoadedModel(
        result, loaded.tokenizer, given)
