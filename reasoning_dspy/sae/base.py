"""The SAE interface shared by every architecture, and the registry that maps names to classes.

Encoder `f = σ(W_enc (x − b_dec) + b_enc)`, decoder `x̂ = f W_dec + b_dec`, with SAELens'
parameter names and shapes (`W_enc [d_in, d_sae]`, `W_dec [d_sae, d_in]`) so SAELens files load
unchanged. An architecture subclass only supplies its activation `σ` (and its training loss).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import Tensor, nn

Architecture = Literal["relu", "topk", "jumprelu"]
PARAM_DTYPES = ("float32", "float16", "bfloat16", "float64")


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

    @field_validator("dtype", mode="before")
    @classmethod
    def _dtype(cls, value: object) -> object:
        # SAELens writes "float32"; older files "torch.float32".
        value = str(value).removeprefix("torch.")
        if value not in PARAM_DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(PARAM_DTYPES)}, got {value!r}")
        return value

    @model_validator(mode="after")
    def _check(self) -> SAEConfig:
        if self.architecture == "topk":
            if self.k is None:
                raise ValueError("a topk SAE needs k (active latents per token), e.g. k=32")
            if self.k > self.d_sae:
                raise ValueError(f"k={self.k} cannot exceed d_sae={self.d_sae}")
        return self


@dataclass
class LossContext:
    """What the trainer tells an architecture's loss at one step (the coefficients are already
    warmed up / scheduled); each architecture reads the fields it needs."""

    sparsity_coef: float = 0.0  # λ of the L1 (relu) or L0 (jumprelu) penalty at this step
    dead_mask: Tensor | None = None  # [d_sae] bool, latents that have not fired for N tokens (topk AuxK)
    aux_coef: float = 1 / 32  # AuxK coefficient (topk)
    k_aux: int | None = None  # dead latents used by AuxK per token; None = d_in // 2 (topk)
    bandwidth: float = 0.05  # straight-through estimator kernel width (jumprelu)
    fast: bool = True  # use the sparse fast path where the architecture has one (topk)
    compute_dtype: torch.dtype | None = None  # matmul dtype of the fast path (None: parameter dtype)


@dataclass
class StepOutput:
    """One training step's loss (for `backward`) and detached statistics for logging/dead tracking."""

    loss: Tensor  # scalar
    recon: Tensor  # [B, d_in], detached
    l0: Tensor  # scalar: mean active latents per token
    fired: Tensor  # [d_sae] bool: latents active for at least one token of the batch
    losses: dict[str, float] = field(default_factory=dict)  # named components, floats


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
    #: Whether σ commutes with a positive per-latent scale, so decoder norms fold into the encoder
    #: exactly (`fold_decoder_norms`). False for TopK: rescaling pre-activations changes which k win.
    exact_fold: ClassVar[bool] = False

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
        from reasoning_dspy.sae import load_architectures

        load_architectures()
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

    # -- training --------------------------------------------------------------------------
    def training_loss(self, x: Tensor, ctx: LossContext) -> StepOutput:
        """The architecture's training loss on a batch `x [B, d_in]` (see each subclass)."""
        raise NotImplementedError

    @staticmethod
    def mse(x: Tensor, recon: Tensor) -> Tensor:
        """Squared error summed over `d_in`, averaged over tokens (SAELens' convention)."""
        return torch.nn.functional.mse_loss(recon, x, reduction="sum") / max(1, x[..., 0].numel())

    @torch.no_grad()
    def remove_parallel_decoder_grad(self) -> None:
        """Drop the part of each decoder row's gradient that would change its norm."""
        g, w = self.W_dec.grad, self.W_dec
        if g is not None:
            g.addcmul_(w, torch.linalg.vecdot(g, w)[:, None], value=-1.0)  # g_j -= (g_j·w_j) w_j

    @torch.no_grad()
    def set_decoder_unit_norm(self) -> None:
        """Renormalise decoder rows to unit norm in place (after an optimiser step)."""
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12))

    def after_step(self) -> None:
        """Projection an architecture needs after each optimiser step (unit-norm decoder)."""
        self.set_decoder_unit_norm()

    def check_compatible(self, spec, layer: int) -> None:
        """Raise a clear error if this SAE cannot read layer `layer` of the model described by `spec`
        (a `reasoning_dspy.models.ModelSpec`)."""
        spec.check_layer(layer)
        if spec.d_model != self.cfg.d_in:
            trained = f" (trained on layer {self.cfg.hook_layer} of {self.cfg.model_name})" if self.cfg.model_name else ""
            raise ValueError(
                f"SAE expects d_in={self.cfg.d_in}{trained} but layer {layer} of {spec.name} has "
                f"d_model={spec.d_model}; use an SAE trained on this model"
            )

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
        """Rescale decoder rows to unit norm, moving the scale into the encoder so f·W_dec is unchanged.

        In place and unchecked: which latents fire stays the same only where `exact_fold` holds, or
        where the activation already compares decoder-scaled pre-activations (SAELens' rescaled TopK).
        """
        self._rescale(self.W_dec.norm(dim=1).clamp_min(1e-12))

    @torch.no_grad()
    def fold_decoder_norms(self) -> SAE:
        """A copy whose decoder rows have unit norm and whose latents are scaled by the old norms,
        with the norms folded into the encoder (W_enc, b_enc, and θ for JumpReLU).

        Refused where that changes which latents fire (TopK): `unit_norm_view()` gives the same
        units for every architecture without touching the encoder.
        """
        if not self.exact_fold:
            raise ValueError(
                f"folding decoder norms into the encoder of a {self.architecture} SAE is not exact: it rescales "
                "each latent's pre-activation and so changes which latents fire. Use sae.unit_norm_view() "
                "(the trained latents times ||W_dec,i||, with unit-norm decoder rows) instead"
            )
        folded = copy.deepcopy(self)
        folded.normalize_decoder()
        return folded

    def unit_norm_view(self) -> UnitNormView:
        """This SAE read with unit-norm decoder rows (`UnitNormView`): the units of ReasonScore's
        activations and of steering's f_max."""
        return UnitNormView(self)

    @torch.no_grad()
    def fold_input_scale(self, scale: float) -> None:
        """Make an SAE trained on `scale · x` take raw `x` (exactly; decoder rows keep their norm).

        Every σ here is positively homogeneous (ReLU, TopK, JumpReLU with θ scaled), so dividing the
        biases (and θ) by `scale` divides every latent by `scale` and the reconstruction comes out
        in the raw units: `f(x) = f'(s x) / s`, `x̂(x) = x̂'(s x) / s`.
        """
        if scale <= 0:
            raise ValueError(f"input scale must be positive, got {scale}")
        self.b_enc /= scale
        self.b_dec /= scale
        threshold = getattr(self, "threshold", None)
        if isinstance(threshold, Tensor):
            threshold /= scale

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


