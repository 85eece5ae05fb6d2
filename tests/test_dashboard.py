"""The dashboard's page computations on tiny-random with the planted SAE (steering feature 5 makes the
model write " wait", where feature 9 fires), without a browser: every number is checked against the
engine or an independent forward."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from reasoning_dspy.dashboard.backend import EngineBackend
from reasoning_dspy.dashboard.config import DashboardConfig
from reasoning_dspy.dashboard.session import Dashboard
from reasoning_dspy.dashboard.workspace import DashboardError, with_sae
from reasoning_dspy.sae import planted

WAIT_PROMPT = "so wait I think wait"


@pytest.fixture(scope="module")
def dash(tiny, tmp_path_factory):
    """A dashboard on the session's tiny-random, its corpus cut to 48 texts; the engine is closed after."""
    root = tmp_path_factory.mktemp("dashboard")
    cfg = DashboardConfig(model="tiny-random", sae=planted.NAME, cache_dir=root / "cache", corpus_texts=48,
                          database_url=f"sqlite:///{root / 'tracking.sqlite'}", max_tokens=12, user="tester",
                          sae_roots=[tmp_path_factory.getbasetemp()])  # the tests' SAE folders
    ws = with_sae(tiny, planted.NAME, name="tiny-random", cache_dir=cfg.resolved_cache_dir(), corpus_limit=48)
    ws.wait_corpus()  # extracted on a background thread: no forward of this test may overlap it
    board = Dashboard(cfg, ws, EngineBackend(ws, max_tokens=12))
    yield board
    board.close()


def _latents_by_hand(tiny, sae, ids: list[int]) -> torch.Tensor:
    """The planted SAE's unit-norm latents of every position, from a plain full forward."""
    from reasoning_dspy.engine import model_lock

    with torch.no_grad(), model_lock(tiny.model):
        hidden = tiny.model(torch.tensor([ids]), output_hidden_states=True).hidden_states[planted.LAYER + 1][0]
    return sae.unit_norm_view().encode(hidden)


# -- Prompt page ----------------------------------------------------------------------------------
def test_the_heatmap_holds_the_features_activation_on_every_token(dash, tiny):
    view = dash.prompt(WAIT_PROMPT, "", 12)
    tv = view.tokens
    assert tv.features == [planted.DETECT]  # the reasoning feature by default
    ids = view.answer.prompt_ids + view.answer.token_ids
    start = len(ids) - len(tv.pieces)
    expect = _latents_by_hand(tiny, dash.ws.sae, ids)[start:, planted.DETECT].numpy()
    np.testing.assert_allclose(tv.values[:, 0], expect, rtol=1e-4, atol=1e-6)
    waits = [i for i, p in enumerate(tv.pieces[: tv.answer_start]) if p == " wait"]
    assert len(waits) == 2 and all(tv.values[i, 0] > 0.05 for i in waits)  # the detector fires on " wait"
    # the engine measured the answer while generating it, at the positions that predict each answer token
    shifted = tv.values[tv.answer_start - 1 : tv.answer_start + view.answer.n_tokens - 1, 0]
    assert view.answer.reasoning_activation == pytest.approx(float(shifted.mean()), rel=1e-4, abs=1e-7)
    # and /v1/explain reads the answer's own tokens
    assert view.explanation["reasoning_activation"] == pytest.approx(float(tv.values[tv.answer_start:, 0].mean()),
                                                                     rel=1e-4, abs=1e-7)


def test_the_heatmap_html_carries_every_value_and_marks_the_evidence(dash):
    from reasoning_dspy.dashboard.prompt_view import evidence_html, heatmap_html

    view = dash.prompt(WAIT_PROMPT, f"{planted.DETECT}, 3", 12)
    html = heatmap_html(view, dash.ws)
    assert html.count('<span class="rd-tok') == 2 * len(view.tokens.pieces)  # one row per chosen feature
    assert f'data-value="{float(view.tokens.values[9, 0]):.6g}"' in html
    assert html.count("rd-evidence") == len(view.explanation["evidence"])
    assert "Reasoning activation over the answer" in evidence_html(view, dash.ws)
    assert [r[0] for r in view.top_rows] == [t["index"] for t in view.explanation["top_features"]]


