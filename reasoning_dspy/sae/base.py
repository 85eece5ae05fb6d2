"""The SAE interface shared by every architecture, and the registry that maps names to classes.

Encoder `f = σ(W_enc (x − b_dec) + b_enc)`, decoder `x̂ = f W_dec + b_dec`, with SAELens'
parameter names and shapes (`W_enc [d_in, d_sae]`, `W_dec [d_sae, d_in]`) so SAELens files load
unchanged. An architecture subclass only supplies its activation `σ` (and its training loss).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor, nn

Architecture = Literal["relu", "topk", "jumprelu"]


class SAEConfig(BaseModel):
    """Shape and provenance of an SAE; saved as (SAELens-compatible) `cfg.json`."""

    model_config = ConfigDict(extra="ignore")

    architecture: Architecture = Field("topk", description="relu (ReLU + L1), topk or jumprelu")
    d_in: int = Field(gt=0, description="residual-stream width of the hooked layer")
    d_sae: int = Field(gt=0, description="number of latents (dictionary size)")
    k: int | None = Field(None, gt=0, description="active latents per token (topk only)")
    apply_b_dec_to_input: bool = Field(True, description="subtract b_dec before encoding")
    dtype: str = Field("float32", description="parameter dtype")
    model_name: str | None = Field(None, description="model the SAE was trained on")
    hook_layer: int | None = Field(None, description="decoder layer whose output it reads")
    hook_name: str | None = Field(None, description="SAELens/TransformerLens hook name, if any")

    @model_validator(mode="after")
    def _check(self) -> SAEConfig:
        if self.architecture == "topk":
            if self.k is None:
                raise ValueError("a topk SAE needs k (active latents per token), e.g. k=32")
            if self.k > self.d_sae:
                raise ValueError(f"k={self.k} cannot exceed d_sae={self.d_sae}")
        return self


ARCHITECTURES: dict[str, type[SAE]] = {}


def register(name: str):
    """Class decorator adding an SAE architecture to the registry under `name`."""

    def deco(cls: type[SAE]) -> type[SAE]:
        cls.architecture = name
        ARCHITECTURES[name] = cls
        return cls

    return deco


class SAE(nn.Module):
    """Base sparse autoencoder. Build one with `SAE.from_config(cfg)` or `load_sae(path)`."""

    architecture: ClassVar[str] = ""

    def __init__(self, cfg: SAEConfig):
        super().__init__()
        self.cfg = cfg
        dtype = getattr(torch, cfg.dtype)
        self.W_enc = nn.Parameter(torch.empty(cfg.d_in, cfg.d_sae, dtype=dtype))
        self.W_dec = nn.Parameter(torch.empty(cfg.d_sae, cfg.d_in, dtype=dtype))
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae, dtype=dtype))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in, dtype=dtype))
        self.reset_parameters()

    @staticmethod
    def from_config(cfg: SAEConfig) -> SAE:
        try:
            cls = ARCHITECTURES[cfg.architecture]
        except KeyError:
            raise ValueError(f"unknown SAE architecture {cfg.architecture!r}; known: {sorted(ARCHITECTURES)}") from None
        return cls(cfg)

    def reset_parameters(self) -> None:
        """Unit-norm random decoder rows, encoder initialised as the decoder's transpose."""
        with torch.no_grad():
            nn.init.kaiming_uniform_(self.W_dec)
            self.W_dec /= self.W_dec.norm(dim=1, keepdim=True)
            self.W_enc.copy_(self.W_dec.T)
            self.b_enc.zero_()
            self.b_dec.zero_()

    @property
    def d_in(self) -> int:
        return self.cfg.d_in

    @property
    def d_sae(self) -> int:
        return self.cfg.d_sae

    # -- forward ---------------------------------------------------------------------------
    def pre_activation(self, x: Tensor) -> Tensor:
        """`W_enc (x − b_dec) + b_enc`: `[..., d_in] -> [..., d_sae]`."""
        self.check_input(x)
        if self.cfg.apply_b_dec_to_input:
            x = x - self.b_dec
        return x.to(self.W_enc.dtype) @ self.W_enc + self.b_enc

    def activation(self, pre: Tensor) -> Tensor:
        """The architecture's σ: pre-activations `[..., d_sae]` to latents `[..., d_sae]`."""
        raise NotImplementedError

    def encode(self, x: Tensor) -> Tensor:
        """Latents `f` for activations `x`: `[..., d_in] -> [..., d_sae]`."""
        return self.activation(self.pre_activation(x))

    def decode(self, f: Tensor) -> Tensor:
        """Reconstruction `x̂ = f W_dec + b_dec`: `[..., d_sae] -> [..., d_in]`."""
        return f.to(self.W_dec.dtype) @ self.W_dec + self.b_dec

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return `(latents, reconstruction)`."""
        f = self.encode(x)
        return f, self.decode(f)

    def check_input(self, x: Tensor) -> None:
        if x.shape[-1] != self.cfg.d_in:
            where = f" (trained on layer {self.cfg.hook_layer} of {self.cfg.model_name})" if self.cfg.model_name else ""
            raise ValueError(
                f"SAE expects inputs with d_in={self.cfg.d_in}{where}, got last dimension {x.shape[-1]}; "
                "use an SAE trained on this model and layer"
            )

    # -- weight surgery --------------------------------------------------------------------
    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Rescale decoder rows to unit norm, moving the scale into the encoder so f·W_dec is unchanged."""
        self._rescale(self.W_dec.norm(dim=1).clamp_min(1e-12))

    @torch.no_grad()
    def fold_decoder_norms(self) -> SAE:
        """A copy whose decoder rows have unit norm and whose latents are scaled by the old norms,
        so latent magnitudes are comparable across features (what ReasonScore reads)."""
        import copy

        folded = copy.deepcopy(self)
        folded.normalize_decoder()
        return folded

    def _rescale(self, norms: Tensor) -> None:
        self.W_dec /= norms[:, None]
        self.W_enc *= norms[None, :]
        self.b_enc *= norms
        threshold = getattr(self, "threshold", None)
        if isinstance(threshold, Tensor):
            threshold *= norms

    def extra_repr(self) -> str:
        k = f", k={self.cfg.k}" if self.cfg.k else ""
        return f"architecture={self.architecture}, d_in={self.cfg.d_in}, d_sae={self.cfg.d_sae}{k}"
