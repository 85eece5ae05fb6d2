"""Answer word problems with a DSPy program on a `SteeredLM`, the way DSPy users run it.

The study, the reasoner's evaluation and the optimizers all need the same loop: call a program on
many problems from parallel threads (so the engine's micro-batcher fills its batches), with one
steering per call, and keep for each problem the generated text, the parsed answer, whether DSPy's
own `ChatAdapter` format was followed, correctness, and the engine's measured activation of the
reasoning features. This module is that loop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

#: What `program="chat"` appends to each question.
CHAT_SUFFIX = "Think step by step, then give the final answer."

PROGRAMS = ("cot", "predict", "chat")


def make_program(program: str | Any, instruction: str | None = None) -> Any:
    """`cot`/`predict`: `dspy.ChainOfThought`/`dspy.Predict` on `signatures.WordProblem` (with
    `instruction` as the signature's instructions when given); a DSPy module is used as it is;
    `chat` returns None (the question goes to the LM as one user message)."""
    import dspy

    from signatures import word_problem

    if not isinstance(program, str):
        return program
    if program not in PROGRAMS:
        raise ValueError(f"program must be one of {', '.join(PROGRAMS)} or a DSPy module, got {program!r}")
    if program == "chat":
        return None
    signature = word_problem(instruction)
    return dspy.ChainOfThought(signature) if program == "cot" else dspy.Predict(signature)


def solve(lm: Any, problems: Sequence[Any], *, program: str | Any = "cot", instruction: str | None = None,
          steering: Any = None, threads: int = 32, on_done: Callable[[int], None] | None = None) -> list[dict]:
    """One row per problem, in order: `id, question, expected, answer, reasoning, text, n_tokens,
    correct, parsed, features_mean, top_features`.

    `parsed` is True when DSPy's standard `ChatAdapter` parse of the completion succeeded (the
    `LenientChatAdapter` used here only steps in when it fails). `features_mean` is the engine's
    activation of the LM's `reasoning_features` over the generated tokens (None without an SAE),
    `top_features` the SAE features most active over them, `[feature, mean activation]`.
    A generation that fails raises after the others finish, naming the first failed problem.
    """
    import dspy
    from dspy.utils.parallelizer import ParallelExecutor

    from reasoning_dspy.program.adapter import LenientChatAdapter
    from reasoning_dspy.program.lm import collect_reports, engine_of

    module = make_program(program, instruction)
    metadata = {"steering": steering.model_dump(mode="json") if hasattr(steering, "model_dump") else steering}
    tokenizer = engine_of(lm).tokenizer

    def answer(problem: Any) -> dict:
        with collect_reports() as reports:
            if module is None:
                lm(f"{problem.question} {CHAT_SUFFIX}", metadata=metadata)
                prediction = None
            else:
                prediction = module(question=problem.question, config={"metadata": metadata})
        report = reports.reports()[-1]
        text = report.text or ""
        activation = report.activation
        n_tokens = activation.n_tokens if activation is not None else len(tokenizer(text).input_ids)
        predicted = getattr(prediction, "answer", None)
        return {
            "id": problem.id, "question": problem.question, "expected": problem.answer,
            "answer": None if predicted is None else str(predicted),
            "reasoning": getattr(prediction, "reasoning", None), "text": text, "n_tokens": n_tokens,
            "correct": is_correct(predicted, text, problem.answer),
            "parsed": prediction is not None and getattr(prediction, "salvaged", None) is None,
            "features_mean": None if activation is None else activation.features_mean,
            "top_features": [] if activation is None else [[int(f), float(v)] for f, v in activation.top_features],
        }

    with dspy.context(lm=lm, adapter=LenientChatAdapter()), quiet_truncation():
        executor = ParallelExecutor(num_threads=threads, disable_progress_bar=True, max_errors=len(problems),
                                    timeout=10**6, provide_traceback=True)
        results = executor.execute(answer, list(problems))
    failed = [p.id for p, r in zip(problems, results, strict=True) if r is None]
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(problems)} generations failed (first: {failed[0]}); "
                           "see the tracebacks above")
    if on_done is not None:
        on_done(len(results))
    return results


def is_correct(predicted: Any, text: str, expected: float) -> bool:
    """The answer field decides; when it holds no number, the whole trace's final answer does."""
    from reasoning_dspy.problems import answers_match, extract_answer

    value = extract_answer(str(predicted)) if predicted is not None else None
    if value is None:
        value = extract_answer(text)
    return value is not None and answers_match(value, expected)


class _DropTruncation(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "truncated" not in record.getMessage()


@contextmanager
def quiet_truncation() -> Iterator[None]:
    """Traces that run to max_tokens are expected in these runs (reports count them); DSPy's
    one-warning-per-call about it would bury the progress bar."""
    log = logging.getLogger("dspy.clients.lm")
    drop = _DropTruncation()
    log.addFilter(drop)
    try:
        yield
    finally:
        log.removeFilter(drop)
