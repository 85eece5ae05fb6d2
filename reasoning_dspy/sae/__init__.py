"""Sparse autoencoders: architectures (registry), training, evaluation (FVU, L0, CE recovered) and
SAELens-compatible files.

Names load lazily (PEP 562) so the CLI can read `SAETrainConfig` without importing torch.

    >>> from reasoning_dspy.sae import SAETrainConfig, train_sae, load_sae
    >>> result = train_sae(SAETrainConfig(cache="runs/acts", out="runs/sae", arch="topk", d_sae=4096, k=32))
    >>> sae = load_sae("runs/sae")
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, str] = {
    "ARCHITECTURES": "reasoning_dspy.sae.base",
    "SAE": "reasoning_dspy.sae.base",
    "SAEConfig": "reasoning_dspy.sae.base",
    "UnitNormView": "reasoning_dspy.sae.base",
    "register": "reasoning_dspy.sae.base",
    "ReLUSAE": "reasoning_dspy.sae.relu",
    "TopKSAE": "reasoning_dspy.sae.topk",
    "JumpReLUSAE": "reasoning_dspy.sae.jumprelu",
    "load_sae": "reasoning_dspy.sae.io",
    "save_sae": "reasoning_dspy.sae.io",
    "SAEFileError": "reasoning_dspy.sae.io",
    "SAETrainConfig": "reasoning_dspy.sae.train_config",
    "train_sae": "reasoning_dspy.sae.train",
    "TrainResult": "reasoning_dspy.sae.train",
    "TrainingDivergedError": "reasoning_dspy.sae.train",
    "evaluate_sae": "reasoning_dspy.sae.evals",
    "ce_loss_recovered": "reasoning_dspy.sae.evals",
    "fvu": "reasoning_dspy.sae.evals",
    "l0": "reasoning_dspy.sae.evals",
}
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # pragma: no cover
    from reasoning_dspy.sae.base import ARCHITECTURES, SAE, SAEConfig, UnitNormView, register  # noqa: F401
    from reasoning_dspy.sae.evals import ce_loss_recovered, evaluate_sae, fvu, l0  # noqa: F401
    from reasoning_dspy.sae.io import SAEFileError, load_sae, save_sae  # noqa: F401
    from reasoning_dspy.sae.jumprelu import JumpReLUSAE  # noqa: F401
    from reasoning_dspy.sae.relu import ReLUSAE  # noqa: F401
    from reasoning_dspy.sae.topk import TopKSAE  # noqa: F401
    from reasoning_dspy.sae.train import TrainingDivergedError, TrainResult, train_sae  # noqa: F401
    from reasoning_dspy.sae.train_config import SAETrainConfig  # noqa: F401


def __getattr__(name: str) -> Any:
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'reasoning_dspy.sae' has no attribute {name!r}") from None
    if module != "reasoning_dspy.sae.train_config":
        load_architectures()
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def load_architectures() -> None:
    """Import the built-in architecture modules so they register themselves."""
    for mod in ("relu", "topk", "jumprelu"):
        importlib.import_module(f"reasoning_dspy.sae.{mod}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
