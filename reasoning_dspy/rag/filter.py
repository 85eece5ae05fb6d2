"""Filter candidate prompts by meaning before they cost a model call.

`PromptFilter.check(candidates)` gives each candidate a `Decision`, in this order:

1. **invalid**: the `PromptValidator` refuses it (empty, over the token limit, a missing field);
2. **near-duplicate**: it says what a prompt already evaluated says (cosine similarity of their
   embeddings >= `duplicate_similarity`): skipped, and that prompt's recorded score is reused; a
   candidate that repeats an earlier candidate of the same batch is skipped too;
3. **off-topic**: its similarity to the nearest prompt of the reference set (the task's own
   instructions) is below `off_topic_similarity`;
4. otherwise **keep**.

Evaluated prompts and their scores go in with `record`; `nearest(prompt, k)` retrieves the k most
similar of them with their scores, through any `VectorIndex` (in memory by default).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from reasoning_dspy.rag.embed import Embedder
from reasoning_dspy.rag.index import NumpyIndex, VectorIndex, prompt_id
from reasoning_dspy.rag.validate import InvalidPrompt, PromptValidator

DUPLICATE_SIMILARITY = 0.90
"""Cosine similarity (all-MiniLM-L6-v2) at and above which two prompts count as the same prompt.

Measured on this package's instruction library: rewordings that change nothing an LM would act on
score 0.92-0.99 against their original (a "!" for the ".", lower case, "each" for "every",
"step-by-step", "answering" for "you answer"), while real paraphrases with other words stay below
(0.85 for "Verify each step before answering." against "Check every step before you answer.", 0.81
for "Let's think step by step." against "Think step by step.") and the closest two distinct library
instructions score 0.62. 0.90 sits in the gap: only the wording variants are skipped, and a
paraphrase still gets its own trial, since wording can change what a model does."""

OFF_TOPIC_SIMILARITY = 0.30
"""Cosine similarity (all-MiniLM-L6-v2) to the nearest reference prompt below which a candidate is
off-topic.

MiniLM puts unrelated English sentences at about 0.0-0.3: against the library of task instructions,
"The cat sat on the mat." scores 0.06, "Describe the weather in Paris." 0.13, "Translate the text to
French." 0.20, "Write a poem about the sea." 0.28 and a prompt injection 0.29, while new
instructions for the same task score 0.35-0.56 ("List the facts first." 0.35, "Plan first, then
answer." 0.49, "Read the problem twice and answer." 0.56). The threshold is the top of the
unrelated range: it flags what has nothing to do with the task, not terse instructions."""

Verdict = Literal["keep", "invalid", "duplicate", "off_topic"]


class FilterConfig(BaseModel):
    """The filter's thresholds (calibrated for all-MiniLM-L6-v2; set them again for another embedder)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    duplicate_similarity: float = Field(DUPLICATE_SIMILARITY, ge=-1.0, le=1.0,
                                        description="skip a candidate this similar to an evaluated prompt")
    off_topic_similarity: float | None = Field(OFF_TOPIC_SIMILARITY, ge=-1.0, le=1.0,
                                               description="flag a candidate less similar to every reference "
                                                           "prompt (None: never)")
    dedupe_batch: bool = Field(True, description="also skip near-duplicates of earlier candidates in the batch")