@pytest.mark.parametrize(("prompt", "features", "message"), [
    ("   ", "", "the prompt is empty"),
    (WAIT_PROMPT, "16", "feature 16 is out of range: the SAE 'tiny-planted' has 16 features"),
    (WAIT_PROMPT, "-1", "out of range"),
    (WAIT_PROMPT, "nine", "whole number from 0 to 15"),
])
def test_bad_prompt_page_input_is_refused_with_a_clear_message(dash, prompt, features, message):
    with pytest.raises(DashboardError, match=message):
        dash.prompt(prompt, features, 12)


def test_through_a_server_the_page_shows_the_same_numbers(dash, tiny):
    from reasoning_dspy.dashboard.backend import ServerBackend
    from reasoning_dspy.dashboard.prompt_view import run_prompt
    from reasoning_dspy.serve import ServeConfig, ServerThread, create_app

    local = dash.prompt(WAIT_PROMPT, "", 12)
    with ServerThread(create_app(ServeConfig(model="tiny-random", sae=planted.NAME))) as server:
        remote = ServerBackend(server.url, dash.ws)
        try:
            view = run_prompt(remote, dash.ws, WAIT_PROMPT, "", max_tokens=12)
        finally:
            remote.close()
    assert view.answer.text == local.answer.text and view.answer.completion_id
    assert view.answer.reasoning_activation == pytest.approx(local.answer.reasoning_activation, rel=1e-5)
    ans, loc = view.tokens, local.tokens
    np.testing.assert_allclose(ans.values[ans.answer_start:], loc.values[loc.answer_start:], rtol=1e-4, atol=1e-6)
    # the server reads the prompt as a text on its own, after BOS
    ids = tiny.tokenizer(WAIT_PROMPT)["input_ids"]
    expect = _latents_by_hand(tiny, dash.ws.sae, ids)[1:, planted.DETECT].numpy()
    np.testing.assert_allclose(ans.values[: ans.answer_start, 0], expect, rtol=1e-4, atol=1e-6)
    assert [e["position"] for e in view.explanation["evidence"]] == [e["position"] for e in local.explanation["evidence"]]


def test_an_unreachable_server_is_reported_clearly(dash):
    from reasoning_dspy.dashboard.backend import ServerBackend

    with pytest.raises(DashboardError, match="cannot reach the server"):
        ServerBackend("http://127.0.0.1:9", dash.ws)


# -- Steering page --------------------------------------------------------------------------------
def test_steering_the_push_feature_changes_the_answer(dash):
    cmp = dash.steer("Is 91 prime?", "features", 2, str(planted.PUSH), 0.5, "add", "residual", 12)
    assert cmp.baseline.text != cmp.steered.text
    assert cmp.steered.text.count(" wait") > cmp.baseline.text.count(" wait")
    assert cmp.steered.perturbation_ratio == pytest.approx(0.5, rel=1e-3)  # residual units: ‖δ‖ = 0.5‖x‖
    assert cmp.baseline.perturbation_ratio is None
    base, steered = cmp.rows
    assert steered[1] > base[1]  # reasoning words
    assert steered[4] > base[4]  # the detector reads the written " wait"s


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(source="features", features=""), "name at least one feature"),
    (dict(source="top", top_n=0), "N must be from 1 to 16"),
    (dict(source="features", features="5", strength="x"), "strength must be a number"),
    (dict(source="features", features="5", strength=float("nan")), "finite"),
    (dict(source="features", features="5", mode="clamp", units="residual"), "clamp"),
    (dict(source="features", features="5", units="fmax"), r"never fired .*f_max = 0"),
    (dict(source="features", features="5", strength=50), "out of range"),
])
def test_bad_steering_is_refused_with_a_clear_message(dash, kwargs, message):
    from reasoning_dspy.dashboard.steer_view import steering_spec

    args = dict(source="features", top_n=2, features_text=kwargs.pop("features", "5"), strength=0.5, mode="add",
                units="residual")
    args.update(kwargs)
    with pytest.raises(DashboardError, match=message):
        steering_spec(dash.ws, **args)


