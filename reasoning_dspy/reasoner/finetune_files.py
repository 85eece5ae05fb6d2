"""What a fine-tuning run writes and reads back: the resumable checkpoint (adapter weights, AdamW
state and RNG in one safetensors file, positions in JSON; never pickle), the adapter in PEFT's
standard layout with `reasoner.json` beside it, the JSONL log, and `load_adapter`, which applies a
saved adapter to a base model after checking that it was trained for that model."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from reasoning_dspy._io import atomic_write_bytes, atomic_write_json, atomic_write_text
from reasoning_dspy.models import LoadedModel, model_spec

CHECKPOINT_DIR = "checkpoint"
LOG_FILE = "log.jsonl"
INFO_FILE = "reasoner.json"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


class AdapterError(ValueError):
    """A saved adapter cannot be applied: unreadable files, or trained for another base model."""


# -- checkpoint ------------------------------------------------------------------------------------


def save_checkpoint(folder: Path, params: dict[str, Tensor], opt: torch.optim.Optimizer,
                    state: dict[str, Any], device: torch.device) -> None:
    """Adapter weights, AdamW moments and RNG states in `state.safetensors` (its metadata holds the
    step), the rest in `state.json`, each written atomically; `load_checkpoint` refuses a pair whose
    steps differ (a crash between the two writes)."""
    from safetensors.torch import save

    tensors: dict[str, Tensor] = {f"param.{n}": p.detach().cpu().contiguous() for n, p in params.items()}
    opt_state = opt.state_dict()
    scalars = []
    for pid, st in opt_state["state"].items():
        for key, value in st.items():
            name = f"optim.{pid}.{key}"
            if value.dim() == 0:
                scalars.append(name)
            tensors[name] = value.detach().cpu().reshape(-1).contiguous() if value.dim() == 0 else value.detach().cpu().contiguous()
    tensors["rng.cpu"] = torch.get_rng_state()
    if device.type == "cuda":
        tensors["rng.cuda"] = torch.cuda.get_rng_state(device)
    atomic_write_bytes(folder / "state.safetensors", save(tensors, metadata={"step": str(state["step"])}))
    atomic_write_json(folder / "state.json", {**state, "param_names": list(params), "scalars": scalars,
                                              "param_groups": opt_state["param_groups"]})


def load_checkpoint(folder: Path, params: dict[str, Tensor], opt: torch.optim.Optimizer,
                    device: torch.device) -> dict[str, Any]:
    """Restore what `save_checkpoint` wrote into `params` (in place), `opt` and the RNGs; return the JSON state."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        state = json.loads((folder / "state.json").read_text())
        tensors = load_file(folder / "state.safetensors")
        with safe_open(folder / "state.safetensors", "pt") as fh:
            saved_step = int((fh.metadata() or {}).get("step", -1))
    except (OSError, json.JSONDecodeError, SafetensorError, ValueError) as err:
        raise ValueError(f"checkpoint in {folder} is unreadable ({err}); delete it or train without resume") from None
    if saved_step != state["step"]:
        raise ValueError(f"checkpoint in {folder} is inconsistent (weights at step {saved_step}, state at step "
                         f"{state['step']}); delete it to restart")
    if state["param_names"] != list(params):
        raise ValueError(f"checkpoint in {folder} holds other adapter parameters than this run builds; "
                         "use the same target_modules/upper_layers or a new out folder")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(tensors[f"param.{name}"])
    scalars = set(state.pop("scalars"))
    opt_state: dict[str, Any] = {"state": {}, "param_groups": state.pop("param_groups")}
    for group in opt_state["param_groups"]:
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
    for name, t in tensors.items():
        if name.startswith("optim."):
            _, pid, key = name.split(".", 2)
            opt_state["state"].setdefault(int(pid), {})[key] = t.reshape(()) if name in scalars else t
    opt.load_state_dict(opt_state)
    torch.set_rng_state(tensors["rng.cpu"])
    if device.type == "cuda" and "rng.cuda" in tensors:
        torch.cuda.set_rng_state(tensors["rng.cuda"], device)
    return state


# -- log -------------------------------------------------------------------------------------------


def read_log(path: Path, up_to_step: int) -> list[dict[str, Any]]:
    """The log rows of steps up to `up_to_step` (rows written after the checkpoint are replayed on resume)."""
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r["step"] <= up_to_step]


def write_log(path: Path, rows: list[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


# -- the adapter -----------------------------------------------------------------------------------


def save_adapter(peft_model: Any, out: Path, info: dict[str, Any]) -> None:
    """The adapter in PEFT's layout (`adapter_config.json`, `adapter_model.safetensors`), each file
    moved into `out` atomically, then `reasoner.json` (written last: it marks a complete adapter)."""
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out, prefix=".adapter."))
    try:
        # save_embedding_layers=False: embeddings are never trained here, and "auto" asks the hub about the base
        peft_model.save_pretrained(str(tmp), safe_serialization=True, save_embedding_layers=False)
        # PEFT records where the base was read from (a path under this machine's cache); the base's
        # name is what loads it anywhere, and `reasoner.json` is what this package reads
        config = json.loads((tmp / ADAPTER_CONFIG).read_text())
        config["base_model_name_or_path"] = info.get("base_model") or config.get("base_model_name_or_path")
        (tmp / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        for name in (ADAPTER_WEIGHTS, ADAPTER_CONFIG):
            os.replace(tmp / name, out / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    atomic_write_json(out / INFO_FILE, info)


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
