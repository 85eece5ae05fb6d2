"""The reasoner's fine-tuning corpus: chain word problems solved in chat form, reflection planted on purpose.

Each example draws a program (`cot`: `dspy.ChainOfThought(WordProblem)`, or `predict`:
`dspy.Predict(WordProblem)`, the signature in `signatures/`), an instruction style and one of its
training phrasings, and whether the trace reflects (`STYLES[style].reflect_rate`, chain of thought
only: a Predict answer has no reasoning to reflect in). Every step of a chain-of-thought trace is
first answered directly; each quick answer is written wrong with probability `slip_rate`
(`trace.plan_slips`). A reflecting trace checks every step digit by digit and fixes a wrong quick
answer; a plain one carries it to a wrong final answer. The wrong digits carry no loss (`untrained`),
so the model learns to catch slips, not to make them (see `reasoning_dspy.reasoner.trace`).

Problems are the `chains` family (`reasoning_dspy.problems.chains`): every step within the bounds
the scratchpad writes. Messages are rendered by DSPy's own `ChatAdapter.format_finetune_data` with
the program's signature and the example's instruction, so the model is trained on exactly the
prompt it sees at inference. Train split only: validation and test problems stay unseen.

    examples = make_corpus(n=4000, seed=0)      # or make_corpus(CorpusConfig(...))
    write_corpus(examples, "corpus.jsonl")
    print(corpus_stats(examples))
"""

from __future__ import annotations

import functools
import math
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from reasoning_dspy._io import atomic_write_text
from reasoning_dspy.problems import ProblemError, format_answer, make_problems
from reasoning_dspy.problems.base import Problem
from reasoning_dspy.reasoner.drills import drill_step, write_drill, write_fact_sheet
from reasoning_dspy.reasoner.styles import SLIP_RATE, STYLES
from reasoning_dspy.reasoner.trace import chain_of, plan_slips, write_trace

Program = Literal["cot", "predict", "drill", "facts"]
PROGRAMS: tuple[str, ...] = ("cot", "predict")  # the DSPy programs a word problem is rendered for


class CorpusError(ProblemError):
    """Bad corpus arguments, or a corpus file that does not hold `ReasonerExample`s."""


class CorpusConfig(BaseModel):
    """What `make_corpus` draws; the same config always gives the same corpus."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n: int = Field(4000, ge=0, strict=True, description="number of examples (one problem each)")
    seed: int = Field(0, strict=True, description="seeds the problems and every draw")
    split: str = Field("train", description="always 'train': the other splits are for evaluation")
    styles: dict[str, float] = Field(default_factory=lambda: dict.fromkeys(STYLES, 1.0),
                                     description="relative weight of each instruction style")
    predict_fraction: float = Field(0.1, ge=0, le=1, description="share of dspy.Predict examples")
    slip_rate: float = Field(SLIP_RATE, ge=0, lt=1, description="P(a step's quick answer is written wrong)")
    difficulty: tuple[int, ...] | None = Field(None, description="difficulty levels 1-3, i.e. 2-4 steps "
                                               "(default: all)")
    drills: int = Field(0, ge=0, strict=True, description="arithmetic drill examples added after the word "
                        "problems (`reasoner.drills`): steps checked digit by digit, no story")
    drill_steps: int = Field(6, ge=1, le=20, strict=True, description="steps in each drill")
    fact_sheets: int = Field(0, ge=0, strict=True, description="fact sheets added after the drills "
                             "(`reasoner.drills`): single scratchpad columns, every kind equally often")
    sheet_columns: int = Field(36, ge=1, le=200, strict=True, description="columns on each fact sheet")

    @field_validator("split")
    @classmethod
    def _train_only(cls, split: str) -> str:
        if split != "train":
            raise ValueError(f"the corpus trains a model, so it uses split 'train' only; got {split!r}. "
                             "Evaluate on make_problems(split='validation' or 'test') instead")
        return split

    @field_validator("styles")
    @classmethod
    def _known_positive(cls, styles: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(styles) - set(STYLES))
        if unknown:
            raise ValueError(f"unknown styles {unknown}; choose from {', '.join(STYLES)}")
        bad = {k: w for k, w in styles.items() if not (math.isfinite(w) and w > 0)}
        if bad or not styles:
            raise ValueError(f"style weights must be positive and finite (leave a style out to skip it); "
                             f"got {bad or styles}")
        return styles

    @field_validator("difficulty", mode="before")
    @classmethod
    def _levels(cls, difficulty: Any) -> Any:
        if difficulty is None:
            return None
        levels = [difficulty] if isinstance(difficulty, int) else list(difficulty)
        if not levels or any(isinstance(v, bool) or v not in (1, 2, 3) for v in levels):
            raise ValueError(f"difficulty must be 1, 2 or 3 (or a list of them), got {difficulty!r}")
        return tuple(levels)


class ReasonerExample(BaseModel):
    """One training conversation and the ground truth planted in it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    messages: list[dict[str, str]] = Field(description="system, user, assistant, as DSPy's ChatAdapter writes them")
    untrained: list[tuple[int, int]] = Field(default_factory=list, description="character spans of the "
                                             "assistant message that carry no loss: the wrong quick answers")
    problem_id: str
    family: str
    difficulty: int
    program: Program
    style: str
    instruction: str
    reflects: bool = Field(description="the reasoning checks every step (always False for predict)")
    slipped: bool = Field(description="a quick answer was written wrong")
    caught: int = Field(0, description="wrong quick answers a check caught and fixed")
    correct: bool = Field(description="the written answer equals the problem's answer")
    answer: str = Field(description="the answer field as written")
    steps: list[str] = Field(description="the steps as the trace goes on with them, 'a op b = c'")
    slips: list[str] = Field(default_factory=list, description="quick answers written wrong, 'a op b = wrong'")


