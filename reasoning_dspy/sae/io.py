"""Save and load SAEs as `cfg.json` + `sae_weights.safetensors` (SAELens' layout and key names)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from reasoning_dspy._io import atomic_write_bytes, atomic_write_json
from reasoning_dspy.sae.base import SAE, SAEConfig

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"


def save_sae(sae: SAE, path: str | os.PathLike) -> Path:
    """Write `sae` to folder `path` atomically; returns the folder."""
    from safetensors.torch import save

    path = Path(path)
    tensors = {name: p.detach().contiguous().cpu() for name, p in sae.named_parameters()}
    atomic_write_bytes(path / WEIGHTS_FILE, save(tensors))
    atomic_write_json(path / CFG_FILE, sae.cfg.model_dump())
    return path


def load_sae(path: str | os.PathLike, device: str = "cpu") -> SAE:
    """Load an SAE folder written by `save_sae`."""
    from safetensors.torch import load_file

    path = Path(path)
    cfg = SAEConfig.model_validate(json.loads((path / CFG_FILE).read_text()))
    sae = SAE.from_config(cfg)
    sae.load_state_dict(load_file(path / WEIGHTS_FILE))
    return sae.to(device)
