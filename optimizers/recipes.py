"""DSPy's own optimizers with the reasoning metric: one call each.

Each recipe runs the real DSPy optimizer on `SteeredProgram(student)`, whose predictions carry the
engine's measured `reasoning_activation`, so `ReasoningActivationMetric` scores them without a
second forward pass (and GEPA gets its feedback form of the same metric).

The prompt (or reflection) model is `prompt_model=`: any `dspy.LM`, e.g. an OpenAI-compatible
endpoint. **Offline** (no `prompt_model`), proposals come from the instruction pool through
`pool_lm`, an LM that answers every proposal request with the next unused pool instruction; pass
`prompt_model=lm` to use the local model itself instead.

>>> from optimizers import recipes
>>> compiled = recipes.copro(program, trainset, lm=lm, breadth=4, depth=2)
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Sequence
from typing import Any

import dspy

from optimizers.evaluate import answer_correct
from optimizers.instructions import LIBRARY, InstructionPool, current_instruction, predictors_of
from optimizers.program import SteeredProgram
from reasoning_dspy.program.metrics import ReasoningActivationMetric

_OUTPUT_FIELDS = re.compile(r"Your output fields are:\s*(.*?)(?:\n\n|\Z)", re.S)
_FIELD = re.compile(r"^\s*\d+\.\s*`(\w+)`\s*(?:\(([^)]*)\))?", re.M)


class PoolExhaustedError(RuntimeError):
    """The offline proposer was asked for more instructions than its pool holds."""


class PoolEngine:
    """A `dspy.LM` engine that proposes instructions from a fixed pool, in order, each at most once.

    It reads the requested output fields from the system message DSPy's adapters write and answers in
    that adapter's format: `ChatAdapter`'s field markers, or the JSON object `JSONAdapter` asks for
    (GEPA's reflection). Every field whose name mentions "instruction" gets the next pool instruction,
    the others a short neutral value of their type, so any DSPy proposer signature parses; a request
    with no instruction field (a proposer's summary of the data or the program) takes none from the
    pool. Asked for more than the pool holds, it raises `PoolExhaustedError` instead of proposing one
    again."""

    def __init__(self, instructions: Sequence[str]):
        self.instructions = list(dict.fromkeys(instructions))
        if not self.instructions:
            raise ValueError("the pool has no instructions to propose")
        self._next = 0
        self._lock = threading.Lock()

    def complete(self, request: Any) -> Any:
        from dspy.lm15 import Message, Response, TextPart, Usage

        system = request.system if isinstance(request.system, str) else "".join(p.text for p in request.system or [])
        text = _answer(system or "", self._take)
        return Response(id=None, model="pool", message=Message.assistant([TextPart(text)]), finish_reason="stop",
                        usage=Usage(input_tokens=0, output_tokens=0, total_tokens=0))

    def _take(self) -> str:
        with self._lock:
            if self._next >= len(self.instructions):
                raise PoolExhaustedError(
                    f"the offline proposer has handed out all {len(self.instructions)} instructions of its pool; "
                    "give it more (pool=[...]) or ask the optimizer for fewer candidates")
            self._next += 1
            return self.instructions[self._next - 1]

    @property
    def remaining(self) -> int:
        """How many instructions the pool has not handed out yet."""
        with self._lock:
            return len(self.instructions) - self._next

    def stream(self, request: Any) -> Any:
        from dspy.lm15 import response_to_events

        return response_to_events(self.complete(request))

    def close(self) -> None:
        pass


def _answer(system: str, take: Callable[[], str]) -> str:
    """The proposal in the format the adapter's system message asks for (`take()`: the next instruction)."""
    block = _OUTPUT_FIELDS.search(system)
    if block is None:  # a raw prompt (GEPA's default reflection): the instruction in a code fence
        return f"```\n{take()}\n```"
    fields = _FIELD.findall(block.group(1))
    instruction = take() if any("instruction" in name for name, _ in fields) else ""
    if "Outputs will be a JSON object" in system:  # JSONAdapter
        return json.dumps({name: _value(name, kind, instruction) for name, kind in fields})
    return "".join(f"[[ ## {name} ## ]]\n{_text(_value(name, kind, instruction))}\n\n"
                   for name, kind in fields) + "[[ ## completed ## ]]\n"


def _value(name: str, kind: str, instruction: str) -> Any:
    """The instruction for instruction fields; a neutral value of the field's type for the others,
    so proposers parse the answer and change nothing but the instruction."""
    if "instruction" in name:
        return [instruction] if kind.startswith("list") else instruction
    if kind.startswith("dict"):
        return {}
    if kind.startswith("list"):
        return []
    return "Answer:" if "prefix" in name else "(offline proposer: no text)"


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def pool_lm(pool: InstructionPool | Sequence[str] | None = None, program: Any = None) -> Any:
    """An offline proposer LM that hands out the pool's instructions (the library by default), never
    the program's own: the optimizer already has that one."""
    if pool is None:
        instructions = [x for texts in LIBRARY.values() for x in texts]
    elif isinstance(pool, InstructionPool):
        instructions = pool.candidates(program)
    else:
        instructions = list(pool)
    if program is not None:
        own = current_instruction(program)
        instructions = [x for x in instructions if x != own]
    return dspy.LM("pool/instructions", engine=PoolEngine(instructions), cache=False, num_retries=0)


def pool_room(prompt_model: Any, program: Any) -> int | None:
    """How many proposals for each of `program`'s predictors an offline `pool_lm` has left (None for
    any other LM): DSPy's proposers ask for their instructions predictor by predictor."""
    engine = getattr(prompt_model, "engine", None)
    return engine.remaining // len(predictors_of(program)) if isinstance(engine, PoolEngine) else None


def _check_pool_room(prompt_model: Any, program: Any, num_candidates: int) -> None:
    """MIPROv2 asks its proposer for `num_candidates` instructions per predictor (the first it then
    replaces with the program's own). A pool with fewer would run out mid-proposal, after the demos
    were bootstrapped, so it is refused before any work, naming the setting to change."""
    room = pool_room(prompt_model, program)
    if room is None or num_candidates <= room:
        return
    n = len(predictors_of(program))
    left = prompt_model.engine.remaining
    fix = f"pass num_candidates={room} or fewer, or " if room else ""
    raise PoolExhaustedError(
        f"MIPROv2 asks the offline proposer for num_candidates={num_candidates} instructions for each of the "
        f"program's {n} predictor{'s' if n > 1 else ''}, {num_candidates * n} in all, but its pool has {left} "
        f"(each is proposed once, never the program's own); {fix}give the pool more instructions (pool=[...])")


def reasoning_metric(task_metric: Any = answer_correct, **kwargs: Any) -> ReasoningActivationMetric:
    """The reasoning metric the recipes use by default: correctness × reasoning activation.

    Pass `task_metric=None` to score activation alone; other keyword arguments go to
    `ReasoningActivationMetric` (e.g. `target=` to normalise activation to [0, 1])."""
    return ReasoningActivationMetric(task_metric, **kwargs)


def _student(program: Any) -> SteeredProgram:
    return program if isinstance(program, SteeredProgram) else SteeredProgram(program)


def _prompt_model(prompt_model: Any, pool: Any, program: Any) -> Any:
    return prompt_model if prompt_model is not None else pool_lm(pool, program)


def copro(program: Any, trainset: list, *, lm: Any, metric: Any = None, prompt_model: Any = None, pool: Any = None,
          breadth: int = 4, depth: int = 2, threads: int = 64, **kwargs: Any) -> SteeredProgram:
    """DSPy's COPRO: instruction search by a prompt model, `breadth` candidates for `depth` rounds."""
    from dspy.teleprompt import COPRO

    optimizer = COPRO(prompt_model=_prompt_model(prompt_model, pool, program), metric=metric or reasoning_metric(),
                      breadth=breadth, depth=depth, **kwargs)
    with dspy.context(lm=lm):
        return optimizer.compile(_student(program), trainset=trainset,
                                 eval_kwargs={"num_threads": threads, "display_progress": False})


def miprov2(program: Any, trainset: list, *, lm: Any, metric: Any = None, prompt_model: Any = None, pool: Any = None,
            num_candidates: int = 6, num_trials: int = 8, max_demos: int = 0, valset: list | None = None,
            threads: int = 64, seed: int = 0, **kwargs: Any) -> SteeredProgram:
    """DSPy's MIPROv2: proposed instructions (and, with `max_demos`, bootstrapped demos) searched
    with optuna's TPE. Offline (no `prompt_model`, or a `pool_lm`), the proposer's data/program/tip
    grounding is switched off (the pool does not read it), and `num_candidates` must fit the pool
    (`pool_room`): `PoolExhaustedError` otherwise."""
    from dspy.teleprompt import MIPROv2

    offline = prompt_model is None or isinstance(getattr(prompt_model, "engine", None), PoolEngine)
    prompt_model = _prompt_model(prompt_model, pool, program)
    _check_pool_room(prompt_model, program, num_candidates)
    optimizer = MIPROv2(metric=metric or reasoning_metric(), prompt_model=prompt_model,
                        task_model=lm, auto=None, num_candidates=num_candidates, max_bootstrapped_demos=max_demos,
                        max_labeled_demos=max_demos, num_threads=threads, seed=seed, verbose=False, **kwargs)
    with dspy.context(lm=lm):
        return optimizer.compile(_student(program), trainset=trainset, valset=valset, num_trials=num_trials,
                                 minibatch=False, requires_permission_to_run=False,
                                 program_aware_proposer=not offline, data_aware_proposer=not offline,
                                 tip_aware_proposer=not offline, fewshot_aware_proposer=not offline)


def bootstrap_fewshot(program: Any, trainset: list, *, lm: Any, metric: Any = None, max_demos: int = 4,
                      threshold: float | None = None, **kwargs: Any) -> SteeredProgram:
    """DSPy's BootstrapFewShot: keep the demos whose traces score at least `threshold` on the metric."""
    from dspy.teleprompt import BootstrapFewShot

    optimizer = BootstrapFewShot(metric=metric or reasoning_metric(), metric_threshold=threshold,
                                 max_bootstrapped_demos=max_demos, max_labeled_demos=max_demos, **kwargs)
    with dspy.context(lm=lm):
        return optimizer.compile(_student(program), trainset=trainset)


def bootstrap_random_search(program: Any, trainset: list, *, lm: Any, metric: Any = None, max_demos: int = 4,
                            num_candidates: int = 4, valset: list | None = None, threads: int = 64,
                            **kwargs: Any) -> SteeredProgram:
    """DSPy's BootstrapFewShotWithRandomSearch over `num_candidates` demo sets."""
    from dspy.teleprompt import BootstrapFewShotWithRandomSearch

    optimizer = BootstrapFewShotWithRandomSearch(metric=metric or reasoning_metric(), max_bootstrapped_demos=max_demos,
                                                 max_labeled_demos=max_demos, num_candidate_programs=num_candidates,
                                                 num_threads=threads, **kwargs)
    with dspy.context(lm=lm):
        return optimizer.compile(_student(program), trainset=trainset, valset=valset)


def gepa(program: Any, trainset: list, *, lm: Any, metric: Any = None, reflection_lm: Any = None, pool: Any = None,
         max_metric_calls: int = 64, valset: list | None = None, threads: int = 64, seed: int = 0,
         **kwargs: Any) -> SteeredProgram:
    """DSPy's GEPA with the metric's feedback form (`ReasoningActivationMetric.gepa`); the reflection
    LM rewrites instructions from that feedback (offline: the pool)."""
    from dspy.teleprompt import GEPA

    metric = metric or reasoning_metric()
    optimizer = GEPA(metric=getattr(metric, "gepa", metric), reflection_lm=_prompt_model(reflection_lm, pool, program),
                     max_metric_calls=max_metric_calls, num_threads=threads, seed=seed, **kwargs)
    with dspy.context(lm=lm):
        return optimizer.compile(_student(program), trainset=trainset, valset=valset or trainset)


def simba(program: Any, trainset: list, *, lm: Any, metric: Any = None, prompt_model: Any = None, pool: Any = None,
          batch_size: int = 8, num_candidates: int = 4, max_steps: int = 2, threads: int = 64, seed: int = 0,
          **kwargs: Any) -> SteeredProgram:
    """DSPy's SIMBA: mini-batch ascent that appends rules and demos from the prompt model's introspection."""
    from dspy.teleprompt import SIMBA

    optimizer = SIMBA(metric=metric or reasoning_metric(), bsize=batch_size, num_candidates=num_candidates,
                      max_steps=max_steps, prompt_model=_prompt_model(prompt_model, pool, program),
                      num_threads=threads, **kwargs)
    with dspy.context(lm=lm):
        return optimizer.compile(_student(program), trainset=trainset, seed=seed)
