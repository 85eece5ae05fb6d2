"""TopK SAE (Gao et al. 2024): keep the k largest pre-activations per token, ReLU them, zero the rest."""

from __future__ import annotations

import torch
from torch import Tensor

from reasoning_dspy.sae.base import SAE, register


@register("topk")
class TopKSAE(SAE):
    def activation(self, pre: Tensor) -> Tensor:
        values, indices = pre.topk(self.cfg.k, dim=-1, sorted=False)
        return torch.zeros_like(pre).scatter_(-1, indices, torch.relu(values))