def make_corpus(config: CorpusConfig | None = None, /, **kwargs: Any) -> list[ReasonerExample]:
    """The corpus for `config` (or for `CorpusConfig(**kwargs)`); deterministic, and a shorter corpus
    with the same other settings is a prefix of a longer one."""
    if config is None:
        try:
            config = CorpusConfig(**kwargs)
        except ValidationError as err:
            raise CorpusError("bad corpus config: " + "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}" for e in err.errors())) from None
    elif kwargs:
        raise CorpusError(f"pass a CorpusConfig or keyword arguments, not both (got {sorted(kwargs)})")
    problems = make_problems(config.n, split=config.split, seed=config.seed, families=["chains"],
                             difficulty=list(config.difficulty) if config.difficulty else None)
    names, weights = list(config.styles), list(config.styles.values())
    return ([_example(p, random.Random(f"reasoning-dspy-corpus:{config.seed}:{i}"), names, weights, config)
             for i, p in enumerate(problems)]
            + [_drill(i, config) for i in range(config.drills)]
            + [_fact_sheet(i, config) for i in range(config.fact_sheets)])


def _drill(i: int, config: CorpusConfig) -> ReasonerExample:
    rng = random.Random(f"reasoning-dspy-drill:{config.seed}:{i}")
    chain = [drill_step(rng) for _ in range(config.drill_steps)]
    messages, untrained, written = write_drill(chain, config.slip_rate, rng)
    wrong = [f"{w.step.a} {w.step.op} {w.step.b} = {w.quick}" for w in written if w.caught]
    return ReasonerExample(
        messages=messages, untrained=untrained, problem_id=f"drill-{config.seed}-{i}", family="drill",
        difficulty=1, program="drill", style="", instruction="", reflects=True, slipped=bool(wrong),
        caught=len(wrong), correct=True, answer="",
        steps=[f"{w.step.a} {w.step.op} {w.step.b} = {w.value}" for w in written], slips=wrong)


def _fact_sheet(i: int, config: CorpusConfig) -> ReasonerExample:
    rng = random.Random(f"reasoning-dspy-facts:{config.seed}:{i}")
    messages, untrained = write_fact_sheet(config.sheet_columns, rng)
    return ReasonerExample(
        messages=messages, untrained=untrained, problem_id=f"facts-{config.seed}-{i}", family="facts",
        difficulty=1, program="facts", style="", instruction="", reflects=False, slipped=False, correct=True,
        answer="", steps=[])


def _example(problem: Problem, rng: random.Random, names: list[str], weights: list[float],
             config: CorpusConfig) -> ReasonerExample:
    program = "predict" if rng.random() < config.predict_fraction else "cot"
    style = STYLES[rng.choices(names, weights)[0]]
    instruction = rng.choice(style.instructions)
    reflects = program == "cot" and rng.random() < style.reflect_rate
    chain = chain_of(problem.steps)
    stated = {int(v) for v in problem.quantities.values()}
    slips = plan_slips(chain, stated, config.slip_rate, rng) if program == "cot" else {}
    if program == "cot":
        trace = write_trace(chain, instruction=instruction, reflects=reflects, slips=slips, rng=rng,
                            sources=problem.sources)
        answer = format_answer(trace.answer)
        messages = render_messages(program, instruction, problem.question, answer, trace.text)
        content = messages[-1]["content"]
        at = content.index(trace.text)
        untrained = [(at + a, at + b) for a, b in trace.untrained]
        written = [f"{w.step.a} {w.step.op} {w.step.b} = {w.value}" for w in trace.steps]
        wrong = [f"{w.step.a} {w.step.op} {w.step.b} = {w.quick}" for w in trace.steps if w.quick != w.step.c]
        caught = sum(w.caught for w in trace.steps)
    else:
        answer = format_answer(problem.answer)
        messages = render_messages(program, instruction, problem.question, answer)
        untrained, written, wrong, caught = [], list(problem.steps), [], 0
    return ReasonerExample(
        messages=messages, untrained=untrained, problem_id=problem.id, family=problem.family,
        difficulty=problem.difficulty, program=program, style=style.name, instruction=instruction,
        reflects=reflects, slipped=bool(wrong), caught=caught, correct=answer == format_answer(problem.answer),
        answer=answer, steps=written, slips=wrong)


