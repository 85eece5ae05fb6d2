"""The Gradio app: five pages (Prompt, Steering, Feature, Feature map, Experiments) laid out over a
`Dashboard`, with analytics off and system fonts only, so the page never reaches beyond this
machine (`launch.start` serves it on 127.0.0.1).

Every action goes through `guarded`: bad input (an empty prompt, a feature index out of range, an
SAE that does not fit the model, an unusable database) becomes a warning toast and a status line,
and anything unexpected is logged with its traceback on the server while the page shows one line.
"""

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import functools  # noqa: E402
import logging  # noqa: E402
from typing import Any  # noqa: E402

import gradio as gr  # noqa: E402

from reasoning_dspy.dashboard.experiments_view import (  # noqa: E402
    ANNOTATION_COLUMNS,
    GENERATION_COLUMNS,
    RUN_COLUMNS,
    TRIAL_COLUMNS,
    annotation_rows,
    run_detail,
    runs_rows,
    trial_figures,
)
from reasoning_dspy.dashboard.feature_map import MAP_CLICK_JS  # noqa: E402
from reasoning_dspy.dashboard.feature_view import (  # noqa: E402
    LOGIT_COLUMNS,
    TOKEN_COLUMNS,
    contexts_html,
    histogram_figure,
    summary_markdown,
)
from reasoning_dspy.dashboard.prompt_view import TOP_FEATURE_COLUMNS, evidence_html, heatmap_html  # noqa: E402
from reasoning_dspy.dashboard.session import Dashboard  # noqa: E402
from reasoning_dspy.dashboard.steer_view import MEASURE_COLUMNS, SWEEP_COLUMNS  # noqa: E402
from reasoning_dspy.dashboard.workspace import DashboardError  # noqa: E402

logger = logging.getLogger("reasoning_dspy.dashboard")

