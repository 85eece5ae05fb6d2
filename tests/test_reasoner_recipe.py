"""The reasoner recipe: corpus + LoRA run from one YAML config, resumable, refusing other settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from reasoning_dspy.cli import app
from reasoning_dspy.reasoner.corpus import read_corpus
from reasoning_dspy.reasoner.recipe import ReasonerRecipe, RecipeError, train_reasoner

TINY = ["corpus.n=12", "finetune.base_model=tiny-random", "finetune.max_steps=4", "finetune.batch_size=4",
        "finetune.upper_layers=1", "finetune.compute_dtype=float32", "finetune.max_length=768",
        "finetune.save_every=2"]


def test_recipe_writes_corpus_and_adapter_and_resumes(tmp_path):
    recipe = ReasonerRecipe.load(None, [f"out={tmp_path}", *TINY])
    first = train_reasoner(recipe, progress=False)
    assert first.stopped == "completed" and first.steps == 4
    examples = read_corpus(tmp_path / "corpus.jsonl")
    assert len(examples) == 12 and all(e.messages[-1]["role"] == "assistant" for e in examples)
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    stats = json.loads((tmp_path / "corpus_stats.json").read_text())
    assert stats["n"] == 12
    again = train_reasoner(recipe, progress=False)  # the same command continues (here: nothing left to do)
    assert again.steps == 4 and len(again.log) == len(first.log)

    other = ReasonerRecipe.load(None, [f"out={tmp_path}", *TINY, "corpus.seed=1"])
    with pytest.raises(RecipeError, match="corpus.seed"):
        train_reasoner(other, progress=False)


def test_recipe_refuses_run_folder_settings_and_bad_overrides(tmp_path):
    with pytest.raises(RecipeError, match="set by the recipe"):
        ReasonerRecipe.load(None, ["finetune.out=elsewhere"])
    with pytest.raises(RecipeError, match="corpus.n"):
        ReasonerRecipe.load(None, ["corpus.n=-3"])
    with pytest.raises(RecipeError, match=r"corpus.slip_rate.*less than 1"):
        ReasonerRecipe.load(None, ["corpus.slip_rate=1.5"])
    result = CliRunner().invoke(app, ["reasoner", "train", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 2 and "not found" in result.output
    result = CliRunner().invoke(app, ["reasoner", "train", "finetune.lr=fast"])
    assert result.exit_code == 2 and "finetune.lr" in result.output


def test_shipped_recipe_is_valid():
    recipe = ReasonerRecipe.load("experiments/configs/reasoner-smollm2.yaml")
    assert recipe.finetune.base_model == "smollm2" and recipe.corpus.split == "train"


CONFIGS = sorted((Path(__file__).resolve().parents[1] / "experiments" / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_in_the_repository_validates(path):
    """Each YAML file under experiments/configs loads into the settings model its command uses, so a
    renamed setting or a typo fails here, not hours into a run."""
    from experiments.config import load_experiment
    from reasoning_dspy.study.config import StudyConfig

    kind = path.name.split("-", 1)[0]
    loader = {"reasoner": ReasonerRecipe.load, "study": StudyConfig.load, "optimize": load_experiment}[kind]
    config = loader(path, [])
    assert set(yaml.safe_load(path.read_text())) <= config.model_fields_set  # every setting in the file is read
