"""An optimization experiment as one validated config: YAML file plus `key=value` overrides.

Everything a run depends on is here (model, SAE and layer, vocabulary, dataset and splits, program,
optimizer and its settings, objective and constraint, seed, budget), so the resolved config saved
beside the results is enough to run it again.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from reasoning_dspy._config import load_config
from reasoning_dspy.tracking.config import TrackingConfig

#: The bundled dataset; any other `dataset.name` is a JSONL file of {"question", "answer"} rows.
WORD_PROBLEMS = "word-problems"


class ExperimentConfigError(ValueError):
    """The experiment config or an override is malformed; the message names the field."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class DatasetConfig(_Section):
    name: str = Field(WORD_PROBLEMS, description=f"{WORD_PROBLEMS!r} (bundled) or a JSONL file of question/answer rows")
    train_split: str = Field("train", description="split the optimizer scores candidates on")
    test_split: str = Field("test", description="held-out split for baseline vs optimized vs steered")
    n_train: int = Field(16, ge=1, description="examples each trial is scored on")
    n_test: int = Field(100, ge=1, description="held-out examples")
    difficulty: list[int] | None = Field(None, description="word-problem difficulty levels (None: all)")
    families: list[str] | None = Field(None, description="word-problem families, e.g. [chains] (None: the default mix)")

    @model_validator(mode="after")
    def _check(self) -> DatasetConfig:
        if self.name != WORD_PROBLEMS:
            if not self.name.endswith(".jsonl"):
                raise ValueError(f"unknown dataset {self.name!r}: use {WORD_PROBLEMS!r} or a .jsonl file of "
                                 "{'question', 'answer'} rows")
            if not Path(self.name).is_file():
                raise ValueError(f"dataset file {self.name!r} does not exist")
        elif {self.train_split, self.test_split} - {"train", "validation", "test"}:
            raise ValueError(f"{WORD_PROBLEMS} splits are train, validation and test; got "
                             f"{self.train_split!r} and {self.test_split!r}")
        if self.train_split == self.test_split:
            raise ValueError(f"train_split and test_split are both {self.train_split!r}: the held-out split "
                             "must be one the optimizer never sees")
        return self


class ProgramConfig(_Section):
    module: Literal["cot", "predict"] = Field("cot", description="dspy.ChainOfThought or dspy.Predict")
    signature: str = Field("question -> answer", description="the DSPy signature")
    instruction: str | None = Field(None, description="starting instruction (None: DSPy's default)")
    adapter: Literal["lenient", "chat", "json"] = Field("lenient", description=(
        "how answers are parsed: lenient (LenientChatAdapter: an answer outside DSPy's format is salvaged and "
        "scored, as small models need), chat (DSPy's ChatAdapter: such an answer fails and scores zero) or json"))

    def make_adapter(self) -> Any:
        """The DSPy adapter the experiment's calls use."""
        import dspy

        if self.adapter == "lenient":
            from reasoning_dspy.program.adapter import LenientChatAdapter

            return LenientChatAdapter()
        return dspy.ChatAdapter() if self.adapter == "chat" else dspy.JSONAdapter()


class OptimizerConfig(_Section):
    name: Literal["reasoning", "copro", "miprov2"] = Field("reasoning", description="which optimizer runs")
    n_trials: int = Field(16, ge=1, description="candidate budget (the baseline included)")
    batch_trials: int = Field(4, ge=1, description="candidates evaluated together in one engine batch")
    steer: bool = Field(True, description="search steering too (reasoning optimizer only)")
    instructions: list[str] = Field(default_factory=list, description="the user's own instruction candidates")
    library: bool = Field(True, description="include the built-in instruction library")
    proposer: str | None = Field(None, description="a dspy.LM model name that proposes instructions (None: offline)")
    proposer_api_base: str | None = Field(None, description="its OpenAI-compatible endpoint")
    n_proposals: int = Field(4, ge=0, description="instructions asked of the proposer")
    prompt_filter: bool = Field(False, description=(
        "validate the candidate instructions and skip invalid, near-duplicate and off-topic ones before they "
        "cost a model call (reasoning_dspy.rag, MiniLM embeddings; retrieval through the tracking database)"))
    settings: dict[str, Any] = Field(default_factory=dict, description="extra keyword arguments of the optimizer")


