"""The README's main command runs the whole offline pipeline: every stage does its job, and a second
run resumes from the first one's outputs."""

from pathlib import Path

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


@pytest.mark.slow
def test_reasoner_demo_ends_with_a_self_contained_report(tmp_path):
    import re

    out = tmp_path / "demo"
    state = run_demo(out, limit=2)  # smollm2-reasoner, its shipped SAE, 2 held-out problems
    assert state.model == "smollm2-reasoner" and len(state.baseline) == len(state.steered) == 2
    assert sum(r["parsed"] for r in state.baseline) >= 1
    assert len(state.reports) == 5 and all(r.contexts for r in state.reports[:3])
    assert any(b["text"] != s["text"] for b, s in zip(state.baseline, state.steered, strict=True))
    assert (out / "demo.json").is_file() and (out / "features" / "analysis.json").is_file()
    md = (out / "report.md").read_text()
    for heading in ("## The SAE's training", "## ReasonScore over the whole dictionary", "## Top features",
                    "## Baseline against steered", "## A steered trace whose check caught its own error",
                    "## Optimizer trials"):
        assert f"\n{heading}\n" in md
    for r in state.reports:  # the table shows the features the analysis found, with their scores
        assert f"| {r.rank} | {r.index} | {r.score:+.4f} |" in md
    assert len(state.trials) == 8 and state.trials[0].candidate.features == ()
    page = (out / "report.html").read_text()
    images = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert len(images) == 4 and all(src.startswith("data:image/png;base64,") for src in images)
    assert all(len(src) > 10_000 for src in images)  # real plots, not empty canvases
    assert "<table>" in page and "plots/" not in page  # nothing left to fetch from beside the file
    _renders_in_chromium(out / "report.html", ARTIFACTS / "demo-report.png")


ARTIFACTS = Path(__file__).resolve().parents[1] / "runs" / "test-artifacts"


def _renders_in_chromium(page_path: Path, screenshot: Path) -> None:
    """Open the report from disk in headless Chromium: every plot decodes, and the page is not blank."""
    import numpy as np
    from PIL import Image

    from reasoning_dspy.dashboard.browser import chromium

    with chromium(width=1200, height=900) as page:
        page.goto(page_path.as_uri())
        page.wait_for_load_state("load")
        sizes = page.eval_on_selector_all("img", "imgs => imgs.map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
        assert len(sizes) == 4 and all(done and w > 300 and h > 150 for done, w, h in sizes), sizes
        assert page.title().startswith("reasoning-dspy demo")
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot), full_page=True)
    pixels = np.asarray(Image.open(screenshot).convert("L"), dtype=float)
    assert pixels.shape[0] > 2000 and pixels.std() > 10  # a long page with text and plots, not a blank one


def test_the_quoted_steered_trace_is_one_whose_check_fixed_its_own_step():
    from reasoning_dspy.demo.report import caught_trace

    plain = "47 + 38 = 75.\nThe answer is 75."
    fixed = ("47 + 38 = 75. Let me check: 47 + 38: ones 7+8=15, write 5 carry 1; tens 4+3+1=8, write 8; so 85. "
             "Wait, 47 + 38 is 85, not 75.\nThe answer is {}.")
    rows = [{"text": plain, "correct": False}, {"text": fixed.format(75), "correct": False},
            {"text": fixed.format(85), "correct": True}]
    assert caught_trace(rows) is rows[2]  # a fixed step and a right answer beat a fixed step alone
    assert caught_trace(rows[:2]) is rows[1]
    assert caught_trace(rows[:1]) is None
