"""The shipped `smollm2-reasoner`: its adapter and SAE load offline, and on held-out chain problems it
answers the way it was trained to: DSPy's format, its instruction restated, careful traces that check
each step by a digit-level recomputation and are right far more often than terse ones that skip it."""

from __future__ import annotations

import os

import pytest
import torch

from reasoning_dspy.features.reasonscore import FeatureScores
from reasoning_dspy.models import load_model
from reasoning_dspy.sae import load_sae
from reasoning_dspy.sae.io import shipped_sae_folder
from reasoning_dspy.steering import recommended_steering

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reasoner():
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    return load_model("smollm2-reasoner")


def test_the_reasoner_is_smollm2_plus_the_adapter_merged(reasoner):
    base = load_model("smollm2")
    assert reasoner.model_spec.name == "smollm2-reasoner"
    assert reasoner.model_spec.d_model == base.model_spec.d_model == 576
    changed = [n for (n, p), (_, q) in zip(reasoner.model.named_parameters(), base.model.named_parameters(), strict=True)
               if not torch.equal(p, q)]
    # LoRA on the upper 15 of 30 layers: those change, the embeddings and lower layers do not
    assert changed and all(int(n.split(".")[2]) >= 15 for n in changed), changed[:3]


def test_the_shipped_sae_scores_and_steering_fit_the_reasoner(reasoner):
    sae = load_sae("smollm2-reasoner")
    scores = FeatureScores.load(shipped_sae_folder("smollm2-reasoner") / "scores")
    steering = recommended_steering("smollm2-reasoner")
    assert sae.cfg.d_in == reasoner.model_spec.d_model and 0 < sae.cfg.hook_layer < reasoner.model_spec.n_layers
    assert scores.d_sae == sae.d_sae and bool((scores.max_activation[scores.top(5)] > 0).all())
    assert steering.units == "residual" and steering.layer == sae.cfg.hook_layer
    assert steering.features and all(0 <= f < sae.d_sae for f in steering.features)
    assert 0 < steering.residual_strength <= 1.0


@pytest.fixture(scope="module")
def held_out(reasoner):
    from reasoning_dspy.reasoner.evaluate import evaluate_styles

    return evaluate_styles(reasoner, n=12, styles=("terse", "careful"), max_tokens=448, batch_size=12,
                           progress=False)


def test_a_short_held_out_eval_parses_and_reflects_as_instructed(held_out):
    terse, careful = held_out["summary"]["terse"], held_out["summary"]["careful"]
    # DSPy's standard ChatAdapter parses what it writes (the base model's completions it does not)
    assert terse["parse_rate"] >= 0.9 and careful["parse_rate"] >= 0.9
    assert careful["reflect_rate"] >= 0.8 and terse["reflect_rate"] <= 0.2
    assert careful["words_per_100_tokens"] > terse["words_per_100_tokens"]
    assert all(r["reasoning"].startswith(("Instruction:", "Task:", "The instruction says:"))
               for r in held_out["rows"] if r["parsed"])  # it restates its instruction, as trained


def test_careful_traces_check_their_steps_and_score_above_a_floor(held_out):
    careful = held_out["summary"]["careful"]
    assert careful["accuracy"] >= 0.4  # 70 % on 64 problems (docs/reasoner.md); the base model ≈ 10 %
    # it checks most of the steps it writes, digit by digit, and most checks reach the exact value
    assert careful["steps_written"] >= 24 and careful["checked_rate"] >= 0.8 and careful["check_accuracy"] >= 0.8
