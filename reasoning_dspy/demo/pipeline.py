"""The pipeline demo: every stage from scratch (extract, train an SAE, score, steer), in about a
minute on `tiny-random`; with the hub, the same stages run on TinyLlama or any Llama-family model.

Each stage is a small function taking the shared `DemoState`, so the demo reads as the pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

console = Console()


@dataclass
class DemoState:
    out: Path
    limit: int
    model: str = "tiny-random"
    layer: int | None = None  # None: 60% of the model's depth (layer 2 of tiny-random's 4)
    loaded: Any = None
    prompts: list[str] = field(default_factory=list)
    cache: Any = None
    extras: dict[str, Any] = field(default_factory=dict)


def stage_extract(state: DemoState) -> None:
    from reasoning_dspy.activations import CacheError, extract_activations
    from reasoning_dspy.models import load_model
    from reasoning_dspy.prompts import load_prompts
    from reasoning_dspy.study.runner import default_layer

    state.loaded = load_model(state.model, dtype="float32")
    if state.layer is None:
        state.layer = default_layer(state.loaded.model_spec.n_layers)
    # Half prompts, half worked reasoning traces: the traces carry the "wait"/"therefore" words
    # that ReasonScore looks for (prompts alone rarely contain them).
    half = max(1, state.limit // 2)
    state.prompts = load_prompts("bundled", limit=half) + load_prompts("bundled-traces", limit=state.limit - half)
    model_spec = state.loaded.model_spec
    console.print(f"model [bold]{model_spec.name}[/]: {model_spec.n_layers} layers, d_model {model_spec.d_model}, "
                  f"vocab {len(state.loaded.tokenizer)}")

    def extract(overwrite: bool = False):
        return extract_activations(state.loaded.model, state.loaded.tokenizer, state.prompts, state.layer,
                                   state.out / "activations", dtype="float32", shard_tokens=4096,
                                   overwrite=overwrite)

    try:  # an earlier demo run is reused, an interrupted one resumed
        state.cache = extract()
    except CacheError as err:  # e.g. an earlier demo run with another --limit
        console.print(f"[yellow]starting the cache again: {err}[/]")
        state.cache = extract(overwrite=True)
    m = state.cache.manifest
    console.print(f"activations: {m.n_tokens} tokens x {m.d_model} from {m.n_prompts} prompts at layer "
                  f"{m.layer}, {len(m.shards)} shards in {state.cache.path}")


def stage_train_sae(state: DemoState) -> None:
    """Train a small TopK SAE on the cache in a few seconds and print its FVU, L0 and dead %."""
    from reasoning_dspy.sae import SAETrainConfig, train_sae

    n = state.cache.n_tokens
    batch = min(512, n)
    cfg = SAETrainConfig(cache=str(state.cache.path), out=str(state.out / "sae"), arch="topk",
                         d_sae=8 * state.cache.d_model, k=16, batch_size=batch, lr=2e-3,
                         tokens=max(4 * n, 40 * batch), dead_tokens=20 * batch, log_every=5,
                         overwrite=True)  # a demo run redoes every stage: the scores after it follow the new SAE
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 64-wide SAE gains nothing from threads; on a busy CPU they cost ~50x
    try:
        result = train_sae(cfg, state.cache, progress=False)
    finally:
        torch.set_num_threads(threads)
    ev = result.eval
    console.print(f"TopK SAE d_sae={cfg.d_sae} k={cfg.k}: [bold]FVU {ev.fvu:.3f}[/], L0 {ev.l0:.1f}, "
                  f"dead {100 * ev.dead_fraction:.1f}% after {result.steps} steps "
                  f"({result.tokens_per_second:,.0f} tokens/s); saved to {result.out}")
    state.extras["sae"] = result.sae


def stage_score(state: DemoState) -> None:
    """Rank the trained SAE's features by ReasonScore and print the top 10 with their words."""
    import warnings

    from rich.table import Table
    from rich.text import Text

    from reasoning_dspy.features.analysis import analyze_features, write_analysis
    from reasoning_dspy.features.reasonscore import VocabularyWarning, score_features

    sae = state.extras.get("sae")
    if sae is None:
        console.print("[yellow]no trained SAE in this demo run (stage train_sae must run first); skipping[/]")
        return
    tokenizer = state.loaded.tokenizer
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", VocabularyWarning)
        scores = score_features(state.cache, sae, tokenizer=tokenizer, progress=False)
    for w in caught:
        console.print(f"[yellow]note: {w.message}[/]")
    folder = state.out / "scores"
    scores.save(folder)
    reports = analyze_features(state.cache, sae, scores, tokenizer=tokenizer, n_features=10, n_contexts=3,
                               progress=False)
    write_analysis(folder, scores, reports)
    table = Table(title=f"top features by ReasonScore ({len(scores.selected)} of {scores.d_sae} selected)")
    for col in ("rank", "feature", "score", "max", "density", "top words", "top context"):
        wraps = col in ("top words", "top context")  # numbers never wrap; text does on narrow terminals
        table.add_column(col, no_wrap=not wraps, min_width=20 if col == "top context" else None)
    for r in reports:
        words = ", ".join(w for w, _ in r.top_words[:3]) or "-"
        context = Text()
        if r.contexts:  # a few tokens around the max-activating one, which is highlighted
            c = r.contexts[0]
            for i in range(max(c.center - 4, 0), min(c.center + 3, len(c.tokens))):
                context.append(c.tokens[i].replace("\n", " "), style="bold reverse" if i == c.center else "")
        table.add_row(str(r.rank), str(r.index), f"{r.score:+.4f}", f"{r.max_activation:.2f}",
                      f"{r.density:.3f}", words, context)
    console.print(table)
    console.print(f"scores, analysis and plots in {folder}")
    state.extras["scores"] = scores


