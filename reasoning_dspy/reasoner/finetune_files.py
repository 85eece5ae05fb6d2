"""What a fine-tuning run writes and reads back: the resumable checkpoint (adapter weights, AdamW
state and RNG in one safetensors file, positions in JSON; never pickle), the adapter in PEFT's
standard layout with `reasoner.json` beside it (read back by `models.adapter_files`), and the JSONL
log."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from reasoning_dspy._io import atomic_write_bytes, atomic_write_json, atomic_write_text
from reasoning_dspy.models.adapter_files import ADAPTER_CONFIG, ADAPTER_WEIGHTS, INFO_FILE

CHECKPOINT_DIR = "checkpoint"
LOG_FILE = "log.jsonl"


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