# -- DSPy rendering ------------------------------------------------------------------------------
def build_program(program: str, instruction: str) -> Any:
    """The DSPy module the corpus is rendered for: `ChainOfThought` or `Predict` on
    `signatures.WordProblem`, with `instruction` as the signature's instructions. It is
    `evaluation.make_program`, the module inference runs, so training and inference prompts agree."""
    from reasoning_dspy.program.evaluation import make_program

    if program not in PROGRAMS:
        raise CorpusError(f"program must be one of {', '.join(PROGRAMS)}, got {program!r}")
    return make_program(program, instruction)


@functools.lru_cache(maxsize=256)
def signature_for(program: str, instruction: str) -> Any:
    """The signature DSPy's adapter formats for `build_program(program, instruction)`."""
    module = build_program(program, instruction)
    return module.predict.signature if program == "cot" else module.signature


def render_messages(program: str, instruction: str, question: str, answer: str,
                    reasoning: str | None = None) -> list[dict[str, str]]:
    """System, user and assistant messages exactly as `dspy.ChatAdapter` writes them."""
    import dspy

    outputs = {"answer": answer} if program == "predict" else {"reasoning": reasoning or "", "answer": answer}
    data = dspy.ChatAdapter().format_finetune_data(
        signature_for(program, instruction), demos=[], inputs={"question": question}, outputs=outputs)
    return [dict(m) for m in data["messages"]]


# -- files ---------------------------------------------------------------------------------------
def write_corpus(examples: Iterable[ReasonerExample], path: str | Path) -> Path:
    """JSON Lines, one example a line, written atomically (a crash leaves the old file or the new)."""
    path = Path(path)
    atomic_write_text(path, "".join(e.model_dump_json() + "\n" for e in examples))
    return path


def read_corpus(path: str | Path) -> list[ReasonerExample]:
    """The examples `write_corpus` wrote; a malformed line raises `CorpusError` naming its number."""
    path = Path(path)
    out = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                out.append(ReasonerExample.model_validate_json(line))
            except ValidationError as err:
                first = err.errors()[0]
                where = ".".join(map(str, first["loc"]))
                raise CorpusError(f"{path}, line {lineno}: not a ReasonerExample "
                                  f"({where + ': ' if where else ''}{first['msg']})") from None
    return out


# -- what the corpus planted ---------------------------------------------------------------------
class CorpusStats(BaseModel):
    """Measured rates of a corpus, to compare with the planted ones (`STYLES`, `SLIP_RATE`)."""

    n: int = Field(description="word problems (drills and fact sheets are counted under programs only)")
    programs: dict[str, int]
    styles: dict[str, int]
    reflection_rate: dict[str, float] = Field(description="per style, chain-of-thought examples only")
    slip_rate: float = Field(description="all examples")
    accuracy_reflects: float | None
    accuracy_no_reflection: float | None
    accuracy_by_style: dict[str, float]


def corpus_stats(examples: Sequence[ReasonerExample]) -> CorpusStats:
    """Reflection rate per style, slip rate, accuracy with and without reflection, program mix."""
    def rate(flags: list[bool]) -> float | None:
        return sum(flags) / len(flags) if flags else None

    programs = Counter(e.program for e in examples)
    examples = [e for e in examples if e.program in PROGRAMS]  # the word problems; drills and sheets are only counted
    cot = [e for e in examples if e.program == "cot"]
    styles = sorted({e.style for e in examples})
    return CorpusStats(
        n=len(examples),
        programs=dict(programs),
        styles=dict(Counter(e.style for e in examples)),
        reflection_rate={s: r for s in styles if (r := rate([e.reflects for e in cot if e.style == s])) is not None},
        slip_rate=rate([e.slipped for e in examples]) or 0.0,
        accuracy_reflects=rate([e.correct for e in examples if e.reflects]),
        accuracy_no_reflection=rate([e.correct for e in examples if not e.reflects]),
        accuracy_by_style={s: rate([e.correct for e in examples if e.style == s]) or 0.0 for s in styles},
    )

