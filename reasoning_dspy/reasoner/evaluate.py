"""How a model answers held-out word problems under each instruction style, through DSPy.

The reasoner's acceptance questions, measured the way a DSPy user would run the model: greedy
`dspy.ChainOfThought(signatures.WordProblem)` on held-out chain problems, per instruction style.
Accuracy overall and per family; the share of completions that DSPy's standard `ChatAdapter`
parses; the share of traces that reflect and reasoning words per 100 tokens; step accuracy (the
value each written step goes on with, against exact arithmetic on the operands it wrote), and how
often a check caught a wrong quick answer against how often it broke a right one; and, given an SAE
and features, their mean activation over the generated tokens.

    reasoning-dspy reasoner eval --model smollm2-reasoner --n 200
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from reasoning_dspy._io import RowCheckpoint
from reasoning_dspy.problems.steps import STEP_COUNTS, step_measures
from reasoning_dspy.reasoner.styles import STYLES

#: Problems answered between two saves of a checkpoint.
CHUNK = 64


def style_instruction(style: str, held_out: bool = False) -> str:
    """The phrasing a style is evaluated with: its first training phrasing, or its first held-out
    one (which the model never saw) with `held_out`."""
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; choose from {', '.join(STYLES)}")
    return (STYLES[style].held_out if held_out else STYLES[style].instructions)[0]


def evaluate_styles(model: Any, *, n: int = 200, split: str = "test", seed: int = 0, family: str = "chains",
                    styles: tuple[str, ...] = tuple(STYLES), held_out: bool = False, program: str = "cot",
                    max_tokens: int = 256, batch_size: int = 32, sae: Any = None, scores: Any = None,
                    features: list[int] | None = None, progress: bool = True,
                    checkpoint: str | Path | None = None) -> dict[str, Any]:
    """Answer the same `n` problems of `split` once per style; returns `{"summary", "rows"}`.

    `model` is a name `load_model` takes or a `LoadedModel`. With `sae` (and `scores` for f_max),
    `features` (default: the top 3 of `scores`) are measured on every generated token. With
    `checkpoint` (a JSONL file), rows are saved every `CHUNK` problems and a re-run with the same
    settings answers only the problems still missing.
    """
    from tqdm.auto import tqdm

    from reasoning_dspy.models import LoadedModel, load_model
    from reasoning_dspy.problems import make_problems
    from reasoning_dspy.program.evaluation import solve
    from reasoning_dspy.program.lm import SteeredLM, engine_of

    if split not in ("validation", "test"):
        raise ValueError(f"evaluate on held-out problems: split must be 'validation' or 'test', got {split!r} "
                         "(the reasoner's corpus is drawn from 'train')")
    for style in styles:
        style_instruction(style, held_out)
    problems = make_problems(n, split=split, seed=seed, families=[family])
    name = model.model_spec.name if isinstance(model, LoadedModel) else model
    # opened before the model loads, so a file of other settings fails fast
    saved = RowCheckpoint(checkpoint, {"model": name, "split": split, "seed": seed, "family": family,
                                       "held_out": held_out, "program": program, "max_tokens": max_tokens,
                                       "sae": sae is not None, "features": features})
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    kwargs: dict[str, Any] = {}
    if sae is not None:
        chosen = features if features is not None else ([int(i) for i in scores.top(3)] if scores is not None else None)
        if not chosen:
            raise ValueError("measuring activations needs features= or scores= (a FeatureScores) with the SAE")
        kwargs = {"sae": sae, "max_activation": scores, "capture": True, "reasoning_features": chosen}
    lm = SteeredLM(loaded, max_tokens=max_tokens, cache=False, max_batch_size=batch_size, **kwargs)
    key = lambda style, problem: f"{style}/{problem.id}"  # noqa: E731
    bar = tqdm(total=n * len(styles), desc=f"evaluate {loaded.model_spec.name}", unit="problem",
               disable=not progress, initial=sum(saved.get(key(s, p)) is not None for s in styles for p in problems))
    try:
        for style in styles:
            instruction = style_instruction(style, held_out)
            todo = [p for p in problems if saved.get(key(style, p)) is None]
            for start in range(0, len(todo), CHUNK):
                chunk = todo[start:start + CHUNK]
                answered = solve(lm, chunk, program=program, instruction=instruction, threads=batch_size,
                                 on_done=bar.update)
                saved.add({key(style, p): _row(row, p, style, instruction)
                           for row, p in zip(answered, chunk, strict=True)})
    finally:
        bar.close()
        engine_of(lm).close()
    rows = [saved.get(key(style, p)) for style in styles for p in problems]
    return {"model": loaded.model_spec.name, "split": split, "n": n, "seed": seed, "held_out": held_out,
            "program": program, "max_tokens": max_tokens, "summary": summarize(rows), "rows": rows}


def _row(row: dict, problem: Any, style: str, instruction: str) -> dict:
    trace = row["reasoning"] if row.get("reasoning") is not None else row["text"]
    return {**row, "style": style, "instruction": instruction, "family": problem.family,
            "difficulty": problem.difficulty, **step_measures(trace)}


def summarize(rows: list[dict]) -> dict[str, dict[str, Any]]:
    """Per style: accuracy (overall and per family), parse rate, reflection rate, reasoning words per
    100 generated tokens, step accuracy and checks, mean length, mean feature activation, and the
    share of degenerate loops."""
    from reasoning_dspy.features.measures import count_words, is_degenerate, reflects

    by_style: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_style[r["style"]].append(r)
    out = {}
    for style, group in by_style.items():
        traces = [r["reasoning"] if r.get("reasoning") is not None else r["text"] for r in group]
        tokens = sum(r["n_tokens"] for r in group)
        families: dict[str, list[bool]] = defaultdict(list)
        for r in group:
            families[r["family"]].append(r["correct"])
        activation = [r["features_mean"] for r in group if r.get("features_mean") is not None]
        out[style] = {
            "instruction": group[0]["instruction"], "n": len(group),
            "accuracy": float(np.mean([r["correct"] for r in group])),
            "accuracy_by_family": {f: float(np.mean(v)) for f, v in sorted(families.items())},
            "parse_rate": float(np.mean([r["parsed"] for r in group])),
            "reflect_rate": float(np.mean([reflects(t) for t in traces])),
            "words_per_100_tokens": 100.0 * sum(count_words(t) for t in traces) / max(tokens, 1),
            "mean_tokens": tokens / len(group),
            "loop_rate": float(np.mean([is_degenerate(r["text"]) for r in group])),
            "activation": float(np.mean(activation)) if activation else None,
            **_pooled_steps(group),
        }
    return out


def _pooled_steps(group: list[dict]) -> dict[str, Any]:
    total = {k: sum(r.get(k, 0) for r in group) for k in STEP_COUNTS}
    steps = max(total["steps"], 1)
    return {"step_accuracy": total["steps_right"] / steps, "quick_accuracy": total["quick_right"] / steps,
            "checked_rate": total["checked"] / steps,
            "check_accuracy": total["checked_right"] / total["checked"] if total["checked"] else None,
            "checks_fixed": total["fixed"], "checks_broke": total["broke"], "steps_written": total["steps"]}
