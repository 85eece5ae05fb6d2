"""`SAETrainConfig`: one pydantic model that is the Python API, the `train-sae` CLI flags and the
metadata saved beside the weights. Imports only pydantic, so building the CLI stays instant."""

from __future__ import annotations

import inspect
import os
import types
import typing
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class SAETrainConfig(BaseModel):
    """How to train an SAE. Every field is also a `reasoning-dspy train-sae --<field>` flag."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    cache: list[str] | None = Field(None, description="activation cache folder(s) to train on; repeat --cache to "
                                    "train on several caches of the same model and layer")
    out: str | None = Field(None, description="output folder: SAE, checkpoint, training log, loss curve")
    arch: Literal["relu", "topk", "jumprelu"] = Field("topk", description="SAE architecture: topk, relu (ReLU + L1) or jumprelu")
    d_sae: int = Field(4096, gt=0, description="number of latents (dictionary size)")
    k: int = Field(32, gt=0, description="active latents per token (topk)")
    tokens: int | None = Field(None, gt=0, description="training tokens, the length of the LR and sparsity "
                               "schedules (default: one pass over the training tokens)")
    max_tokens: int | None = Field(None, gt=0, description="stop this run after training this many tokens, "
                                   "saving the SAE and a checkpoint; --resume continues the schedule")
    max_seconds: float | None = Field(None, gt=0, description="stop this run after this many seconds, saving "
                                      "the SAE and a checkpoint; --resume continues the schedule")
    val_fraction: float = Field(0.05, ge=0, lt=1, description="fraction of tokens held out (whole prompts) and "
                                "never trained on, for the reported FVU; 0 reports training-token FVU only")
    batch_size: int = Field(4096, gt=0, description="tokens per optimiser step")
    lr: float = Field(3e-4, gt=0, description="Adam learning rate")
    adam_beta1: float = Field(0.9, ge=0, lt=1, description="Adam beta1")
    adam_beta2: float = Field(0.999, ge=0, lt=1, description="Adam beta2")
    lr_warmup_frac: float = Field(0.02, ge=0, le=1, description="fraction of steps with linear LR warm-up")
    lr_decay_frac: float = Field(0.2, ge=0, le=1, description="final fraction of steps with linear LR decay to 0")
    grad_clip: float = Field(1.0, ge=0, description="max global gradient norm (0 disables clipping)")
    l1_coefficient: float = Field(5.0, ge=0, description="L1 penalty λ (relu), weighted by decoder norms")
    l0_coefficient: float = Field(1.0, ge=0, description="L0 penalty λ (jumprelu)")
    sparsity_warmup_frac: float = Field(0.05, ge=0, le=1, description="fraction of steps over which λ ramps up from 0")
    aux_coefficient: float = Field(1 / 32, ge=0, description="AuxK loss coefficient (topk)")
    k_aux: int | None = Field(None, gt=0, description="dead latents per token in AuxK (default d_in // 2)")
    dead_tokens: int = Field(1_000_000, gt=0, description="a latent is dead after not firing for this many tokens")
    jumprelu_bandwidth: float = Field(0.05, gt=0, description="straight-through estimator kernel width (jumprelu)")
    jumprelu_init_threshold: float = Field(0.01, ge=0, description="initial threshold θ (jumprelu)")
    b_dec_init: Literal["geometric_median", "mean", "zeros"] = Field("geometric_median", description="b_dec initialisation")
    normalize_inputs: bool = Field(True, description="scale inputs to mean norm √d_in while training (folded on save)")
    init_tokens: int = Field(16384, gt=0, description="tokens sampled for input scaling, b_dec init and evaluation")
    eval_every: int = Field(0, ge=0, description="evaluate every N steps (0: only at the end)")
    log_every: int = Field(10, gt=0, description="write a training-log line every N steps")
    checkpoint_every: int = Field(0, ge=0, description="save a resumable checkpoint every N steps (0: only at the end)")
    compute_dtype: Literal["float32", "bfloat16"] = Field("float32", description="matmul dtype (weights stay float32)")
    fast: bool = Field(True, description="sparse TopK kernels (topk); off = dense reference path")
    seed: int = Field(0, description="seed for initialisation, data order and the held-out slice")
    hook_layer: int | None = Field(None, ge=0, description="decoder layer the activations come from, saved with "
                                   "the SAE (default: the cache's; set it when training on a tensor)")
    model_name: str | None = Field(None, description="model the activations come from, saved with the SAE "
                                   "(default: the cache's; set it when training on a tensor)")
    device: str = Field("cpu", description="torch device")
    resume: bool = Field(False, description="continue from the checkpoint in OUT if there is one")
    overwrite: bool = Field(False, description="replace the SAE or checkpoint already in OUT (otherwise "
                            "refused: scores computed from that SAE would no longer match it)")

    @field_validator("cache", mode="before")
    @classmethod
    def _cache_list(cls, value: Any) -> Any:
        """One folder or several; no folder at all is None."""
        if isinstance(value, (str, os.PathLike)):
            return [os.fspath(value)]
        if isinstance(value, (list, tuple)):
            return [os.fspath(v) if isinstance(v, os.PathLike) else v for v in value] or None
        return value

    @model_validator(mode="after")
    def _check(self) -> SAETrainConfig:
        if self.arch == "topk" and self.k > self.d_sae:
            raise ValueError(f"k={self.k} cannot exceed d_sae={self.d_sae}; lower --k or raise --d-sae")
        if self.resume and self.overwrite:
            raise ValueError("resume continues the run in OUT and overwrite replaces it: pass one of them")
        if self.lr_warmup_frac + self.lr_decay_frac > 1:
            raise ValueError(
                f"lr_warmup_frac + lr_decay_frac = {self.lr_warmup_frac + self.lr_decay_frac} exceeds 1"
            )
        return self

    def run_identity(self) -> dict[str, Any]:
        """Fields that must match for a checkpoint to be resumed (everything but where/how to run)."""
        return self.model_dump(exclude={"cache", "out", "resume", "overwrite", "device", "eval_every", "log_every",
                                        "checkpoint_every", "max_tokens", "max_seconds", "hook_layer",
                                        "model_name"})


def _cli_annotation(annotation: Any) -> Any:
    """Typer-friendly type for a field: Literal -> str (pydantic validates the choice), `X | None` kept."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return str
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _cli_annotation(args[0]) | None
    return annotation


def typer_command(run: Any, model: type[BaseModel] = SAETrainConfig, required: tuple[str, ...] = ()) -> Any:
    """Wrap `run(cfg)` as a function whose signature has one typer option per model field.

    Flag names, defaults and help texts all come from the pydantic model, so the CLI cannot drift
    from the Python API.
    """
    import typer

    params = []
    for name, info in model.model_fields.items():
        default = ... if name in required else info.default
        choices = typing.get_args(info.annotation) if typing.get_origin(info.annotation) is Literal else ()
        help_text = info.description + (f" (one of: {', '.join(choices)})" if choices else "")
        annotation = _cli_annotation(info.annotation)
        repeated = list in (typing.get_origin(a) for a in (annotation, *typing.get_args(annotation)))
        option = typer.Option(default, help=help_text, metavar="TEXT..." if repeated else None)
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation))

    def command(**kwargs: Any) -> Any:
        return run(kwargs)

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__doc__ = run.__doc__
    command.__name__ = getattr(run, "__name__", "command")
    return command