#: System fonts only: no font is fetched from the internet.
THEME = gr.themes.Base(font=("ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "sans-serif"),
                       font_mono=("ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"))
CSS = """
.rd-heatmap .rd-row { margin: 0 0 12px 0; }
.rd-row-head { font-weight: 600; margin-bottom: 4px; }
.rd-dim { font-weight: 400; color: #6b7280; font-size: 0.85em; margin-left: 8px; }
.rd-tokens, .rd-context { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 0.85em; line-height: 1.9; }
.rd-tok { padding: 1px 0; border-radius: 2px; white-space: pre-wrap; }
.rd-evidence { outline: 2px solid #1d4ed8; outline-offset: 0; }
mark.rd-evidence { background: #fde68a; }
.rd-center { outline: 2px solid #111; }
.rd-sep { color: #1d4ed8; font-weight: 700; margin: 0 4px; }
.rd-table { border-collapse: collapse; font-size: 0.9em; }
.rd-table td, .rd-table th { border-bottom: 1px solid #e5e7eb; padding: 3px 8px; text-align: left; vertical-align: top; }
.rd-map .rd-pt { cursor: pointer; }
.rd-map .rd-pt:hover { stroke: #111; stroke-width: 2; }
.rd-map .rd-cluster { font: 600 12px ui-sans-serif, system-ui, sans-serif; fill: #111; paint-order: stroke;
                      stroke: #fff; stroke-width: 3px; pointer-events: none; }
"""
HEAVY = "heavy"  # concurrency id of CPU-bound pages (feature statistics, the map): one at a time


def guarded(n_outputs: int) -> Any:
    """Wrap a handler whose first output is a status line: errors become a warning and that line."""

    def wrap(fn: Any) -> Any:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except DashboardError as err:
                message = str(err)
            except Exception as err:  # noqa: BLE001 - the page shows one line, the log the traceback
                logger.exception("dashboard action %s failed", fn.__name__)
                message = f"unexpected error ({type(err).__name__}: {err}); the details are in the dashboard's log"
            gr.Warning(message)
            status = f"⚠️ {message}"
            return status if n_outputs == 1 else (status, *[gr.skip()] * (n_outputs - 1))

        return run

    return wrap


def _progress(progress: Any) -> Any:
    return lambda frac, message: progress(frac, desc=message)


def build(dash: Dashboard) -> gr.Blocks:
    """The five pages over `dash`."""
    defaults = dash.steering_defaults()
    with gr.Blocks(title="reasoning-dspy dashboard", analytics_enabled=False) as demo:
        gr.Markdown("## reasoning-dspy: reasoning features, where they fire and what steering does")
        header = gr.Markdown(dash.header(), elem_id="rd-header")
        with gr.Row():
            who = gr.Textbox(label="your name (recorded with flags and scores)", value=dash.cfg.resolved_user(),
                             scale=1, elem_id="rd-who")
            with gr.Accordion("SAE", open=False, elem_id="rd-sae-box"):
                with gr.Row():
                    sae_box = gr.Textbox(label="SAE folder, shipped SAE name, or tiny-planted", elem_id="rd-sae")
                    scores_box = gr.Textbox(label="ReasonScore folder (default: scores/ in the SAE folder)")
                sae_button = gr.Button("Load SAE", elem_id="rd-sae-load")
                sae_status = gr.Markdown(elem_id="rd-sae-status")
        with gr.Tabs(selected="prompt") as tabs:
            with gr.Tab("Prompt", id="prompt"):
                gr.Markdown("The model answers the prompt (unsteered). The heatmap shades every token of the chat "
                            "and of the answer by the chosen features' activation (full colour at the feature's "
                            "f_max); outlined answer tokens are the evidence, where the reasoning features fired hardest.")
                with gr.Row():
                    prompt = gr.Textbox(label="prompt", lines=3, scale=3, elem_id="rd-prompt")
                    with gr.Column(scale=1):
                        features = gr.Textbox(label="features to show (empty: the reasoning features)",
                                              value=", ".join(map(str, dash.ws.served.reasoning_features[:4])),
                                              elem_id="rd-features")
                        max_tokens = gr.Slider(1, 512, value=dash.cfg.max_tokens, step=1, label="answer tokens")
                        run = gr.Button("Generate", variant="primary", elem_id="rd-generate")
                status = gr.Markdown(elem_id="rd-prompt-status")
                answer = gr.Textbox(label="answer", lines=3, interactive=False, elem_id="rd-answer")
                heat = gr.HTML(elem_id="rd-heatmap")
                top = gr.Dataframe(headers=TOP_FEATURE_COLUMNS, label="top features of the answer (mean activation)",
                                   interactive=False, elem_id="rd-top-features")
                evidence = gr.HTML(elem_id="rd-evidence")
            with gr.Tab("Steering", id="steering"):
                gr.Markdown("Baseline and steered answers to one prompt, generated in one batch. Strength γ is per "
                            "feature: in residual units each token moves by γ·√N·‖x‖ (N features), in f_max units "
                            "by γ·f_max along each decoder direction; clamp sets the feature to γ·f_max.")
                with gr.Row():
                    s_prompt = gr.Textbox(label="prompt", lines=3, scale=3, elem_id="rd-steer-prompt")
                    with gr.Column(scale=2):
                        source = gr.Radio([("top N by ReasonScore", "top"), ("these features", "features")],
                                          value=defaults["source"], label="steer")
                        with gr.Row():
                            top_n = gr.Number(value=defaults["top_n"], precision=0, label="N", minimum=1)
                            s_features = gr.Textbox(value=defaults["features"], label="features", elem_id="rd-steer-features")
                        with gr.Row():
                            strength = gr.Number(value=defaults["strength"], label="strength γ", elem_id="rd-strength")
                            mode = gr.Radio(["add", "clamp"], value=defaults["mode"], label="mode")
                            units = gr.Radio([("× residual norm", "residual"), ("× f_max", "fmax")],
                                             value=defaults["units"], label="units")
                        s_max = gr.Slider(1, 512, value=dash.cfg.max_tokens, step=1, label="answer tokens")
                s_run = gr.Button("Steer", variant="primary", elem_id="rd-steer")
                s_status = gr.Markdown(elem_id="rd-steer-status")
                with gr.Row():
                    base_out = gr.Textbox(label="baseline", lines=6, interactive=False, elem_id="rd-baseline")
                    steer_out = gr.Textbox(label="steered", lines=6, interactive=False, elem_id="rd-steered")
                measures = gr.Dataframe(headers=MEASURE_COLUMNS, interactive=False, elem_id="rd-measures")
                save_steer = gr.Button("Record the steered answer in the tracking database", size="sm",
                                       elem_id="rd-steer-save")
                gr.Markdown("#### Strength sweep (dose-response for this prompt)")
                with gr.Row():
                    strengths = gr.Textbox(value="0, 0.05, 0.1, 0.2, 0.4", label="strengths (0 = unsteered)", scale=3,
                                           elem_id="rd-strengths")
                    sweep_run = gr.Button("Sweep", scale=1, elem_id="rd-sweep")
                sweep_plot = gr.Plot(label="dose-response", elem_id="rd-sweep-plot")
                sweep_table = gr.Dataframe(headers=SWEEP_COLUMNS, interactive=False, wrap=True,
                                           column_widths=["9%", "10%", "8%", "11%", "9%", "53%"])
            with gr.Tab("Feature", id="feature"):
                with gr.Row():
                    f_index = gr.Number(value=(dash.ws.served.reasoning_features or [0])[0], precision=0,
                                        label=f"feature (0..{dash.ws.d_sae - 1})", elem_id="rd-feature-index")
                    f_open = gr.Button("Open", variant="primary", elem_id="rd-feature-open")
                f_status = gr.Markdown(elem_id="rd-feature-status")
                f_summary = gr.Markdown(elem_id="rd-feature-summary")
                f_hist = gr.Plot(label="activation density", elem_id="rd-feature-hist")
                gr.Markdown("#### Max-activating contexts (corpus: the bundled reasoning traces and prompts)")
                f_contexts = gr.HTML(elem_id="rd-feature-contexts")
                with gr.Row():
                    f_tokens = gr.Dataframe(headers=TOKEN_COLUMNS, label="tokens it fires on", interactive=False)
                    f_up = gr.Dataframe(headers=LOGIT_COLUMNS, label="logit effects: promoted", interactive=False)
                    f_down = gr.Dataframe(headers=LOGIT_COLUMNS, label="logit effects: suppressed", interactive=False)
            with gr.Tab("Feature map", id="map") as map_tab:
                m_status = gr.Markdown("Open this page to draw the map (the first time for an SAE computes the "
                                       "UMAP layout; later starts read it from the cache).", elem_id="rd-map-status")
                m_html = gr.HTML(js_on_load=MAP_CLICK_JS, elem_id="rd-map")
                m_clusters = gr.Dataframe(headers=["cluster", "features", "top words", "mean ReasonScore"],
                                          interactive=False, label="clusters")
            with gr.Tab("Experiments", id="experiments") as exp_tab:
                e_status = gr.Markdown(elem_id="rd-exp-status")
                e_refresh = gr.Button("Refresh", size="sm", elem_id="rd-exp-refresh")
                e_runs = gr.Dataframe(headers=RUN_COLUMNS, interactive=False, label="runs (select one)",
                                      elem_id="rd-runs")
                e_run = gr.Textbox(label="selected run id", interactive=False, elem_id="rd-run-id")
                with gr.Row():
                    e_plot1 = gr.Plot(label="score per trial")
                    e_plot2 = gr.Plot(label="Pareto front")
                e_trials = gr.Dataframe(headers=TRIAL_COLUMNS, interactive=False, label="trials", wrap=True)
                e_gens = gr.Dataframe(headers=GENERATION_COLUMNS, interactive=False, wrap=True,
                                      label="generated answers (select one to annotate it)", elem_id="rd-generations")
                gr.Markdown("#### Annotate a prompt")
                with gr.Row():
                    e_prompt = gr.Textbox(label="prompt", lines=2, scale=3, elem_id="rd-exp-prompt")
                    e_gen = gr.Textbox(label="generation id", interactive=False, scale=1, elem_id="rd-exp-gen")
                with gr.Row():
                    e_note = gr.Textbox(label="note", scale=3, elem_id="rd-note")
                    e_score = gr.Textbox(label="your score (a number)", scale=1, elem_id="rd-score")
                with gr.Row():
                    e_flag = gr.Button("Flag", elem_id="rd-flag")
                    e_save_score = gr.Button("Save my score", elem_id="rd-save-score")
                    e_rescore = gr.Button("Re-score with the model", elem_id="rd-rescore")
                    e_steer = gr.Button("Steer it by hand", elem_id="rd-steer-by-hand")
                e_notes = gr.Dataframe(headers=ANNOTATION_COLUMNS, interactive=False, wrap=True,
                                       label="annotations (newest first)", elem_id="rd-annotations")

        # -- header: the corpus line follows its extraction -------------------------------------
        timer = gr.Timer(3, active=not dash.ws.pending.ready)

        def on_tick() -> Any:
            return dash.header(), gr.Timer(active=not dash.ws.pending.ready)

        timer.tick(on_tick, None, [header, timer], show_progress="hidden")
        demo.load(on_tick, None, [header, timer], show_progress="hidden")

        # -- Prompt ------------------------------------------------------------------------------
        @guarded(6)
        def on_prompt(text: str, chosen: str, n: int) -> Any:
            view = dash.prompt(text, chosen, n)
            ws = dash.ws
            act = view.answer.reasoning_activation
            line = f"{view.answer.n_tokens} answer tokens ({view.answer.finish_reason})"
            if act is not None:
                line += (f"; reasoning activation {act:.4g} (measured while generating, at the positions that "
                         "predict each answer token)")
            shown = ", ".join(map(str, view.tokens.features))
            return (line, view.answer.text, heatmap_html(view, ws), view.top_rows, evidence_html(view, ws), shown)

        prompt_outputs = [status, answer, heat, top, evidence, features]
        run.click(on_prompt, [prompt, features, max_tokens], prompt_outputs, concurrency_limit=16)
        prompt.submit(on_prompt, [prompt, features, max_tokens], prompt_outputs, concurrency_limit=16)

        # -- Steering ----------------------------------------------------------------------------
        @guarded(4)
        def on_steer(text: str, src: str, n: Any, chosen: str, gamma: Any, how: str, unit: str, tokens: int) -> Any:
            cmp = dash.steer(text, src, n, chosen, gamma, how, unit, tokens)
            feats = ", ".join(f"#{f} × {g:g}" for f, g in cmp.spec.features.items())
            line = f"steered {feats} ({cmp.spec.mode}, {cmp.spec.units} units)"
            return line, cmp.baseline.text, cmp.steered.text, cmp.rows

        steer_inputs = [s_prompt, source, top_n, s_features, strength, mode, units, s_max]
        s_run.click(on_steer, steer_inputs, [s_status, base_out, steer_out, measures], concurrency_limit=16)

        @guarded(3)
        def on_sweep(text: str, src: str, n: Any, chosen: str, how: str, unit: str, values: str, tokens: int) -> Any:
            rows, fig = dash.sweep(text, src, n, chosen, how, unit, values, tokens)
            return f"swept {len(rows)} strengths", fig, rows

        sweep_run.click(on_sweep, [s_prompt, source, top_n, s_features, mode, units, strengths, s_max],
                        [s_status, sweep_plot, sweep_table], concurrency_limit=8)

        @guarded(1)
        def on_save_steer(text: str, src: str, n: Any, chosen: str, gamma: Any, how: str, unit: str, tokens: int,
                          author: str) -> Any:
            cmp = dash.steer(text, src, n, chosen, gamma, how, unit, tokens)
            if cmp.steered.reasoning_activation is None:
                raise DashboardError("this SAE has no reasoning features to measure (no ReasonScore table)")
            dash.annotate("steer", text, author, score=cmp.steered.reasoning_activation, output=cmp.steered.text,
                          steering=cmp.spec.model_dump(mode="json"))
            gr.Info("recorded in the tracking database")
            return f"recorded the steered answer (reasoning activation {cmp.steered.reasoning_activation:.4g}) as {author}"

        save_steer.click(on_save_steer, [*steer_inputs, who], [s_status])

        # -- Feature -----------------------------------------------------------------------------
        def feature_outputs(index: Any, progress: Any) -> tuple:
            view = dash.feature(index, progress=_progress(progress))
            return ("", summary_markdown(view, dash.ws), histogram_figure(view), contexts_html(view),
                    view.top_tokens, view.promoted, view.suppressed)

        @guarded(7)
        def on_feature(index: Any, progress: gr.Progress = gr.Progress()) -> Any:  # noqa: B008
            return feature_outputs(index, progress)

        feature_page = [f_status, f_summary, f_hist, f_contexts, f_tokens, f_up, f_down]
        f_open.click(on_feature, [f_index], feature_page, concurrency_id=HEAVY, concurrency_limit=1)
        f_index.submit(on_feature, [f_index], feature_page, concurrency_id=HEAVY, concurrency_limit=1)

        # -- Feature map -------------------------------------------------------------------------
        @guarded(3)
        def on_map(progress: gr.Progress = gr.Progress()) -> Any:  # noqa: B008
            state = dash.feature_map(progress=_progress(progress))
            return state.note, state.html, state.clusters

        map_tab.select(on_map, None, [m_status, m_html, m_clusters], concurrency_id=HEAVY, concurrency_limit=1)

        @guarded(9)
        def on_point(evt: gr.EventData, progress: gr.Progress = gr.Progress()) -> Any:  # noqa: B008
            index = getattr(evt, "feature", None)
            if index is None:
                raise DashboardError("click on a point of the map to open its feature page")
            return (*feature_outputs(index, progress), gr.Tabs(selected="feature"), int(index))

        m_html.click(on_point, None, [*feature_page, tabs, f_index], concurrency_id=HEAVY, concurrency_limit=1)

        # -- Experiments -------------------------------------------------------------------------
        def run_outputs(run_id: str, name: str) -> tuple:
            trials, trial_rows, gen_rows = run_detail(dash.notes(), run_id)
            fig1, fig2 = trial_figures(trials, name)
            return run_id, fig1, fig2, trial_rows, gen_rows

        @guarded(8)
        def on_runs() -> Any:
            notes = dash.notes()
            rows = runs_rows(notes)
            head = (f"{len(rows)} runs in {notes.where}; showing the newest, {rows[0][0]!r} (select another)" if rows
                    else f"no runs in {notes.where} yet: `reasoning-dspy optimize` and `reasoning-dspy steer --track` "
                         "record theirs there")
            detail = run_outputs(rows[0][-1], rows[0][0]) if rows else (gr.skip(),) * 5
            return (head, rows, annotation_rows(notes.list()), *detail)

        run_view = [e_run, e_plot1, e_plot2, e_trials, e_gens]
        exp_tab.select(on_runs, None, [e_status, e_runs, e_notes, *run_view])
        e_refresh.click(on_runs, None, [e_status, e_runs, e_notes, *run_view])

        @guarded(6)
        def on_run(evt: gr.SelectData) -> Any:
            row = evt.row_value or []
            run_id = row[-1] if row else None
            if not run_id:
                raise DashboardError("select a run in the table")
            out = run_outputs(run_id, row[0])
            return (f"run {row[0]}: {len(out[3])} trials, {len(out[4])} generated answers", *out)

        e_runs.select(on_run, None, [e_status, *run_view])

        @guarded(3)
        def on_generation(evt: gr.SelectData) -> Any:
            row = evt.row_value or []
            if not row:
                raise DashboardError("select a generated answer in the table")
            return f"selected: {row[0]} #{row[1]}", row[2], row[-1]

        e_gens.select(on_generation, None, [e_status, e_prompt, e_gen])

        def _note_rows(_run_id: str) -> list:
            return annotation_rows(dash.notes().list())

        @guarded(2)
        def on_flag(text: str, author: str, run_id: str, gen_id: str, note: str) -> Any:
            row = dash.annotate("flag", text, author, run_id=run_id or None, generation_id=gen_id or None, note=note)
            gr.Info("flag stored")
            return f"flagged by {row.author} at {row.created_at:%Y-%m-%d %H:%M:%S} UTC", _note_rows(run_id)

        e_flag.click(on_flag, [e_prompt, who, e_run, e_gen, e_note], [e_status, e_notes])

        @guarded(2)
        def on_score(text: str, author: str, run_id: str, gen_id: str, note: str, value: Any) -> Any:
            row = dash.annotate("score", text, author, run_id=run_id or None, generation_id=gen_id or None,
                                note=note, score=value)
            return f"score {row.score:g} stored for {row.author}", _note_rows(run_id)

        e_save_score.click(on_score, [e_prompt, who, e_run, e_gen, e_note, e_score], [e_status, e_notes])

        @guarded(2)
        def on_rescore(text: str, author: str, run_id: str, gen_id: str, note: str) -> Any:
            answer_, row = dash.rescore(text, author, run_id=run_id or None, generation_id=gen_id or None, note=note,
                                        max_tokens=dash.cfg.max_tokens)
            return (f"re-scored: reasoning activation {row.score:.4g} over {answer_.n_tokens} answer tokens",
                    _note_rows(run_id))

        e_rescore.click(on_rescore, [e_prompt, who, e_run, e_gen, e_note], [e_status, e_notes], concurrency_limit=8)

        def on_steer_by_hand(text: str) -> Any:
            if not (text or "").strip():
                gr.Warning("pick a prompt first: select a generated answer, or type one")
                return gr.skip(), gr.skip()
            return gr.Tabs(selected="steering"), text

        e_steer.click(on_steer_by_hand, [e_prompt], [tabs, s_prompt])

        # -- SAE ---------------------------------------------------------------------------------
        @guarded(11)
        def on_sae(path: str, scores_dir: str, progress: gr.Progress = gr.Progress()) -> Any:  # noqa: B008
            head = dash.switch_sae(path, scores_dir, progress=_progress(progress))
            gr.Info(f"now using the SAE {dash.ws.served.sae_name}")
            d = dash.steering_defaults()
            return (f"loaded {dash.ws.served.sae_name}", head, ", ".join(map(str, dash.ws.served.reasoning_features[:4])),
                    d["source"], d["top_n"], d["features"], d["strength"], d["mode"], d["units"],
                    gr.Number(label=f"feature (0..{dash.ws.d_sae - 1})"), gr.Timer(active=not dash.ws.pending.ready))

        sae_button.click(on_sae, [sae_box, scores_box],
                         [sae_status, header, features, source, top_n, s_features, strength, mode, units, f_index, timer],
                         concurrency_id=HEAVY, concurrency_limit=1)
    return demo
