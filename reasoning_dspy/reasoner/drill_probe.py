"""How often a fine-tuned reasoner's digit-level check reaches the exact value, one step a prompt.

A word-problem evaluation mixes two kinds of error: choosing the wrong step (a plan error) and
computing a step wrong. This probe isolates the second. Each prompt is a drill of one step, asked as
the training drills ask (`drills.ASKS`), answered greedily; the answer's first line is read back
(`problems.steps.read_steps`) for the step it restates, its quick answer and the value its check reaches.
Steps are drawn as the drills draw them (`drills.drill_step`, every operator about equally often)
from their own seed, and any step the training corpus wrote is skipped, so every probed step is
held out.

    >>> from reasoning_dspy.models import load_model
    >>> steps = held_out_steps(96, exclude=corpus_steps("runs/reasoner-smollm2/corpus.jsonl"))
    >>> probe_drills(load_model("smollm2-reasoner"), steps)["total"]   # {'n': 96, 'read': 94, ...}
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from reasoning_dspy.problems.steps import SYMBOL, Step, read_steps
from reasoning_dspy.reasoner.drills import ASKS, drill_step

#: What each probed step reports: restated right, quick answer right, check's value right.
MEASURES = ("read", "quick", "checked")


def corpus_steps(path: str | Path) -> set[Step]:
    """Every step a training corpus (`reasoner train`'s OUT/corpus.jsonl) writes in an answer."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no corpus at {str(path)!r}; pass the corpus.jsonl that `reasoner train` wrote")
    steps = set()
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        for message in json.loads(line)["messages"]:
            if message["role"] == "assistant":
                steps |= {written.step for written in read_steps(message["content"])}
    return steps


def held_out_steps(n: int, seed: int = 0, exclude: Iterable[Step] = ()) -> list[Step]:
    """`n` distinct drill steps from the probe's own seed, none of them in `exclude`."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    rng, skip, out, repeats = random.Random(f"drill-probe:{seed}"), set(exclude), [], 0
    while repeats < 10_000:  # that many draws in a row found nothing new: the steps left are too few
        step = drill_step(rng)
        repeats = repeats + 1 if step in skip else 0
        if step not in skip:
            skip.add(step)
            out.append(step)
            if len(out) == n:
                return out
    raise ValueError(f"only {len(out)} drill steps are left once the {len(set(exclude))} excluded ones are "
                     f"skipped; ask for fewer than {n}")


def probe_drills(loaded: Any, steps: list[Step], seed: int = 0, batch_size: int = 24) -> dict[str, Any]:
    """Counts per operator (`+ - * /`) and in total of `steps` (from `held_out_steps`) the answer
    restated (`read`), whose quick answer was right (`quick`) and whose check reached the exact value
    (`checked`), with each missed check's first line under `misses`. `seed` picks how each is asked."""
    from reasoning_dspy.engine.generate import GenRow, generate_rows
    from reasoning_dspy.engine.requests import render_chat

    tok = loaded.tokenizer
    asks = random.Random(f"drill-probe-asks:{seed}")
    prompts = [render_chat(tok, [{"role": "user", "content": asks.choice(ASKS) + "\n" + s.expr()}], None)
               for s in steps]
    counts = {op: dict.fromkeys(("n", *MEASURES), 0) for op in "+-*/"}
    misses = []
    for i in range(0, len(steps), batch_size):
        rows = [GenRow(p, max_new_tokens=120) for p in prompts[i:i + batch_size]]
        for step, res in zip(steps[i:i + batch_size], generate_rows(loaded.model, tok, rows), strict=True):
            written = read_steps(res.text)
            read = bool(written) and written[0].step == step
            checked = read and written[0].checked == step.c
            c = counts[step.op]
            c["n"] += 1
            c["read"] += read
            c["quick"] += read and written[0].quick == step.c
            c["checked"] += checked
            if not checked:
                misses.append({"step": step.expr(), "text": res.text.split("\n", 1)[0]})
    total = {key: sum(c[key] for c in counts.values()) for key in ("n", *MEASURES)}
    return {"by_op": {SYMBOL[op]: c for op, c in counts.items()}, "total": total, "misses": misses}
