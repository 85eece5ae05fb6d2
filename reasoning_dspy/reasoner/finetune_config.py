"""`FinetuneConfig`: one pydantic model that is the Python API of `finetune`, the flags of a training
command and the metadata saved beside the adapter. Imports only pydantic, so a CLI built from it
(`reasoning_dspy.sae.train_config.typer_command`) stays instant."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class FinetuneConfig(BaseModel):
    """How to LoRA-fine-tune a causal LM on chat examples (the last message is the answer to learn)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    base_model: str = Field("smollm2", description="model to fine-tune: any name `load_model` takes "
                            "(smollm2, tiny-random, a hub id, a folder or a .gguf file)")
    out: str | None = Field(None, description="output folder: adapter (PEFT format), reasoner.json, log.jsonl, "
                            "checkpoint/; None trains in memory only")
    lora_r: int = Field(16, gt=0, description="LoRA rank")
    lora_alpha: float = Field(32.0, gt=0, description="LoRA scale numerator (the update is scaled by alpha / r)")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="dropout on the LoRA input")
    target_modules: list[str] = Field(["q_proj", "v_proj"], description="linear layers to adapt in each adapted "
                                      "decoder layer, e.g. q_proj v_proj o_proj gate_proj up_proj down_proj")
    upper_layers: int | None = Field(None, gt=0, description="adapt only the last N decoder layers, so the "
                                     "backward pass stops there (default: the upper half)")
    lr: float = Field(2e-4, gt=0, description="AdamW peak learning rate")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    warmup_frac: float = Field(0.05, ge=0, lt=1, description="fraction of steps with linear LR warm-up; the "
                               "LR then decays linearly to 0 at the last step")
    grad_clip: float = Field(1.0, ge=0, description="max global gradient norm (0 disables clipping)")
    batch_size: int = Field(8, gt=0, description="examples per forward pass")
    grad_accum: int = Field(1, gt=0, description="forward passes per optimiser step (the step's loss is the "
                            "mean over all its answer tokens)")
    max_length: int = Field(512, ge=2, description="longest example in tokens (prompt + answer)")
    overlong: Literal["truncate", "drop"] = Field("truncate", description="what to do with an example longer "
                                                  "than max_length: cut its answer, or leave it out")
    epochs: float = Field(1.0, gt=0, description="passes over the examples (fractions allowed); sets the "
                          "schedule length unless max_steps is given")
    max_steps: int | None = Field(None, gt=0, description="optimiser steps in the schedule (overrides epochs)")
    max_seconds: float | None = Field(None, gt=0, description="stop this run after this many seconds, saving "
                                      "the adapter and a checkpoint; resume continues the same schedule")
    bucket: bool = Field(True, description="group examples of similar length into batches (less padding); "
                         "the order is drawn from `seed`")
    field_start_weight: float = Field(
        1.0, gt=0, description="loss weight of the first `field_start_tokens` tokens of each DSPy output "
        "field's value (after its `[[ ## field ## ]]` line), where a trace commits to its approach and its "
        "answer; above 1 it teaches how the prompt steers those choices, which plain fine-tuning, a few "
        "tokens among hundreds, learns slowly")
    field_start_tokens: int = Field(1, gt=0, description="how many tokens from each field's start weigh "
                                    "field_start_weight")
    fast_loss: bool = Field(True, description="LM head and loss only at answer positions; off = full-sequence "
                            "logits (the reference path)")
    compute_dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="matmul dtype under autocast (weights stay float32); auto = bfloat16 on a GPU "
        "or a CPU with AMX/AVX512-BF16, else float32")
    seed: int = Field(0, description="seed for the LoRA initialisation, dropout and the data order")
    save_every: int = Field(50, ge=0, description="save a resumable checkpoint every N steps (0: only at the end)")
    device: str = Field("cpu", description="torch device")
    resume: bool = Field(False, description="continue from the checkpoint in OUT if there is one")

    @field_validator("target_modules", mode="before")
    @classmethod
    def _modules_list(cls, value: Any) -> Any:
        """One name, a comma-separated string or a list of names."""
        if isinstance(value, str):
            value = [v for v in value.replace(",", " ").split() if v]
        return value

    @field_validator("target_modules")
    @classmethod
    def _modules_nonempty(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("target_modules is empty; name at least one linear layer, e.g. q_proj v_proj")
        if len(set(value)) != len(value):
            raise ValueError(f"target_modules lists a name twice: {value}")
        return value

    @model_validator(mode="after")
    def _check(self) -> FinetuneConfig:
        if self.resume and self.out is None:
            raise ValueError("resume=True needs out=<folder> holding the checkpoint to continue from")
        return self

    def run_identity(self) -> dict[str, Any]:
        """Fields that must match for a checkpoint to be resumed (everything but where/how long to run)."""
        return self.model_dump(exclude={"out", "resume", "device", "max_seconds", "save_every"})
