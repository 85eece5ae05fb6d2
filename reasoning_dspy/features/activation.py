"""How strongly SAE features fire over a text: the numbers reports and metrics are made of.

- `feature_set_activation`: mean activation of chosen features over the tokens. Over a generated
  answer, with the top ReasonScore features, this is the answer's *reasoning activation*.
- `topk_activation_mean`: mean of the k largest |latent| values over the tokens, a feature-agnostic
  prompt score (`compute_topk_activations_mean` of the ReasonScore authors' blog code).
- `ActivationReport`: both for one response, with its strongest features.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


def topk_activation_mean(latents: Tensor, k: int = 10) -> float:
    """Mean of the k largest |latent| values over a text's tokens: `latents [n_tokens, d_sae]`.
    0.0 for an empty text."""
    flat = latents.detach().abs().flatten()
    if flat.numel() == 0:
        return 0.0
    return float(flat.topk(min(k, flat.numel())).values.float().mean())


def feature_set_activation(latents: Tensor, features: Sequence[int]) -> float:
    """Mean activation of the chosen `features` over a text's tokens: `latents [n_tokens, d_sae]`."""
    if latents.numel() == 0 or len(features) == 0:
        return 0.0
    idx = torch.as_tensor(list(features), dtype=torch.long, device=latents.device)
    return float(latents.detach().index_select(-1, idx).float().mean())


@dataclass
class ActivationReport:
    """Activation of one generated response (JSON-ready via `to_dict`)."""

    n_tokens: int
    topk_mean: float  # topk_activation_mean over the response
    features_mean: float | None  # feature_set_activation of the chosen reasoning features, if any
    top_features: list[tuple[int, float]]  # (feature, mean activation over the response), strongest first

    def to_dict(self) -> dict:
        return {"n_tokens": self.n_tokens, "topk_mean": self.topk_mean, "features_mean": self.features_mean,
                "top_features": [[int(i), float(v)] for i, v in self.top_features]}

    @classmethod
    def from_dict(cls, data: dict) -> ActivationReport:
        return cls(int(data["n_tokens"]), float(data["topk_mean"]), data.get("features_mean"),
                   [(int(i), float(v)) for i, v in data.get("top_features", [])])


def summarize_latents(latents: Tensor, k: int = 10, features: Sequence[int] = (), n_features: int = 10
                      ) -> ActivationReport:
    """An `ActivationReport` from a response's full latents `[n_tokens, d_sae]`."""
    n = latents.shape[0]
    mean = latents.float().mean(0) if n else torch.zeros(latents.shape[-1])
    vals, idx = mean.topk(min(n_features, mean.numel()))
    return ActivationReport(
        n_tokens=n,
        topk_mean=topk_activation_mean(latents, k),
        features_mean=feature_set_activation(latents, list(features)) if features else None,
        top_features=[(int(i), float(v)) for i, v in zip(idx, vals, strict=True) if v > 0],
    )
