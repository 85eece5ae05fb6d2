"""Instruction candidates: a built-in library of templates, the user's own, and an LM's proposals.

An optimizer can only pick among instructions someone wrote down. The library holds the common
kinds of task instruction (terse, neutral, careful, explanatory), so a search over it can find out
which kind makes a model reason; users add their own; and when a proposer LM is configured it
writes more, in the spirit of DSPy's instruction proposers, grounded in the program's signature
and a few training examples.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import dspy

#: Built-in instruction templates, by the kind of answer they ask for. The kinds are labels for
#: reports; the optimizer never reads them.
LIBRARY: dict[str, tuple[str, ...]] = {
    "terse": (
        "Answer directly.",
        "Be brief.",
        "Give just the answer, no checking.",
    ),
    "neutral": (
        "Solve the word problem.",
        "Answer the question.",
        "Find the answer.",
    ),
    "careful": (
        "Check every step before you answer.",
        "Work step by step and check your work.",
        "Double-check everything, then answer.",
        "Reason slowly and verify each result.",
    ),
    "explanatory": (
        "Think step by step.",
        "Explain your reasoning, then give the answer.",
    ),
}


def library_kind(instruction: str) -> str | None:
    """The library kind an instruction belongs to (None for the user's or a proposer's)."""
    return next((kind for kind, texts in LIBRARY.items() if instruction in texts), None)


class ProposeInstructions(dspy.Signature):
    """You write task instructions for a language model. Read the task and the example inputs, then
    propose new instructions, different from the existing ones, that make the model reason
    carefully and answer correctly. Each instruction is one or two plain sentences."""

    task: str = dspy.InputField(desc="the program's input and output fields and its current instruction")
    examples: str = dspy.InputField(desc="a few example inputs")
    existing: list[str] = dspy.InputField(desc="instructions already in the pool")
    new_instructions: list[str] = dspy.OutputField(desc="new instructions")


class InstructionPool:
    """The instructions an optimizer chooses from, in a fixed order.

    Args:
        extra: the user's own instructions, added after the library.
        library: include the built-in `LIBRARY`.
        proposer: any `dspy.LM` (an OpenAI-compatible model, or the local one) asked for
            `n_proposals` more; its answers are deduplicated and added last.
        n_proposals: how many proposals to ask for.
        prompt_filter: a `reasoning_dspy.rag.PromptFilter`: invalid, near-duplicate and off-topic
            candidates are dropped from the pool (the program's own instruction is always kept), and
            `skipped` lists the filter's `Decision` for each, with its reason.
    """

    def __init__(self, extra: Sequence[str] = (), *, library: bool = True, proposer: Any = None,
                 n_proposals: int = 4, prompt_filter: Any = None):
        bad = [x for x in extra if not isinstance(x, str) or not x.strip()]
        if bad:
            raise ValueError(f"instructions must be non-empty strings, got {bad[:3]!r}")
        if n_proposals < 0:
            raise ValueError(f"n_proposals must be >= 0, got {n_proposals}")
        self.extra = [x.strip() for x in extra]
        self.library = library
        self.proposer = proposer
        self.n_proposals = n_proposals
        self.prompt_filter = prompt_filter
        self.skipped: list[Any] = []

    def with_filter(self, prompt_filter: Any) -> InstructionPool:
        """A copy of this pool that filters its candidates with `prompt_filter`."""
        return InstructionPool(self.extra, library=self.library, proposer=self.proposer,
                               n_proposals=self.n_proposals, prompt_filter=prompt_filter)

    def candidates(self, program: Any = None, examples: Sequence[Any] = ()) -> list[str]:
        """The program's current instruction first, then the library, the user's, and proposals;
        each once, in that order (so a seeded search over indices is reproducible). With a
        `prompt_filter`, only the candidates it keeps; the others are in `skipped`."""
        out = [current_instruction(program)] if program is not None else []
        if self.library:
            out += [x for texts in LIBRARY.values() for x in texts]
        out += self.extra
        if self.proposer is not None and self.n_proposals:
            out += self.propose(program, examples, existing=_unique(out))
        out = _unique(x for x in out if x)
        if self.prompt_filter is None:
            return out
        decisions = self.prompt_filter.check(out, always_keep=out[:1] if program is not None else ())
        self.skipped = [d for d in decisions if not d.kept]
        return [d.prompt for d in decisions if d.kept]

    def propose(self, program: Any, examples: Sequence[Any], *, existing: Sequence[str]) -> list[str]:
        """Ask the proposer LM for new instructions grounded in `program`'s signature and `examples`."""
        task = describe(program) if program is not None else "(no program)"
        shown = "\n".join(f"- {dict(ex.inputs()) if hasattr(ex, 'inputs') else ex}" for ex in list(examples)[:3])
        with dspy.context(lm=self.proposer):
            result = dspy.Predict(ProposeInstructions)(task=task, examples=shown or "(none)", existing=list(existing))
        proposals = [str(x).strip() for x in (result.new_instructions or []) if str(x).strip()]
        return [x for x in _unique(proposals) if x not in existing][: self.n_proposals]


def predictors_of(program: Any) -> list[Any]:
    """The program's `dspy.Predict` modules (what an instruction applies to)."""
    predictors = [p for _, p in program.named_predictors()]
    if not predictors:
        raise ValueError(f"{type(program).__name__} has no dspy.Predict inside: nothing to give an instruction to")
    return predictors


def current_instruction(program: Any) -> str:
    """The first predictor's instruction (DSPy's default for its signature when none was set)."""
    return predictors_of(program)[0].signature.instructions


def describe(program: Any) -> str:
    """The program's signature as a proposer reads it."""
    signature = predictors_of(program)[0].signature
    return (f"inputs: {', '.join(signature.input_fields)}; outputs: {', '.join(signature.output_fields)}; "
            f"current instruction: {signature.instructions}")


def with_instruction(program: Any, instruction: str) -> Any:
    """A deep copy of `program` with `instruction` on every predictor."""
    copy = program.deepcopy()
    for predictor in predictors_of(copy):
        predictor.signature = predictor.signature.with_instructions(instruction)
    return copy


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))