def test_a_strength_sweep_measures_each_strength(dash):
    rows, fig = dash.sweep("Is 91 prime?", "features", 2, str(planted.PUSH), "add", "residual", "0.5, 0", 12)
    assert [r[0] for r in rows] == [0.0, 0.5]
    assert rows[0][4] is None and rows[1][4] == pytest.approx(0.5, rel=1e-3)
    assert rows[1][1] > rows[0][1]
    assert fig.axes and fig.axes[0].lines
    from reasoning_dspy.dashboard.steer_view import parse_strengths

    with pytest.raises(DashboardError, match="not a number"):
        parse_strengths("0, big")


# -- Feature page ---------------------------------------------------------------------------------
def test_the_feature_page_reads_the_corpus_and_the_unembedding(dash, tiny):
    view = dash.feature(planted.DETECT)
    corpus = dash.ws.corpus
    direct = dash.ws.sae.unit_norm_view().encode(corpus.acts.float())[:, planted.DETECT]
    assert view.n_tokens == corpus.n_tokens
    assert view.n_fired == int((direct > 0).sum()) > 0
    assert view.corpus_max == pytest.approx(float(direct.max()), rel=1e-5)
    assert int(view.histogram[0].sum()) == view.n_fired
    assert view.contexts[0].activation == pytest.approx(float(direct.max()), rel=1e-5)
    assert "wait" in [row[0].strip() for row in view.top_tokens]
    # the planted push feature's decoder row is the unembedding of " wait": it promotes " wait" most
    push = dash.feature(planted.PUSH)
    assert push.promoted[0][0] == " wait" and push.n_fired == 0
    with pytest.raises(DashboardError, match="out of range"):
        dash.feature(dash.ws.d_sae)


# -- Feature map ----------------------------------------------------------------------------------
def test_the_map_layout_is_cached_on_disk_by_decoder_fingerprint(tmp_path):
    from reasoning_dspy.dashboard.feature_map import map_html, map_layout

    torch.manual_seed(0)
    w = torch.randn(120, 16)
    first = map_layout(w, tmp_path)
    again = map_layout(w, tmp_path)
    assert not first.cached and again.cached
    np.testing.assert_array_equal(first.xy, again.xy)
    np.testing.assert_array_equal(first.clusters, again.clusters)
    files = sorted(p.name for p in (tmp_path / "maps").iterdir())
    assert files == [f"{first.key}.json", f"{first.key}.npy"]  # no pickle: plain .npy and JSON
    assert np.load(tmp_path / "maps" / f"{first.key}.npy", allow_pickle=False).shape == (120, 2)
    assert json.loads((tmp_path / "maps" / f"{first.key}.json").read_text())["n_features"] == 120
    w2 = w.clone()
    w2[0, 0] += 1e-3
    assert map_layout(w2, tmp_path).key != first.key  # another decoder, another layout
    html = map_html(first, [])
    assert all(f'data-feature="{i}"' in html for i in range(120))


def test_the_map_of_the_planted_sae_labels_the_firing_cluster(dash):
    state = dash.feature_map()
    assert state.html.count("data-feature=") == dash.ws.d_sae
    assert 'class="rd-pt rd-reasoning" data-feature="9"' in state.html
    labelled = [row for row in state.clusters if row[2]]
    assert len(labelled) == 1  # only the cluster holding the detector fires on the corpus
    assert dash.feature_map() is state  # kept for the next visitor


