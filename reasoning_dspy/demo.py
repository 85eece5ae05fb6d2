"""The offline end-to-end demo: every stage of the pipeline on `tiny-random`, in about a minute.

Each stage is a small function taking the shared `DemoState`, so the demo reads as the pipeline.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

console = Console()


@dataclass
class DemoState:
    out: Path
    limit: int
    layer: int = 2
    loaded: Any = None
    prompts: list[str] = field(default_factory=list)
    cache: Any = None
    extras: dict[str, Any] = field(default_factory=dict)


def stage_extract(state: DemoState) -> None:
    from reasoning_dspy.activations import extract_activations
    from reasoning_dspy.models import load_model
    from reasoning_dspy.prompts import load_prompts

    state.loaded = load_model("tiny-random", dtype="float32")
    state.prompts = load_prompts("bundled", limit=state.limit)
    spec = state.loaded.spec
    console.print(f"model [bold]{spec.name}[/]: {spec.n_layers} layers, d_model {spec.d_model}, "
                  f"vocab {len(state.loaded.tokenizer)}")
    state.cache = extract_activations(state.loaded.model, state.loaded.tokenizer, state.prompts, state.layer,
                                      state.out / "activations", dtype="float32", shard_tokens=4096)
    m = state.cache.manifest
    console.print(f"activations: {m.n_tokens} tokens x {m.d_model} from {m.n_prompts} prompts at layer "
                  f"{m.layer}, {len(m.shards)} shards in {state.cache.path}")


# <demo-stages: later stages are defined above this line and listed in STAGES>
STAGES = [stage_extract]


def run_demo(out: str | os.PathLike = "runs/demo", *, limit: int = 128) -> DemoState:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    state = DemoState(out=Path(out), limit=limit)
    for stage in STAGES:
        name = stage.__name__.removeprefix("stage_")
        console.rule(f"[bold]{name}")
        start = time.perf_counter()
        stage(state)
        console.print(f"[dim]{name} took {time.perf_counter() - start:.1f}s[/]")
    return state
