"""The README's main command runs the whole offline pipeline: every stage does its job, and a second
run resumes from the first one's outputs."""

import pytest
import torch

from reasoning_dspy.demo import STEER_PROMPTS, run_demo
from reasoning_dspy.features.reasonscore import FeatureScores
from reasoning_dspy.sae import load_sae


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path):
    out = tmp_path / "demo"
    state = run_demo(out, limit=48, model="tiny-random")
    # extract: a complete cache of every prompt
    assert state.cache.manifest.complete and state.cache.manifest.n_prompts == 48 and state.cache.n_tokens > 500
    # train_sae: a TopK SAE on the cache's layer that reconstructs it better than its mean does
    sae = load_sae(out / "sae")
    assert sae.cfg.architecture == "topk" and sae.cfg.hook_layer == state.layer
    acts = state.cache.load(("acts",))["acts"].float()
    recon = sae(acts)[1]
    assert float(((acts - recon) ** 2).sum() / ((acts - acts.mean(0)) ** 2).sum()) < 0.5
    # score: every feature scored, the saved ranking is the one the demo used
    scores = state.extras["scores"]
    saved = FeatureScores.load(out / "scores")
    assert scores.d_sae == sae.d_sae and torch.equal(saved.reason_score, scores.reason_score)
    assert len(scores.selected) >= 1 and (out / "scores" / "analysis.json").is_file()
    # steer: the top two ReasonScore features, scaled by their f_max, change what the model writes
    steering = state.extras["steering"]
    assert list(steering.features) == sorted(scores.top(2)) and set(steering.features.values()) == {4.0}
    answers = state.extras["answers"]
    assert [prompt for prompt, *_ in answers] == STEER_PROMPTS
    assert any(base.text != steered.text for _, base, steered in answers)
    for _, base, steered in answers:
        assert base.report.n_tokens == len(base.token_ids) and steered.report.n_tokens == len(steered.token_ids)
    # a second run resumes from the finished outputs instead of starting over
    again = run_demo(out, limit=48, model="tiny-random")
    assert again.cache.n_tokens == state.cache.n_tokens
    assert torch.equal(again.extras["scores"].reason_score, scores.reason_score)
