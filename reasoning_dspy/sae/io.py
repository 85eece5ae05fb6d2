"""Save and load SAEs as `cfg.json` + `sae_weights.safetensors` (SAELens' layout and key names).

`save_sae` writes a `cfg.json` that SAELens 6 reads (`architecture` in SAELens' names, `metadata`
with `model_name`/`hook_name`/`hook_layer`) plus our own fields. `load_sae` reads our folders and
SAELens folders unchanged, including pre-6.0 configs (`activation_fn_str`, `hook_point`, ...).
Nothing is ever unpickled: `.pt`/`.bin` weights are refused.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from reasoning_dspy._io import atomic_write_bytes, atomic_write_json
from reasoning_dspy.models import check_device
from reasoning_dspy.models.shipped import package_folder, shipped_names
from reasoning_dspy.sae.base import SAE, SAEConfig, UnitNormView

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl")

# our architecture name -> SAELens', and every name we accept when reading
TO_SAELENS = {"relu": "standard", "topk": "topk", "jumprelu": "jumprelu"}
FROM_SAELENS = {"standard": "relu", "relu": "relu", "topk": "topk", "jumprelu": "jumprelu"}
_PROVENANCE = ("model_name", "hook_name", "hook_layer")


class SAEFileError(ValueError):
    """An SAE folder or file that cannot be loaded (missing, corrupt, wrong shapes, unsupported)."""


def sae_config_dict(cfg: SAEConfig) -> dict[str, Any]:
    """`cfg.json` content: SAELens 6 fields first, then ours (SAELens ignores unknown keys)."""
    out: dict[str, Any] = {
        "architecture": TO_SAELENS[cfg.architecture],
        "d_in": cfg.d_in,
        "d_sae": cfg.d_sae,
        "dtype": cfg.dtype,
        "device": "cpu",
        "apply_b_dec_to_input": cfg.apply_b_dec_to_input,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {key: getattr(cfg, key) for key in _PROVENANCE if getattr(cfg, key) is not None},
    }
    if cfg.architecture == "topk":
        out["k"] = cfg.k
        out["rescale_acts_by_decoder_norm"] = False
    out["metadata"]["sae_lens_version"] = "6.0.0"  # cfg layout version, so SAELens skips its pre-6 shim
    out["reasoning_dspy"] = {"format_version": 1, **cfg.model_dump()}
    return out


def parse_sae_config(raw: dict[str, Any]) -> tuple[SAEConfig, dict[str, Any]]:
    """Turn a `cfg.json` dict (ours, SAELens 6, or SAELens < 6) into an `SAEConfig`.

    Also returns flags the weights need on load (`rescale_acts_by_decoder_norm`).
    """
    if not isinstance(raw, dict):
        raise SAEFileError(f"cfg.json must hold a JSON object, got {type(raw).__name__}")
    ours = raw.get("reasoning_dspy")
    if isinstance(ours, dict):
        return SAEConfig.model_validate(ours), {}
    meta = raw.get("metadata") if isinstance(raw.get("metadata"), dict) else {}
    act_fn = raw.get("activation_fn", raw.get("activation_fn_str"))
    arch_name = raw.get("architecture") or ("topk" if act_fn == "topk" else "standard")
    if arch_name not in FROM_SAELENS:
        raise SAEFileError(
            f"SAE architecture {arch_name!r} is not supported; supported SAELens architectures: "
            f"{', '.join(sorted(FROM_SAELENS))}"
        )
    k = raw.get("k") or (raw.get("activation_fn_kwargs") or {}).get("k")
    if act_fn == "topk" and arch_name == "standard":
        arch_name = "topk"
    norm = raw.get("normalize_activations", "none")
    if norm not in (None, False, "none"):
        raise SAEFileError(
            f"this SAE expects its inputs normalised at run time (normalize_activations={norm!r}); "
            "fold the normalisation into the weights with SAELens first "
            "(e.g. `sae.fold_activation_norm_scaling_factor(...)`, then `sae.save_model(...)`)"
        )
    if raw.get("reshape_activations", "none") not in (None, "none"):
        raise SAEFileError("SAEs on attention heads (reshape_activations='hook_z') are not supported")
    fields: dict[str, Any] = {
        "architecture": FROM_SAELENS[arch_name],
        "d_in": raw.get("d_in"),
        "d_sae": raw.get("d_sae"),
        "k": k if arch_name == "topk" else None,
        "apply_b_dec_to_input": raw.get("apply_b_dec_to_input", True),
        "dtype": raw.get("dtype", "float32"),
    }
    renamed = {"hook_name": raw.get("hook_point")}
    for key in _PROVENANCE:
        value = meta.get(key, raw.get(key, renamed.get(key)))
        if value is not None:
            fields[key] = value
    try:
        cfg = SAEConfig.model_validate(fields)
    except ValueError as err:
        raise SAEFileError(f"invalid SAE config: {err}") from None
    return cfg, {"rescale_acts_by_decoder_norm": bool(raw.get("rescale_acts_by_decoder_norm", False))}


def save_sae(sae: SAE, path: str | os.PathLike) -> Path:
    """Write `sae` to folder `path` atomically (SAELens-loadable); returns the folder."""
    from safetensors.torch import save

    if not isinstance(sae, SAE):
        what = ("a unit-norm view (latents scaled by decoder norms), not the trained SAE"
                if isinstance(sae, UnitNormView) else f"a {type(sae).__name__}, not an SAE")
        raise TypeError(f"save_sae writes trained SAE weights, but got {what}; save the SAE itself")
    path = Path(path)
    tensors = {name: p.detach().contiguous().cpu() for name, p in sae.named_parameters()}
    atomic_write_bytes(path / WEIGHTS_FILE, save(tensors))
    atomic_write_json(path / CFG_FILE, sae_config_dict(sae.cfg))
    return path


#: SAEs shipped in the package (`reasoning_dspy/data/<name>/sae/`, with `scores/` beside the weights),
#: loadable by name: `load_sae("smollm2-reasoner")`. `models.shipped` says which models have one.
SHIPPED_SAES: tuple[str, ...] = shipped_names(sae=True)


def shipped_sae_folder(name: str) -> Path:
    """The folder of a shipped SAE (its ReasonScore table is in `scores/` inside it)."""
    if name not in SHIPPED_SAES:
        raise SAEFileError(f"no shipped SAE named {name!r}; shipped: {', '.join(SHIPPED_SAES)}")
    folder = package_folder(name) / "sae"
    if not (folder / WEIGHTS_FILE).is_file():
        raise SAEFileError(f"the shipped SAE {name!r} is missing from {folder}; reinstall reasoning-dspy, or "
                           f"rebuild it with `reasoning-dspy study experiments/configs/study-{name}.yaml` and "
                           "copy OUT/sae/ (with OUT/scores/ as sae/scores/) there")
    return folder


def _resolve_folder(path: Path) -> Path:
    if str(path) in SHIPPED_SAES and not path.exists():
        return shipped_sae_folder(str(path))
    pickled_only = path.is_dir() and not (path / WEIGHTS_FILE).exists() and any(
        f.suffix in PICKLE_SUFFIXES for f in path.iterdir())
    if path.suffix in PICKLE_SUFFIXES or pickled_only:
        raise SAEFileError(
            f"refusing to load pickled weights at {str(path)!r}: .pt/.bin/.pth files can run arbitrary "
            f"code when unpickled. Convert them to {WEIGHTS_FILE} (safetensors) first, e.g. "
            "`safetensors.torch.save_file(torch.load(p, weights_only=True), 'sae_weights.safetensors')`"
        )
    if path.is_file() and path.name in (CFG_FILE, WEIGHTS_FILE):
        path = path.parent
    if not path.is_dir():
        raise SAEFileError(f"no SAE folder at {str(path)!r}")
    for name in (CFG_FILE, WEIGHTS_FILE):
        if not (path / name).is_file():
            raise SAEFileError(f"{str(path)!r} is not an SAE folder: {name} is missing")
    return path


def load_sae(path: str | os.PathLike, device: str = "cpu", dtype: str | None = None) -> SAE:
    """Load an SAE folder written by `save_sae` or by SAELens (`cfg.json` + `sae_weights.safetensors`),
    or a shipped SAE by name (`SHIPPED_SAES`, e.g. "smollm2-reasoner")."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = _resolve_folder(Path(path))
    device = check_device(device)
    try:
        raw = json.loads((path / CFG_FILE).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SAEFileError(f"{path / CFG_FILE} is not valid JSON ({err}); the file may be truncated") from None
    try:
        cfg, flags = parse_sae_config(raw)
    except ValueError as err:
        raise SAEFileError(f"{path / CFG_FILE}: {err}") from None
    try:
        state = load_file(path / WEIGHTS_FILE)
    except (SafetensorError, OSError) as err:
        raise SAEFileError(
            f"cannot read {path / WEIGHTS_FILE}: {err}. The file is truncated or not safetensors; "
            "copy or download it again"
        ) from None
    sae = SAE.from_config(cfg)
    _check_state(sae, state, path / WEIGHTS_FILE)
    with torch.no_grad():
        for name, param in sae.named_parameters():
            param.copy_(state[name])
        if flags.get("rescale_acts_by_decoder_norm"):
            # SAELens' rescaled TopK = the same SAE with decoder norms folded into the encoder.
            sae.normalize_decoder()
    sae = sae.to(device)
    if dtype is not None:
        sae = sae.to(getattr(torch, dtype))
        sae.cfg = sae.cfg.model_copy(update={"dtype": dtype})
    return sae


def _check_state(sae: SAE, state: dict[str, torch.Tensor], where: Path) -> None:
    expected = {name: tuple(p.shape) for name, p in sae.named_parameters()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise SAEFileError(
            f"{where} does not match a {sae.cfg.architecture} SAE: missing tensors {missing}, "
            f"unexpected tensors {unexpected} (expected {sorted(expected)})"
        )
    wrong = {n: (tuple(state[n].shape), s) for n, s in expected.items() if tuple(state[n].shape) != s}
    if wrong:
        detail = ", ".join(f"{n} has shape {list(got)}, expected {list(want)}" for n, (got, want) in wrong.items())
        raise SAEFileError(
            f"{where} has the wrong shapes for d_in={sae.cfg.d_in}, d_sae={sae.cfg.d_sae}: {detail}. "
            "cfg.json and the weights disagree"
        )
