"""Sparse autoencoders: architectures (registry), training, metrics and SAELens-compatible files."""

from reasoning_dspy.sae import jumprelu, relu, topk  # noqa: F401  (register the architectures)
from reasoning_dspy.sae.base import ARCHITECTURES, SAE, SAEConfig, register
from reasoning_dspy.sae.io import load_sae, save_sae

__all__ = ["ARCHITECTURES", "SAE", "SAEConfig", "load_sae", "register", "save_sae"]
