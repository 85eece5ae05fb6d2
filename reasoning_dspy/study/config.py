"""The study's settings: one pydantic model, read from YAML, with `key=value` overrides."""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from reasoning_dspy._config import load_config
from reasoning_dspy.sae.train_config import SAETrainConfig
from reasoning_dspy.tracking.config import TrackingConfig


class StudyConfigError(ValueError):
    """The study config file or an override is malformed; the message names the field."""


class StudyConfig(BaseModel):
    """Galichin et al.'s experiment on any model: traces -> activations -> SAE -> ReasonScore ->
    steering the top features against matched random features and negative strength."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    model: str = Field("smollm2", description="any name load_model takes")
    dtype: str = Field("float32", description="model dtype")
    device: str = Field("cpu", description="torch device")
    layer: int | None = Field(None, description="layer to read and steer; None = 60% of the depth (the paper's 19 of 32)")
    seed: int = Field(0, description="seed for problems, SAE training, random controls and the bootstrap")
    out: str = Field("runs/study", description="output folder (resumes what is there)")

    n_train: int = Field(200, ge=1, description="training problems whose traces the SAE is trained on")
    n_test: int = Field(200, ge=1, description="held-out test problems each steering condition is measured on")
    difficulty: list[int] | None = Field(None, description="problem difficulty levels to draw from (None: all)")
    families: list[str] | None = Field(None, description="problem families, e.g. [chains] for smollm2-reasoner's "
                                       "chain problems (None: the default mix)")
    program: Literal["cot", "predict", "chat"] = Field("cot", description=(
        "dspy.ChainOfThought or dspy.Predict on signatures.WordProblem, or chat: the question and CHAT_SUFFIX "
        "as one user message straight to the SteeredLM, for models too small to follow DSPy's field format"))
    instruction: str | None = Field(None, description=(
        "the program's signature instructions (None: WordProblem's own, DSPy's default); unused by chat"))
    trace_instructions: list[str] | None = Field(None, description=(
        "instructions dealt in turn to the training problems whose traces the SAE learns from (None: "
        "`instruction`), so the SAE sees the model both reflecting and not; the test problems always use "
        "`instruction`"))
    max_tokens: int = Field(160, ge=8, description="tokens generated per trace")
    batch_size: int = Field(32, ge=1, description="rows the engine decodes together")
    extra_texts: list[str] = Field(["bundled-traces"], description=(
        "prompt sources added to the model's own traces for extraction (load_prompts names or files): "
        "a model that never writes a reasoning word gives ReasonScore nothing to find"))

    sae: dict[str, Any] = Field(default_factory=lambda: {"d_sae": 4608, "k": 32, "max_seconds": 600.0},
                                description="SAETrainConfig fields (cache and out are set by the study)")

    top_features: int = Field(3, ge=1, description="top ReasonScore features steered together")
    density_cap: float | None = Field(None, gt=0, le=1, description=(
        "our extension: skip features firing on more than this fraction of tokens"))
    units: Literal["fmax", "residual"] = Field("residual", description="strength units (see SteeringSpec)")
    strengths: list[float] = Field([0.1, 0.2, 0.4], description="positive strength sweep")
    negative_strengths: list[float] = Field([-0.2], description="negative strengths for the top features")
    random_sets: int = Field(1, ge=0, description="matched random feature sets per strength (controls)")
    steer_tokens: int | None = Field(None, ge=1, description=(
        "steer only the positions that predict the first N generated tokens, in every condition (None: every "
        "position, the prompt's included, as the paper does); see SteeringSpec.tokens"))
    steer_skip: int = Field(0, ge=0, description=(
        "leave the first N generated tokens unsteered before the window opens, in every condition (DSPy's "
        "`[[ ## reasoning ## ]]` header is 7 tokens on the SmolLM2 tokenizer); see SteeringSpec.skip_tokens"))
    steer_skip_lines: int = Field(0, ge=0, description=(
        "or: open the window once the model has ended this many lines of its answer, in every condition (2 "
        "skips DSPy's field header and an instruction restated on the next line, whatever its length); see "
        "SteeringSpec.skip_lines"))

    tracking: TrackingConfig = Field(default_factory=lambda: TrackingConfig(embedder="minilm"), description=(
        "run tracking (database_url: None means $DATABASE_URL, else a SQLite file beside OUT); every generation "
        "is recorded with its steering, reasoning activation, correctness and top SAE features"))

    bootstrap_resamples: int = Field(2000, ge=100, description="bootstrap resamples for confidence intervals")
    confidence: float = Field(0.95, gt=0, lt=1, description="confidence level of the intervals")

    @field_validator("strengths")
    @classmethod
    def _positive(cls, value: list[float]) -> list[float]:
        if not value or any(s <= 0 for s in value):
            raise ValueError(f"strengths must be a non-empty list of positive numbers, got {value}")
        return sorted(value)

    @field_validator("negative_strengths")
    @classmethod
    def _negative(cls, value: list[float]) -> list[float]:
        if any(s >= 0 for s in value):
            raise ValueError(f"negative_strengths must all be < 0, got {value}")
        return sorted(value, reverse=True)

    @model_validator(mode="after")
    def _check_sae(self) -> StudyConfig:
        for key in ("cache", "out", "resume", "overwrite"):
            if key in self.sae:
                raise ValueError(f"sae.{key} is set by the study itself; remove it from the config")
        try:
            self.sae_config(cache="-", out="-")
        except ValidationError as err:
            raise ValueError(f"invalid sae settings: {err}") from None
        return self

    @model_validator(mode="after")
    def _check_window(self) -> StudyConfig:
        if self.steer_skip and self.steer_skip_lines:
            raise ValueError(f"give steer_skip ({self.steer_skip}) or steer_skip_lines ({self.steer_skip_lines}), "
                             "not both: each says where the steering window opens")
        return self

    @property
    def steer_window(self) -> dict[str, int | None]:
        """The token window every condition steers in, as `SteeringSpec` fields."""
        return {"tokens": self.steer_tokens, "skip_tokens": self.steer_skip, "skip_lines": self.steer_skip_lines}

    def sae_config(self, *, cache: str, out: str, resume: bool = True) -> SAETrainConfig:
        return SAETrainConfig(**{"seed": self.seed, **self.sae, "cache": cache, "out": out, "resume": resume,
                                 "device": self.device})

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, overrides: list[str] = ()) -> StudyConfig:
        """Read a YAML file (or the defaults when `path` is None) and apply `key=value` overrides
        (`sae.k=16`, `strengths=[0.1,0.3]`), values parsed as YAML."""
        return load_config(cls, path, overrides, StudyConfigError)
