"""The offline demo behind `make demo`.

On a model that ships an SAE (`smollm2-reasoner`, the default) it shows the product at work: real
reasoning traces, the features that fire on their reflection words, and steering them
(`demo.reasoner`). On any other model (`tiny-random` for a fast smoke run, TinyLlama with the hub) it
runs every stage from scratch: extract, train an SAE, score, steer (`demo.pipeline`).

    run_demo("runs/demo")                              # smollm2-reasoner, a few minutes on 2 cores
    run_demo("runs/demo-tiny", model="tiny-random")    # about a minute
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from reasoning_dspy.demo.pipeline import STAGES as PIPELINE_STAGES
from reasoning_dspy.demo.pipeline import STEER_PROMPTS, DemoState, console
from reasoning_dspy.demo.reasoner import STAGES as REASONER_STAGES
from reasoning_dspy.demo.reasoner import ReasonerDemoState

__all__ = ["DEFAULT_MODEL", "STEER_PROMPTS", "DemoState", "ReasonerDemoState", "run_demo"]

#: What `make demo` runs on.
DEFAULT_MODEL = "smollm2-reasoner"

#: Default size of each demo: texts for the pipeline, held-out problems for a shipped model.
DEFAULT_LIMITS = {"pipeline": 128, "reasoner": 16}


def run_demo(out: str | os.PathLike = "runs/demo", *, limit: int | None = None,
             model: str = DEFAULT_MODEL) -> DemoState | ReasonerDemoState:
    """Run the demo's stages in order, printing each with its time. `limit`: texts for the pipeline
    (half prompts, half reasoning traces), held-out problems on a model with a shipped SAE."""
    from reasoning_dspy.sae.io import SHIPPED_SAES

    kind = "reasoner" if model in SHIPPED_SAES else "pipeline"
    limit = DEFAULT_LIMITS[kind] if limit is None else limit
    least = 1 if kind == "reasoner" else 2
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < least:
        what = "held-out problems" if kind == "reasoner" else "half bundled prompts, half reasoning traces"
        raise ValueError(f"limit must be at least {least} ({what}), got {limit!r}")
    if Path(out).exists() and not Path(out).is_dir():
        raise ValueError(f"the demo output {str(out)!r} is an existing file; pass a folder")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    state: Any = (ReasonerDemoState(out=Path(out), limit=limit, model=model) if kind == "reasoner"
                  else DemoState(out=Path(out), limit=limit, model=model))
    timings = {}
    for stage in REASONER_STAGES if kind == "reasoner" else PIPELINE_STAGES:
        name = stage.__name__.removeprefix("stage_")
        console.rule(f"[bold]{name}")
        start = time.perf_counter()
        stage(state)
        timings[name] = round(time.perf_counter() - start, 1)
        console.print(f"[dim]{name} took {timings[name]:.1f}s[/]")
    _write_summary(state, timings)
    return state


def _write_summary(state: Any, timings: dict[str, float]) -> None:
    """`OUT/demo.json`: what ran and how long each stage took; for the reasoner, every trace."""
    from reasoning_dspy._io import atomic_write_text

    summary: dict[str, Any] = {"model": state.model, "limit": state.limit, "seconds": timings}
    if isinstance(state, ReasonerDemoState):
        from reasoning_dspy.features.kinds import feature_kind

        features = [{"feature": r.index, "rank": r.rank, "score": r.score, "kind": feature_kind(r),
                     "top_words": [w for w, _ in r.top_words], "contexts": [c.text for c in r.contexts]}
                    for r in state.reports]
        summary |= {"steering": state.steering.model_dump(mode="json"), "features": features,
                    "baseline": state.baseline, "steered": state.steered}
    atomic_write_text(state.out / "demo.json", json.dumps(summary, indent=1, default=str) + "\n")
    console.print(f"results in {state.out}/")
