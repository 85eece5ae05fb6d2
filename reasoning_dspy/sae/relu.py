"""ReLU SAE (Anthropic's "standard" SAE, SAELens `standard`): σ = ReLU, sparsity from an L1 penalty."""

from __future__ import annotations

import torch
from torch import Tensor

from reasoning_dspy.sae.base import SAE, register


@register("relu")
class ReLUSAE(SAE):
    def activation(self, pre: Tensor) -> Tensor:
        return torch.relu(pre)
