"""Is reflection causal? Force the decision token both ways under one instruction and compare answers.

A chain-of-thought trace restates its instruction, and the next token decides whether it checks its
steps (`trace.REFLECTIVE_OPENERS`). Here each problem is answered twice from the same prompt, the
DSPy `ChatAdapter` prompt of `ChainOfThought(WordProblem)` with the restated instruction prefilled:
once with the decision token forced to the model's likeliest reflective opener, once to its
likeliest other token; the rest is greedy. The paired difference in accuracy is what reflection
does to the answer, with the instruction held fixed, and the step measures say why (how many wrong
quick answers a check fixed, how many right ones it broke).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from reasoning_dspy._io import RowCheckpoint
from reasoning_dspy.problems.steps import STEP_COUNTS, step_measures
from reasoning_dspy.reasoner.trace import REFLECTIVE_OPENERS


def decision_tokens(tokenizer: Any) -> set[int]:
    """Token ids that start a reflective opener (after the restated instruction's line break)."""
    return {tokenizer(opener, add_special_tokens=False)["input_ids"][0] for opener in REFLECTIVE_OPENERS}


def forced_decisions(loaded: Any, problems: list[Any], instruction: str, *, max_tokens: int = 320,
                     batch_size: int = 16, echo: str = "Task: {instruction}",
                     checkpoint: str | Path | None = None, progress: bool = False) -> list[dict[str, Any]]:
    """Per problem: `{"id", "expected", "reflect": {...}, "plain": {...}}`, each side with the parsed
    `answer`, `correct`, the full `reasoning` and the step measures of `problems.steps.step_measures`.
    With `checkpoint` (a JSONL file), each batch's rows are saved as it finishes and a re-run with
    the same settings answers only the problems still missing."""
    import dspy

    from reasoning_dspy.engine.generate import GenRow, generate_rows
    from reasoning_dspy.engine.requests import render_chat
    from reasoning_dspy.program.evaluation import is_correct, make_program

    tok, model = loaded.tokenizer, loaded.model
    signature = make_program("cot", instruction).predict.signature
    adapter = dspy.ChatAdapter()
    prefix = f"[[ ## reasoning ## ]]\n{echo.format(instruction=instruction)}\n"
    reflective = decision_tokens(tok)
    saved = RowCheckpoint(checkpoint, {"model": loaded.model_spec.name, "instruction": instruction,
                                       "max_tokens": max_tokens, "echo": echo})
    todo = [p for p in problems if saved.get(p.id) is None]
    for start in tqdm(range(0, len(todo), batch_size), desc="forced decisions", unit="batch", disable=not progress):
        chunk = todo[start:start + batch_size]
        prompts = [render_chat(tok, adapter.format(signature, demos=[], inputs={"question": p.question}), None)
                   + tok(prefix, add_special_tokens=False)["input_ids"] for p in chunk]
        choices = [_decide(model, ids, reflective) for ids in prompts]
        rows = [GenRow(ids + [choice[side]], max_new_tokens=max_tokens)
                for ids, choice in zip(prompts, choices, strict=True) for side in ("reflect", "plain")]
        results = generate_rows(model, tok, rows)
        done = {}
        for k, p in enumerate(chunk):
            record: dict[str, Any] = {"id": p.id, "expected": p.answer}
            for j, side in enumerate(("reflect", "plain")):
                text = prefix + tok.decode([choices[k][side]]) + results[2 * k + j].text
                try:
                    parsed = adapter.parse(signature, text)
                except Exception:  # noqa: BLE001 - an unparseable completion scores by its last number
                    parsed = {}
                reasoning = parsed.get("reasoning") or text
                record[side] = {"answer": parsed.get("answer"), "reasoning": reasoning,
                                "correct": is_correct(parsed.get("answer"), text, p.answer), **step_measures(reasoning)}
            done[p.id] = record
        saved.add(done)
    return [saved.get(p.id) for p in problems]


@torch.no_grad()
def _decide(model: Any, prompt_ids: list[int], reflective: set[int]) -> dict[str, int]:
    """The likeliest reflective and the likeliest non-reflective next token after `prompt_ids`."""
    logits = model(input_ids=torch.tensor([prompt_ids], device=model.device)).logits[0, -1].float()
    mask = torch.zeros_like(logits, dtype=torch.bool)
    mask[list(reflective)] = True
    return {"reflect": int(torch.where(mask, logits, -torch.inf).argmax()),
            "plain": int(torch.where(mask, -torch.inf, logits).argmax())}


def summarize_forced(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy and step measures of each branch, and the paired bootstrap 95 % interval of
    reflecting minus plain accuracy over the same problems."""
    import numpy as np

    from reasoning_dspy.reports.stats import bootstrap

    if not rows:
        raise ValueError("no forced-decision rows to summarize")
    out: dict[str, Any] = {}
    for side in ("reflect", "plain"):
        totals = {k: int(sum(r[side][k] for r in rows)) for k in STEP_COUNTS}
        out[side] = {"accuracy": float(np.mean([r[side]["correct"] for r in rows])),
                     "step_accuracy": totals["steps_right"] / max(totals["steps"], 1), **totals}
    diff = bootstrap([np.array([r["reflect"]["correct"] for r in rows], float),
                      np.array([r["plain"]["correct"] for r in rows], float)], lambda a, b: float(np.mean(a - b)))
    out["reflect_minus_plain"] = {"value": diff.value, "low": diff.low, "high": diff.high}
    out["n"] = len(rows)
    return out