# -- SAE box --------------------------------------------------------------------------------------
def test_an_sae_for_another_model_is_refused_and_the_current_one_kept(dash, tmp_path):
    from reasoning_dspy.sae import SAE, SAEConfig, save_sae

    save_sae(SAE.from_config(SAEConfig(architecture="relu", d_in=32, d_sae=8, hook_layer=1)), tmp_path / "narrow")
    before = dash.ws
    with pytest.raises(DashboardError, match=r"expects d_in=32, but tiny-random has d_model=64"):
        dash.switch_sae(str(tmp_path / "narrow"))
    with pytest.raises(DashboardError, match="cannot load the SAE"):
        dash.switch_sae(str(tmp_path / "missing"))
    with pytest.raises(DashboardError, match="give an SAE"):
        dash.switch_sae("  ")
    assert dash.ws is before
    torch.manual_seed(4)
    save_sae(SAE.from_config(SAEConfig(architecture="relu", d_in=64, d_sae=24, hook_layer=1)), tmp_path / "fits")
    header = dash.switch_sae(str(tmp_path / "fits"))  # one that fits: the pages move to it
    assert "24 features, layer 1; no ReasonScore table" in header and dash.ws.d_sae == 24
    assert dash.prompt(WAIT_PROMPT, "", 4).tokens.features  # the answer's own top features
    dash.switch_sae(planted.NAME)
    assert dash.ws.served.reasoning_features == planted.REASONING
    dash.ws.wait_corpus()


def test_an_sae_without_scores_gets_its_f_max_from_the_corpus(tiny, tmp_path):
    from reasoning_dspy.sae import SAE, SAEConfig, save_sae

    torch.manual_seed(3)
    save_sae(SAE.from_config(SAEConfig(architecture="relu", d_in=64, d_sae=24, hook_layer=1)), tmp_path / "plain")
    ws = with_sae(tiny, str(tmp_path / "plain"), name="tiny-random", cache_dir=tmp_path / "cache", corpus_limit=8)
    assert ws.scores is None and ws.served.reasoning_features == []
    direct = ws.view.encode(ws.corpus.acts.float()).amax(0)
    torch.testing.assert_close(ws.served.max_activation, direct.clamp_min(0))
    assert ws.describe(3)["label"] == "#3"


# -- Experiments page -----------------------------------------------------------------------------
def test_runs_trials_and_annotations_come_from_the_tracking_database(dash):
    from reasoning_dspy.dashboard.experiments_view import (
        annotation_rows,
        run_detail,
        runs_rows,
        trial_figures,
    )
    from reasoning_dspy.tracking import AnnotationStore, Tracker

    url = dash.cfg.database_url
    trials = [{"number": i, "params": {}, "candidate": {"instruction": f"instruction {i}", "features": [5] * (i % 2),
                                                        "strength": 0.5 * (i % 2), "mode": "add"},
               "score": s, "activation": s, "accuracy": a, "tokens": t, "reflect": 0.0, "word_rate": 0.0, "n": 4,
               "wall_s": 1.0, "feasible": True}
              for i, (s, a, t) in enumerate([(0.1, 0.5, 10.0), (0.3, 0.25, 12.0), (0.2, 0.75, 8.0), (0.05, 0.5, 20.0)])]
    with Tracker.open(dash.cache_dir / "journal.jsonl", url) as tracker:
        run = tracker.start_run("opt-tiny", kind="optimize")
        tracker.log_trials(run, trials)
        tracker.log_generation(run, "Is 91 prime?", "wait no", label="heldout/steered", index=0,
                               reasoning_activation=0.25, correct=1.0, tokens=3)
        tracker.finish_run(run)
    notes = dash.notes()
    row = next(r for r in runs_rows(notes) if r[-1] == run)
    assert row[:5] == ["opt-tiny", "optimize", "finished", 4, 1]
    stored, trial_rows, gen_rows = run_detail(notes, run)
    assert [r[0] for r in trial_rows] == [0, 1, 2, 3] and trial_rows[1][8] == "add 0.5 on #5"
    assert gen_rows[0][2] == "Is 91 prime?" and gen_rows[0][4] == 0.25
    per_trial, pareto = trial_figures(stored)
    best = per_trial.axes[0].lines[0].get_ydata()
    assert list(best) == [0.1, 0.3, 0.3, 0.3]  # best so far
    front = pareto.axes[0].collections[1].get_offsets()
    assert sorted(map(tuple, front.tolist())) == [(0.25, 0.3), (0.75, 0.2)]  # trial 0 and 3 are dominated by 2
    flag = dash.annotate("flag", "Is 91 prime?", "ana", run_id=run, generation_id=gen_rows[0][-1], note="too short")
    score = dash.annotate("score", "Is 91 prime?", "ben", run_id=run, score="0.8")
    answer, rescore = dash.rescore("Is 91 prime?", "ana", run_id=run, max_tokens=12)
    assert rescore.score == pytest.approx(answer.reasoning_activation) and rescore.output == answer.text
    with AnnotationStore.open(url) as reopened:  # stored in the database, with who and when
        kept = reopened.list(run_id=run)
    assert [(a.kind, a.author) for a in kept] == [("rescore", "ana"), ("score", "ben"), ("flag", "ana")]
    assert kept[2].note == "too short" and kept[2].created_at == flag.created_at and kept[1].score == 0.8
    assert annotation_rows(kept)[1][1:4] == ["ben", "score", 0.8]
    assert score.created_at.tzinfo is not None
    with pytest.raises(DashboardError, match="needs its author"):
        dash.annotate("flag", "Is 91 prime?", "  ")
    with pytest.raises(DashboardError, match="score as a number"):
        dash.annotate("score", "Is 91 prime?", "ana", score="high")
    with pytest.raises(DashboardError, match="pick a prompt"):
        dash.rescore("", "ana")


