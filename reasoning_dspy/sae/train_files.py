"""What a training run writes and reads back besides the SAE: the resumable checkpoint (weights, Adam
state, RNG, dead-latent counters, data position), the JSONL training log and the loss-curve PNG."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from reasoning_dspy._io import atomic_write_bytes, atomic_write_json, atomic_write_text
from reasoning_dspy.sae.base import SAE


def save_checkpoint(folder: Path, sae: SAE, opt: torch.optim.Optimizer, since_fired: Tensor,
                     state: dict[str, Any]) -> None:
    from safetensors.torch import save

    tensors: dict[str, Tensor] = {f"sae.{n}": p.detach().contiguous() for n, p in sae.named_parameters()}
    opt_state = opt.state_dict()
    for pid, st in opt_state["state"].items():
        for key, value in st.items():
            tensors[f"optim.{pid}.{key}"] = value.contiguous() if value.dim() else value.reshape(1)
    tensors["since_fired"] = since_fired
    tensors["rng_cpu"] = torch.get_rng_state()
    atomic_write_bytes(folder / "state.safetensors", save(tensors, metadata={"step": str(state["step"])}))
    atomic_write_json(folder / "state.json", {**state, "param_groups": opt_state["param_groups"]})


def load_checkpoint(folder: Path, sae: SAE, opt: torch.optim.Optimizer) -> tuple[dict[str, Any], Tensor]:
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        state = json.loads((folder / "state.json").read_text())
        tensors = load_file(folder / "state.safetensors")
        with safe_open(folder / "state.safetensors", "pt") as fh:
            saved_step = int((fh.metadata() or {}).get("step", -1))
    except (OSError, json.JSONDecodeError, SafetensorError) as err:
        raise ValueError(f"checkpoint in {folder} is unreadable ({err}); delete it or train without --resume") from None
    if saved_step != state["step"]:
        raise ValueError(f"checkpoint in {folder} is inconsistent (weights at step {saved_step}, "
                         f"state at step {state['step']}); delete it to restart")
    with torch.no_grad():
        for name, p in sae.named_parameters():
            p.copy_(tensors[f"sae.{name}"])
    opt_state: dict[str, Any] = {"state": {}, "param_groups": state.pop("param_groups")}
    n_params = sum(len(g["params"]) for g in opt.param_groups)
    for pid in range(n_params):
        st = {}
        for key in ("step", "exp_avg", "exp_avg_sq"):
            t = tensors.get(f"optim.{pid}.{key}")
            if t is not None:
                st[key] = t.reshape(()) if key == "step" else t
        if st:
            opt_state["state"][pid] = st
    opt.load_state_dict(opt_state)
    torch.set_rng_state(tensors["rng_cpu"])
    return state, tensors["since_fired"].clone()


def plot_loss_curve(log: list[dict[str, Any]], path: Path) -> None:
    """Loss, FVU and L0 against training tokens, as a PNG."""
    from matplotlib.figure import Figure  # no pyplot: leaves the user's backend alone

    rows = [r for r in log if "loss" in r]
    if not rows:
        return
    tokens = [r["tokens"] for r in rows]
    val = [r for r in log if "fvu_val" in r]
    fig = Figure(figsize=(13, 3.6))
    axes = fig.subplots(1, 3)
    for ax, key, title in zip(axes, ("loss", "fvu", "l0"), ("training loss", "FVU", "L0"), strict=True):
        ax.plot(tokens, [r[key] for r in rows], label="training batch")
        if key == "fvu" and val:
            ax.plot([r["tokens"] for r in val], [r["fvu_val"] for r in val], "o-", label="held out")
            ax.legend()
        ax.set_title(title)
        ax.set_xlabel("tokens")
        if key in ("loss", "fvu") and all(r[key] > 0 for r in rows):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    atomic_write_bytes(path, buf.getvalue())


def write_log(path: Path, log: list[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in log))
