"""JumpReLU SAE (Rajamanoharan et al. 2024): f = z · H(z − θ) with a learned threshold θ per latent."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from reasoning_dspy.sae.base import SAE, SAEConfig, register


@register("jumprelu")
class JumpReLUSAE(SAE):
    def __init__(self, cfg: SAEConfig):
        super().__init__(cfg)
        self.threshold = nn.Parameter(torch.zeros(cfg.d_sae, dtype=self.W_enc.dtype))

    def activation(self, pre: Tensor) -> Tensor:
        return torch.relu(pre) * (pre > self.threshold)