class SteeringConfig(_Section):
    features: list[int] | None = Field(None, description="candidate features, best first (None: top by ReasonScore)")
    top_features: int = Field(3, ge=1, description="how many top ReasonScore features are candidates")
    n_features: list[int] = Field([0, 1, 2, 3], description="how many of them a trial may steer (0 = none)")
    modes: list[Literal["add", "clamp"]] = Field(["add"], min_length=1, description="add and/or clamp")
    add_strength: tuple[float, float] = Field((0.05, 0.3), description="add: ‖γ‖ range, multiples of ‖x‖")
    clamp_strength: tuple[float, float] = Field((0.5, 3.0), description="clamp: range in multiples of f_max")
    tokens: int | None = Field(None, ge=1, description=(
        "steer only the positions that predict the first N generated tokens (None: every position)"))
    skip_lines: int = Field(0, ge=0, description=(
        "open that window after the answer's first lines (2: after DSPy's field header and an instruction the "
        "model restates; see SteeringSpec.skip_lines)"))


class MetricConfig(_Section):
    objective: Literal["activation", "reflect", "word_rate"] = Field("activation", description=(
        "mean reasoning activation of the generated tokens, share of reflecting answers, or reasoning words "
        "per 100 tokens"))
    reasoning_features: int = Field(3, ge=1, description="top ReasonScore features whose activation is measured")
    accuracy_margin: float | None = Field(0.02, ge=0, description="keep accuracy >= baseline - margin (None: off)")
    multi_objective: bool = Field(False, description="optimise (objective, accuracy, tokens) for a Pareto front")


class ExperimentConfig(_Section):
    """One optimization experiment."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="run folder name")
    model: str = Field("smollm2-reasoner", description="any name load_model takes")
    dtype: str = Field("float32")
    device: str = Field("cpu")
    sae: str | None = Field(None, description="SAE folder or shipped name (None: the model's shipped SAE)")
    scores: str | None = Field(None, description="ReasonScore folder (None: the SAE's scores/)")
    layer: int | None = Field(None, description="the SAE's layer, checked against it (None: take the SAE's)")
    vocabulary: list[str] | None = Field(None, description="reasoning words counted by word_rate (None: the paper's)")
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    program: ProgramConfig = Field(default_factory=ProgramConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    steering: SteeringConfig = Field(default_factory=SteeringConfig)
    metric: MetricConfig = Field(default_factory=MetricConfig)
    seed: int = Field(0)
    max_tokens: int = Field(192, ge=8, description="tokens generated per answer")
    batch_size: int = Field(64, ge=1, description="rows the engine decodes together")
    out: str = Field("runs", description="parent folder; the run goes to OUT/NAME/TIMESTAMP")
    tracking: TrackingConfig = Field(default_factory=lambda: TrackingConfig(embedder="minilm"), description=(
        "run tracking: database_url (None: $DATABASE_URL, else OUT/tracking.sqlite), mlflow; not part of the "
        "saved config, so changing it never changes which run resumes"))

    @field_validator("vocabulary")
    @classmethod
    def _words(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and (not value or any(not w.strip() for w in value)):
            raise ValueError("vocabulary must be a non-empty list of non-empty words")
        return value

    def run_parent(self) -> Path:
        return Path(self.out) / self.name


def load_experiment(path: str | os.PathLike | None, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Read and validate an experiment file; errors raise `ExperimentConfigError` naming the field."""
    return load_config(ExperimentConfig, path, overrides, ExperimentConfigError)
