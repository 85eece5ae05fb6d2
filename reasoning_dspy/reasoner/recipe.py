"""The reasoner recipe: one config that rebuilds the fine-tuned model from the repository alone.

    reasoning-dspy reasoner train experiments/configs/reasoner-smollm2.yaml [key=value ...]

writes the corpus (`OUT/corpus.jsonl`, with its planted rates in `OUT/corpus_stats.json`), then
LoRA-fine-tunes the base model on it (`OUT/adapter/`). Both steps resume: the corpus is a pure
function of its config, and the fine-tuning continues from its last checkpoint, so an interrupted
run re-started with the same command picks up where it stopped. A different recipe in the same
folder is refused rather than mixed in.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from reasoning_dspy._config import load_config
from reasoning_dspy._io import atomic_write_json
from reasoning_dspy.reasoner.corpus import CorpusConfig, corpus_stats, make_corpus, read_corpus, write_corpus
from reasoning_dspy.reasoner.finetune_config import FinetuneConfig

RECIPE_FILE = "recipe.json"
CORPUS_FILE = "corpus.jsonl"
ADAPTER_DIR = "adapter"


class RecipeError(ValueError):
    """The recipe file, an override, or the output folder does not fit; the message says which."""


class ReasonerRecipe(BaseModel):
    """The corpus and the fine-tuning run that make a reasoner, and where they go."""

    model_config = ConfigDict(extra="forbid")

    out: str = Field("runs/reasoner", description="output folder: recipe.json, corpus.jsonl, adapter/")
    corpus: CorpusConfig = Field(default_factory=CorpusConfig, description="what the corpus draws")
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig, description="the LoRA run (out and "
                                     "resume are set by the recipe)")

    @model_validator(mode="after")
    def _recipe_sets_the_run_folder(self) -> ReasonerRecipe:
        if self.finetune.out is not None or self.finetune.resume:
            raise ValueError("finetune.out and finetune.resume are set by the recipe (OUT/adapter, always "
                             "resumed); remove them and set out= instead")
        return self

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, overrides: list[str] | tuple[str, ...] = ()
             ) -> ReasonerRecipe:
        """Read a YAML recipe (defaults when `path` is None) with `key=value` overrides
        (`corpus.n=200`, `finetune.max_seconds=600`)."""
        return load_config(cls, path, overrides, RecipeError)

    def identity(self) -> dict[str, Any]:
        """What must match to continue a run in the same folder (not where or how long it runs)."""
        return {"corpus": self.corpus.model_dump(mode="json"), "finetune": self.finetune.run_identity()}

    def finetune_config(self) -> FinetuneConfig:
        return self.finetune.model_copy(update={"out": str(Path(self.out) / ADAPTER_DIR), "resume": True})


def train_reasoner(recipe: ReasonerRecipe, *, progress: bool = True) -> Any:
    """Build (or re-read) the corpus and fine-tune on it; returns the `FinetuneResult`."""
    from rich.console import Console

    from reasoning_dspy.reasoner.finetune import finetune

    console = Console(stderr=True)
    out = Path(recipe.out)
    if out.exists() and not out.is_dir():
        raise RecipeError(f"out={str(out)!r} is an existing file; the recipe writes a folder")
    out.mkdir(parents=True, exist_ok=True)
    _claim(out, recipe)

    path = out / CORPUS_FILE
    if path.is_file():
        examples = read_corpus(path)
    else:
        examples = make_corpus(recipe.corpus)
        write_corpus(examples, path)
    stats = corpus_stats(examples)
    atomic_write_json(out / "corpus_stats.json", stats.model_dump(mode="json"))
    console.print(f"corpus: {len(examples)} examples in {path}")

    result = finetune(recipe.finetune_config(), [{"messages": e.messages, "untrained": e.untrained} for e in examples],
                      progress=progress)
    console.print(f"adapter: {result.out} (loss {result.loss:.4f}, {result.steps}/{result.total_steps} steps, "
                  f"{result.tokens_per_second:,.0f} tokens/s, stopped: {result.stopped})")
    return result


def _claim(out: Path, recipe: ReasonerRecipe) -> None:
    """Record the recipe in `out`, refusing a folder that holds a different one."""
    path = out / RECIPE_FILE
    if path.is_file():
        theirs = json.loads(path.read_text())
        mine = recipe.identity()
        changed = sorted(f"{part}.{k}" for part in mine for k in mine[part]
                         if theirs.get("identity", {}).get(part, {}).get(k) != mine[part][k])
        if changed:
            raise RecipeError(f"{str(out)!r} holds a reasoner built with other settings ({', '.join(changed)}); "
                              "resume it with the same recipe, or pass another out=")
    atomic_write_json(path, {"recipe": recipe.model_dump(mode="json"), "identity": recipe.identity()})