STEER_PROMPTS = ["Is 91 a prime number?", "Should I take an umbrella if the sky is grey?",
                 "How many legs do three spiders have?"]


def stage_steer(state: DemoState) -> None:
    """Generate baseline and steered answers side by side, each with its reasoning activation."""
    import copy

    from rich.table import Table

    from reasoning_dspy.engine import SteeredEngine
    from reasoning_dspy.sae import SAE, SAEConfig
    from reasoning_dspy.steering import SteeringSpec, estimate_max_activation

    model, tokenizer, model_spec = state.loaded
    sae, scores = state.extras.get("sae"), state.extras.get("scores")
    if sae is None:
        console.print("[yellow]no trained SAE in this run: steering with a random one (directions are arbitrary)[/]")
        sae = SAE.from_config(SAEConfig(architecture="relu", d_in=model_spec.d_model, d_sae=4 * model_spec.d_model))
    if sae.cfg.hook_layer is None:
        sae = copy.deepcopy(sae)
        sae.cfg = sae.cfg.model_copy(update={"hook_layer": state.layer})
    features = scores.top(2) if scores is not None else [0, 1]
    fmax = scores.max_activation if scores is not None else estimate_max_activation(
        model, tokenizer, sae, state.prompts[:32])
    steering = SteeringSpec.from_features(features, strength=4.0)
    engine = SteeredEngine(model, tokenizer, sae=sae, max_activation=fmax, capture=True,
                           reasoning_features=features, max_tokens=24)
    try:
        baseline = engine.generate(STEER_PROMPTS, steering=None)
        steered = engine.generate(STEER_PROMPTS, steering=steering)
    finally:
        engine.close()
    table = Table(title=f"steering features {features} at γ=4 (layer {sae.cfg.hook_layer}); "
                        "activation = mean of those features over the answer")
    for col in ("prompt", "baseline", "act", "steered", "act"):
        table.add_column(col, overflow="fold")
    for prompt, b, s in zip(STEER_PROMPTS, baseline, steered, strict=True):
        table.add_row(prompt, b.text.strip(), f"{b.report.features_mean:.3f}", s.text.strip(),
                      f"{s.report.features_mean:.3f}")
    console.print(table)
    state.extras["steering"] = steering
    state.extras["answers"] = list(zip(STEER_PROMPTS, baseline, steered, strict=True))


STAGES = [stage_extract, stage_train_sae, stage_score, stage_steer]