class Decision(BaseModel):
    """What the filter decided for one candidate, and why (`reason`: "keep" or the skip reason)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt: str
    verdict: Verdict
    reason: str
    similarity: float | None = Field(None, description="to the duplicated prompt, or to the nearest reference")
    match: str | None = Field(None, description="the duplicated prompt, or the nearest reference prompt")
    score: float | None = Field(None, description="the duplicated prompt's recorded score, reused")

    @property
    def kept(self) -> bool:
        return self.verdict == "keep"


class Neighbour(BaseModel):
    """A past prompt retrieved by similarity, with its recorded score and payload."""

    model_config = ConfigDict(frozen=True)

    prompt: str
    similarity: float
    score: float | None
    payload: dict[str, Any] = Field(default_factory=dict)


class PromptFilter:
    """Validate candidate prompts and filter them by meaning against evaluated and reference prompts.

    Args:
        embedder: any `Embedder` (`MiniLMEmbedder()`, or `LMEmbedder(loaded_model)`).
        validator: the `PromptValidator` (default: non-empty only; no token limit).
        reference: prompts that define the task (e.g. the instruction library); none: no off-topic check.
        index: where evaluated prompts are kept (default: a `NumpyIndex` in memory).
        config: thresholds; keyword overrides (`duplicate_similarity=0.95`) take precedence.

    >>> pf = PromptFilter(MiniLMEmbedder(), reference=["Solve the word problem.", "Think step by step."])
    >>> pf.record("Check every step before you answer.", score=0.42)
    >>> [d.reason for d in pf.check(["Check each step before you answer.", "The cat sat on the mat."])]
    """

    def __init__(self, embedder: Embedder, *, validator: PromptValidator | None = None,
                 reference: Sequence[str] = (), index: VectorIndex | None = None,
                 config: FilterConfig | None = None, **overrides: Any):
        if not isinstance(embedder, Embedder):
            raise TypeError(f"embedder must have name, dim and embed(texts), got {type(embedder).__name__}")
        self.embedder = embedder
        self.validator = validator or PromptValidator()
        self.index = index if index is not None else NumpyIndex(embedder.dim)
        self.config = FilterConfig.model_validate({**(config or FilterConfig()).model_dump(), **overrides})
        self._vectors: dict[str, np.ndarray] = {}
        self.reference: list[str] = []
        self._reference = np.zeros((0, embedder.dim), dtype=np.float32)
        if reference:
            self.set_reference(reference)

    # -- inputs --------------------------------------------------------------------------------
    def set_reference(self, prompts: Sequence[str]) -> None:
        """Prompts that define the task; candidates far from all of them are off-topic."""
        prompts = list(prompts)
        invalid = {p: self.validator.problems(p) for p in prompts}
        invalid = {p: v for p, v in invalid.items() if v}
        if invalid:
            p, problems = next(iter(invalid.items()))
            raise InvalidPrompt(p if isinstance(p, str) else repr(p), [f"reference prompt: {x}" for x in problems])
        self.reference = prompts
        self._reference = self._embed(prompts)

    def record(self, prompt: str, score: float, **payload: Any) -> None:
        """Remember that `prompt` was evaluated and scored `score` (a later record of the same text
        replaces it). `payload` is stored beside it (JSON-able values)."""
        self.record_scores({prompt: score}, **payload)

    def record_scores(self, scores: Mapping[str, float], **payload: Any) -> None:
        """`record` for many prompts at once; all are checked before any is written."""
        scores = dict(scores)
        for prompt, score in scores.items():
            self.validator.validate(prompt)
            if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
                raise ValueError(f"the score of {prompt!r} must be a finite number, got {score!r}")
        if not scores:
            return
        prompts = list(scores)
        self.index.add([prompt_id(p) for p in prompts], self._embed(prompts),
                       [{**payload, "prompt": p, "score": float(scores[p]), "embedder": self.embedder.name}
                        for p in prompts])

    # -- queries -------------------------------------------------------------------------------
    def nearest(self, prompt: str, k: int = 5) -> list[Neighbour]:
        """The `k` evaluated prompts most similar to `prompt`, most similar first, with their scores."""
        hits = self.index.search(self._embed([prompt])[0], k)
        return [Neighbour(prompt=p.get("prompt", i), similarity=s, score=p.get("score"), payload=p)
                for i, s, p in hits]

    def check(self, candidates: Sequence[str], *, always_keep: Collection[str] = ()) -> list[Decision]:
        """A `Decision` per candidate, in order. Candidates in `always_keep` (e.g. the program's own
        instruction) are kept whatever they are, and later candidates are compared with them."""
        candidates = list(candidates)
        decisions: list[Decision | None] = [None] * len(candidates)
        valid: list[int] = []
        for i, c in enumerate(candidates):
            problems = [] if c in always_keep else self.validator.problems(c)
            if problems:
                decisions[i] = Decision(prompt=str(c), verdict="invalid", reason=f"invalid: {'; '.join(problems)}")
            else:
                valid.append(i)
        vectors = self._embed([candidates[i] for i in valid])
        kept: list[tuple[str, np.ndarray]] = []
        for i, v in zip(valid, vectors, strict=True):
            c = candidates[i]
            decisions[i] = (Decision(prompt=c, verdict="keep", reason="keep") if c in always_keep
                            else self._decide(c, v, kept))
            if decisions[i].kept:
                kept.append((c, v))
        return decisions  # type: ignore[return-value]

    def keep(self, candidates: Sequence[str], **kwargs: Any) -> list[str]:
        """Just the candidates `check` keeps, in order."""
        return [d.prompt for d in self.check(candidates, **kwargs) if d.kept]

    # -- parts ---------------------------------------------------------------------------------
    def _decide(self, prompt: str, vector: np.ndarray, kept: list[tuple[str, np.ndarray]]) -> Decision:
        cfg = self.config
        hits = self.index.search(vector, 1)
        if hits and hits[0][1] >= cfg.duplicate_similarity:
            _, sim, payload = hits[0]
            score = payload.get("score")
            return Decision(prompt=prompt, verdict="duplicate", similarity=round(sim, 4), match=payload.get("prompt"),
                            score=score, reason=f"near-duplicate of {payload.get('prompt')!r} (similarity {sim:.2f}), "
                                            f"reused score {_fmt(score)}")
        if cfg.dedupe_batch and kept:
            sims = np.stack([v for _, v in kept]) @ vector
            j = int(np.argmax(sims))
            if sims[j] >= cfg.duplicate_similarity:
                return Decision(prompt=prompt, verdict="duplicate", similarity=round(float(sims[j]), 4),
                                match=kept[j][0], reason=f"near-duplicate of {kept[j][0]!r} (similarity "
                                                         f"{sims[j]:.2f}), an earlier candidate")
        if cfg.off_topic_similarity is not None and len(self.reference):
            sims = self._reference @ vector
            j = int(np.argmax(sims))
            if sims[j] < cfg.off_topic_similarity:
                return Decision(prompt=prompt, verdict="off_topic", similarity=round(float(sims[j]), 4),
                                match=self.reference[j],
                                reason=f"off-topic (similarity {sims[j]:.2f} to the reference set, below "
                                       f"{cfg.off_topic_similarity:.2f})")
        return Decision(prompt=prompt, verdict="keep", reason="keep")

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        """`[len(texts), dim]` unit rows, each text embedded once per filter."""
        todo = list(dict.fromkeys(t for t in texts if t not in self._vectors))
        if todo:
            vectors = np.asarray(self.embedder.embed(todo), dtype=np.float32)
            if vectors.shape != (len(todo), self.embedder.dim):
                raise ValueError(f"{self.embedder.name} returned shape {list(vectors.shape)} for {len(todo)} texts, "
                                 f"expected [{len(todo)}, {self.embedder.dim}]")
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
            self._vectors.update(zip(todo, vectors, strict=True))
        return (np.stack([self._vectors[t] for t in texts]) if texts
                else np.zeros((0, self.embedder.dim), dtype=np.float32))


def _fmt(score: Any) -> str:
    return f"{score:.4g}" if isinstance(score, (int, float)) else "(none recorded)"