class UnitNormView(nn.Module):
    """A trained SAE read with unit-norm decoder rows: `encode(x) = f(x) · ‖W_dec,i‖` per latent and
    `W_dec,i / ‖W_dec,i‖`, so magnitudes compare across features and `encode(x) @ W_dec + b_dec`
    is still the SAE's reconstruction.

    Only the outputs are scaled: pre-activations and σ are the trained SAE's, so every architecture
    fires exactly as trained (TopK keeps its k latents, JumpReLU its thresholds). The view holds a
    copy of the SAE taken when it is built (moving or casting it leaves the SAE alone). It is for
    reading: it has no training loss, and `save_sae` refuses it (save the SAE it was made from).
    """

    def __init__(self, sae: SAE):
        super().__init__()
        if not isinstance(sae, SAE):
            raise TypeError(f"UnitNormView reads a trained SAE, got {type(sae).__name__}")
        # The trained encoder; its decoder rows are divided by their norms in place (no second copy).
        self._sae = copy.deepcopy(sae).requires_grad_(False)
        with torch.no_grad():
            norms = self._sae.W_dec.norm(dim=1).clamp_min(1e-12)
            self._sae.W_dec.div_(norms[:, None])
        self.register_buffer("decoder_norms", norms)  # [d_sae] ‖W_dec,i‖ of the trained SAE

    @property
    def cfg(self) -> SAEConfig:
        return self._sae.cfg

    @property
    def architecture(self) -> str:
        return self._sae.architecture

    @property
    def d_in(self) -> int:
        return self._sae.d_in

    @property
    def d_sae(self) -> int:
        return self._sae.d_sae

    @property
    def W_enc(self) -> Tensor:
        return self._sae.W_enc

    @property
    def b_enc(self) -> Tensor:
        return self._sae.b_enc

    @property
    def b_dec(self) -> Tensor:
        return self._sae.b_dec

    @property
    def W_dec(self) -> Tensor:
        """Unit-norm decoder rows `[d_sae, d_in]`."""
        return self._sae.W_dec

    def pre_activation(self, x: Tensor) -> Tensor:
        """The trained SAE's pre-activations (unscaled): `[..., d_in] -> [..., d_sae]`."""
        return self._sae.pre_activation(x)

    def encode(self, x: Tensor) -> Tensor:
        """The trained latents times their decoder norms: `[..., d_in] -> [..., d_sae]`."""
        return self._sae.encode(x) * self.decoder_norms

    def decode(self, f: Tensor) -> Tensor:
        """`f W_dec + b_dec` with the unit-norm rows: `[..., d_sae] -> [..., d_in]`."""
        return self._sae.decode(f)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """`(latents, reconstruction)`; the reconstruction equals the trained SAE's."""
        f = self.encode(x)
        return f, self.decode(f)

    def check_input(self, x: Tensor) -> None:
        self._sae.check_input(x)

    def check_compatible(self, spec, layer: int) -> None:
        self._sae.check_compatible(spec, layer)

    def unit_norm_view(self) -> UnitNormView:
        return self

    def extra_repr(self) -> str:
        return f"unit-norm view of {self._sae.extra_repr()}"