def test_an_unusable_database_is_reported_and_the_rest_works(tiny, dash):
    cfg = dash.cfg.model_copy(update={"database_url": "mysql://nowhere/db"})
    board = Dashboard(cfg, dash.ws, dash.backend)
    with pytest.raises(DashboardError, match="tracking database cannot be opened: .*not supported"):
        board.notes()
    assert "unusable" in board.tracking_where()


# -- errors in the app ----------------------------------------------------------------------------
def test_the_app_turns_errors_into_one_line_without_a_traceback(caplog):
    import gradio as gr

    from reasoning_dspy.dashboard.app import guarded

    @guarded(3)
    def refuses() -> None:
        raise DashboardError("the prompt is empty: type a question or some text first")

    @guarded(1)
    def breaks() -> None:
        raise ZeroDivisionError("division by zero")

    with pytest.warns(UserWarning):
        status, *rest = refuses()
    assert status == "⚠️ the prompt is empty: type a question or some text first"
    assert all(isinstance(r, type(gr.skip())) for r in rest) and len(rest) == 2
    with pytest.warns(UserWarning):
        line = breaks()
    assert "Traceback" not in line and line.count("\n") == 0
    assert line.startswith("⚠️ unexpected error (ZeroDivisionError: division by zero)")
    assert "Traceback" in caplog.text  # the details go to the server's log


def test_the_cli_refuses_bad_settings_before_loading_anything(tmp_path):
    from typer.testing import CliRunner

    from reasoning_dspy.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["dashboard", "--server", "localhost:8000"])
    assert result.exit_code == 2 and "server must be an http(s) URL" in result.output
    assert "Traceback" not in result.output
    help_text = runner.invoke(app, ["dashboard", "--help"]).output
    assert "--host" in help_text and "127.0.0.1" in help_text and "--database-url" in help_text
    from reasoning_dspy.sae import SAE, SAEConfig, save_sae

    save_sae(SAE.from_config(SAEConfig(architecture="relu", d_in=32, d_sae=8, hook_layer=1)), tmp_path / "narrow")
    result = runner.invoke(app, ["dashboard", "--model", "tiny-random", "--sae", str(tmp_path / "narrow"),
                                 "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 2 and "expects d_in=32, but tiny-random has d_model=64" in result.output
    assert "Traceback" not in result.output
