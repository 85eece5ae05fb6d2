"""One left-padded batched `generate` in which every row keeps its own settings.

`generate_rows` runs many generation requests at once: each row keeps its own steering,
max_tokens, stop strings, temperature and top_p, and greedy rows stay exactly greedy next to
sampled ones. Left padding with the attention mask lets Hugging Face derive each row's position ids
from the mask, so a padded row computes what it would compute alone (up to float rounding of
differently shaped matmuls). The prompt prefix all rows share is prefilled once per steering
(`prefix_cache.py`), so the system prompt of a DSPy program is computed once, not once per call.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from reasoning_dspy.engine.prefix_cache import MIN_SHARED_PREFIX, PrefixCache, common_len, prefix_kv
from reasoning_dspy.features.activation import ActivationReport
from reasoning_dspy.models import ModelSpec, kv_cache_kwarg
from reasoning_dspy.steering import CaptureConfig, Perturbation, RowSteering, Steerer
from reasoning_dspy.steering.lines import line_ends

logger = logging.getLogger(__name__)


@dataclass
class RowWatch:
    """A caller's live line to one row while it decodes: every new token as soon as it is chosen
    (token streaming), and a way to stop the row early (a client that went away).

    `on_token(token_id)` runs on the engine's worker thread between decoding steps, so it must be
    quick and thread-safe (hand the token to an event loop or a queue). It sees each generated
    token once, EOS excluded; a row cut at a stop string may have shown a few tokens past the cut.
    After `cancel()` the row decodes no further token; a batch whose rows are all cancelled ends.

    The watch records what it handed over (`sent`). A row that runs again (the micro-batcher
    retries the rows of a failed batch one by one) is forced through those tokens and hands over
    only the ones after them: its stream goes on where it stopped, and its answer, stop check,
    activation report and perturbation still cover every token from the first.
    """

    on_token: Callable[[int], None] | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    sent: list[int] = field(default_factory=list)  # tokens handed to `on_token`, in order

    def cancel(self) -> None:
        self.cancelled.set()

    def deliver(self, position: int, token_id: int) -> None:
        """Hand over the row's token at `position` (0 = the first generated), unless it already was."""
        if self.on_token is None or position < len(self.sent):
            return
        self.sent.append(token_id)
        self.on_token(token_id)


@dataclass
class GenRow:
    """One generation request, already tokenized."""

    prompt_ids: list[int]
    max_new_tokens: int = 64
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    steering: RowSteering | None = None
    capture: bool = False
    capture_features: tuple[int, ...] = ()  # reasoning features whose mean activation is reported
    watch: RowWatch | None = None  # token-by-token delivery and early cancellation
    seed: int | None = None  # a sampled row draws from its own generator seeded with this: reproducible
    logprobs: int | None = None  # report each token's log-probability, and this many top alternatives


@dataclass
class GenResult:
    token_ids: list[int]  # generated tokens, cut at EOS / stop string
    text: str
    finish_reason: str  # "stop" (EOS or stop string), "length", or "cancelled" (its `RowWatch` was cancelled)
    prompt_tokens: int
    report: ActivationReport | None = None
    perturbation: Perturbation | None = None  # how far steering moved the residual; None when unsteered
    extras: dict[str, Any] = field(default_factory=dict)
    logprobs: list[TokenLogprobs] | None = None  # per generated token, for a row that asked (`GenRow.logprobs`)


@dataclass
class TokenLogprobs:
    """A generated token's log-probability under the model (its raw logits, before temperature and
    top-p), and the `top` most likely tokens at that step: `[(token id, log-probability)]`."""

    token_id: int
    logprob: float
    top: list[tuple[int, float]] = field(default_factory=list)


class _RowSampler:
    """Chooses every row's next token itself and hands `generate` a one-hot score row.

    Greedy rows (temperature 0) take their argmax; sampled rows draw from their own temperature and
    top-p distribution over the whole vocabulary, with their own `torch.Generator` when seeded (so a
    seeded row samples the same tokens whatever else runs, and the global RNG is never reseeded),
    else with the global RNG. A row with `forced` tokens takes them first, whatever it would have
    chosen (a sampled row still draws, so its generator advances as it did the first time).
    `generate` runs in greedy mode, so it picks exactly the chosen token and none of Hugging Face's
    sampling warpers (a default top-k of 50 among them) ever runs after this one.
    """

    def __init__(self, temperature: Tensor, top_p: Tensor, generators: Sequence[torch.Generator | None] = (),
                 forced: Sequence[Sequence[int]] = (), prompt_len: int = 0):
        self.temperature, self.top_p = temperature, top_p  # [B], [B]
        self.generators = list(generators) or [None] * len(temperature)
        self.forced, self.prompt_len = [list(f) for f in forced], prompt_len

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        scores = scores.float()
        choice = scores.argmax(-1)
        sampled = self.temperature > 0
        if sampled.any():
            logits = scores[sampled] / self.temperature[sampled, None]
            top_p = self.top_p[sampled]
            if (top_p < 1).any():
                sorted_logits, order = logits.sort(dim=-1, descending=True)
                probs = sorted_logits.softmax(-1)
                remove = probs.cumsum(-1) - probs > top_p[:, None]  # keep the token that crosses top_p
                logits = logits.masked_fill(torch.zeros_like(remove).scatter(-1, order, remove), float("-inf"))
            choice[sampled] = self._draw(logits.softmax(-1), sampled.nonzero().flatten().tolist())
        step = input_ids.shape[1] - self.prompt_len
        for b, tokens in enumerate(self.forced):
            if step < len(tokens):
                choice[b] = tokens[step]
        return torch.full_like(scores, float("-inf")).scatter(-1, choice[:, None], 0.0)

    def _draw(self, probs: Tensor, rows: list[int]) -> Tensor:
        """One token per sampled row (`probs [len(rows), vocab]`): seeded rows from their own generator."""
        own = [j for j, b in enumerate(rows) if self.generators[b] is not None]
        if not own:
            return torch.multinomial(probs, 1).squeeze(-1)
        picks = torch.empty(len(rows), dtype=torch.long, device=probs.device)
        shared = [j for j in range(len(rows)) if j not in own]
        if shared:
            picks[shared] = torch.multinomial(probs[shared], 1).squeeze(-1)
        for j in own:
            picks[j] = torch.multinomial(probs[j], 1, generator=self.generators[rows[j]])[0]
        return picks


class _RowStopping:
    """Per-row stopping: a row is done at its own max_new_tokens, when one of its stop strings
    appears, or when its `RowWatch` is cancelled. Watched rows get each new token on the way."""

    def __init__(self, rows: Sequence[GenRow], prompt_len: int, tokenizer: Any, eos: set[int],
                 steerer: Steerer | None = None):
        self.rows, self.prompt_len, self.tokenizer, self.eos = rows, prompt_len, tokenizer, eos
        self.steerer = steerer if steerer is not None and steerer.line_ends is not None else None
        self.max_new = torch.tensor([r.max_new_tokens for r in rows])
        self.done = torch.zeros(len(rows), dtype=torch.bool)
        self.cancelled: list[int | None] = [None] * len(rows)  # tokens a cancelled row kept
        self.watched = [b for b, r in enumerate(rows) if r.watch is not None]
        self._ended = [False] * len(rows)  # watched rows past EOS or done: nothing more to hand over

    def __call__(self, input_ids: Tensor, scores: Tensor, **kwargs: Any) -> Tensor:
        n_new = input_ids.shape[1] - self.prompt_len
        if self.watched:
            self._hand_over(input_ids[:, -1].tolist(), n_new - 1)
        if self.steerer is not None:  # a window that opens after the first lines
            self.steerer.saw_tokens(n_new - 1, input_ids[:, -1].tolist())
        self.done |= self.max_new <= n_new
        for b, row in enumerate(self.rows):
            if row.stop and not self.done[b]:
                text = self.tokenizer.decode(input_ids[b, self.prompt_len :], skip_special_tokens=True)
                if any(s in text for s in row.stop):
                    self.done[b] = True
        for b in self.watched:
            if self.rows[b].watch.cancelled.is_set() and not self.done[b]:
                self.done[b], self.cancelled[b] = True, n_new
        return self.done.to(input_ids.device)

    def _hand_over(self, last: list[int], position: int) -> None:
        for b in self.watched:
            if self._ended[b]:
                continue
            if last[b] in self.eos:
                self._ended[b] = True
                continue
            self._ended[b] = bool(self.done[b])  # done at the previous step: this token is padding
            if self._ended[b] or self.rows[b].watch.on_token is None:
                continue
            try:
                self.rows[b].watch.deliver(position, last[b])
            except Exception:  # noqa: BLE001 - a listener's failure must not fail the batch
                logger.exception("a RowWatch.on_token callback failed; the row goes on without it")


def _eos_ids(model: nn.Module, tokenizer: Any) -> set[int]:
    eos = getattr(model.generation_config, "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    return set(eos if isinstance(eos, (list, tuple)) else [eos]) - {None}


def _generation_config(max_new_tokens: int, min_new_tokens: int, pad_id: int, eos: set[int],
                       output_logits: bool) -> Any:
    """The decoding configuration, with every logits-changing field stated.

    `generate` fills each field left `None` from the model's `generation_config`, then from library
    defaults, and with `do_sample=True` it would run its own warpers (a default `top_k=50` among
    them) after ours. So decoding is always greedy over the one-hot scores `_RowSampler` hands over
    (temperature, top-k, top-p and the other warper fields then do nothing), and every processor
    that would change the logits is set to its neutral value: a checkpoint's own
    `repetition_penalty` or `no_repeat_ngram_size` never alters our rows.
    """
    from transformers import GenerationConfig

    return GenerationConfig(
        max_new_tokens=max_new_tokens,
        min_new_tokens=min_new_tokens or 0,
        do_sample=False,
        num_beams=1,
        repetition_penalty=1.0,
        encoder_repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        encoder_no_repeat_ngram_size=0,
        renormalize_logits=False,
        remove_invalid_values=False,
        pad_token_id=pad_id,
        eos_token_id=sorted(eos) or None,
        output_logits=output_logits,
        return_dict_in_generate=True,
    )


@torch.inference_mode()
def generate_rows(
    model: nn.Module,
    tokenizer: Any,
    rows: Sequence[GenRow],
    *,
    sae: Any = None,
    capture: CaptureConfig | None = None,
    model_spec: ModelSpec | None = None,
    output_logits: bool = False,
    min_new_tokens: int = 0,
    share_prefix: bool = True,
    prefix_cache: PrefixCache | None = None,
) -> list[GenResult]:
    """Generate for all `rows` in one left-padded batch, each with its own settings.

    `min_new_tokens` suppresses EOS that long (benchmarks compare equal amounts of decoding).
    `output_logits` keeps each step's raw logits in `extras["logits"]` (`[vocab]` per generated token).
    `prefix_cache` keeps prefilled prompt prefixes across calls (pass the same one with the same
    model and SAE every time)."""
    if not rows:
        return []
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    # Rows that start alike (DSPy's system prompt) share that prefix's forward: layout
    # [prefix][pads][suffix], so the prefix sits at the same positions in every row and its KV cache
    # is computed once per distinct steering (or taken from `prefix_cache`); position ids still follow
    # the attention mask. A lone row only splits its prompt when a prefix cache can serve it.
    caching = prefix_cache is not None and prefix_cache.size > 0
    shared = _shared_prefix_len(rows) if share_prefix and (len(rows) > 1 or caching) else 0
    shared = shared if shared >= MIN_SHARED_PREFIX else 0
    suffix_width = max(len(r.prompt_ids) - shared for r in rows)
    width = shared + suffix_width
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for b, r in enumerate(rows):
        ids[b, :shared] = torch.tensor(r.prompt_ids[:shared], dtype=torch.long)
        mask[b, :shared] = 1
        suffix = r.prompt_ids[shared:]
        ids[b, width - len(suffix) :] = torch.tensor(suffix, dtype=torch.long)
        mask[b, width - len(suffix) :] = 1
    ids, mask = ids.to(device), mask.to(device)
    cache = prefix_kv(model, [r.steering for r in rows], rows[0].prompt_ids[:shared], sae, model_spec, prefix_cache) if shared else None

    from transformers import LogitsProcessorList, StoppingCriteriaList

    eos = _eos_ids(model, tokenizer)
    want_logprobs = any(r.logprobs is not None for r in rows)
    gen_cfg = _generation_config(max(r.max_new_tokens for r in rows), min_new_tokens, pad_id, eos,
                                 output_logits or want_logprobs)
    processors = LogitsProcessorList()
    forced = [list(r.watch.sent) if r.watch is not None else [] for r in rows]  # handed over by an earlier run
    if any(r.temperature > 0 for r in rows) or any(forced):
        processors.append(_RowSampler(
            torch.tensor([r.temperature for r in rows], device=device, dtype=torch.float32),
            torch.tensor([r.top_p for r in rows], device=device, dtype=torch.float32),
            [torch.Generator(device=device).manual_seed(r.seed) if r.seed is not None and r.temperature > 0 else None
             for r in rows],
            forced, width,
        ))
    want_capture = capture if any(r.capture for r in rows) else None
    waits = any(r.steering is not None and r.steering.skip_lines for r in rows)
    steerer = Steerer(model, [r.steering for r in rows], sae=sae, capture=want_capture,
                      capture_features=[r.capture_features for r in rows], model_spec=model_spec,
                      line_ends=line_ends(tokenizer) if waits else None)
    stopping = _RowStopping(rows, width, tokenizer, eos, steerer)
    with steerer:
        out = model.generate(
            input_ids=ids, attention_mask=mask, generation_config=gen_cfg, **{kv_cache_kwarg(model): cache},
            logits_processor=processors, stopping_criteria=StoppingCriteriaList([stopping]),
        )
    sequences = out.sequences[:, width:].cpu()
    results: list[GenResult] = []
    for b, r in enumerate(rows):
        kept = stopping.cancelled[b]
        toks = sequences[b, : r.max_new_tokens if kept is None else kept].tolist()
        finish = "length" if kept is None else "cancelled"
        for i, t in enumerate(toks):
            if t in eos:
                toks, finish = toks[:i], "stop" if kept is None else finish
                break
        text = tokenizer.decode(toks, skip_special_tokens=True)
        if r.stop:
            cut = min((text.find(s) for s in r.stop if s in text), default=-1)
            if cut >= 0:
                text, finish = text[:cut], "stop"
                toks = _tokens_covering(tokenizer, toks, cut)
        results.append(GenResult(toks, text, finish, len(r.prompt_ids)))
        if output_logits:
            results[-1].extras["logits"] = [step[b].float().cpu() for step in out.logits]
        if r.logprobs is not None:
            results[-1].logprobs = _token_logprobs([step[b] for step in out.logits[: len(toks)]], toks, r.logprobs)
    moved = steerer.perturbations([len(res.token_ids) for res in results])
    for res, perturbation in zip(results, moved, strict=True):
        res.perturbation = perturbation
    if want_capture is not None:
        reports = steerer.reports([len(res.token_ids) for res in results])
        for r, res, rep in zip(rows, results, reports, strict=True):
            res.report = rep if r.capture else None
    return results


def _token_logprobs(logits: Sequence[Tensor], tokens: Sequence[int], top: int) -> list[TokenLogprobs]:
    """Each token's log-probability under its step's raw logits (`[vocab]` each), with `top` alternatives."""
    out = []
    for step, token in zip(logits, tokens, strict=True):
        logp = step.float().log_softmax(-1)
        best = logp.topk(min(top, logp.numel())) if top else None
        out.append(TokenLogprobs(int(token), float(logp[token]), [] if best is None else
                                 [(int(i), float(v)) for v, i in zip(best.values.tolist(), best.indices.tolist(),
                                                                     strict=True)]))
    return out


def _shared_prefix_len(rows: Sequence[GenRow]) -> int:
    """Length of the prompt prefix common to every row, leaving each row at least one own token."""
    first = rows[0].prompt_ids
    return min(min(common_len(first, r.prompt_ids) for r in rows), min(len(r.prompt_ids) for r in rows) - 1)


def _tokens_covering(tokenizer: Any, toks: list[int], n_chars: int) -> list[int]:
    """The shortest prefix of `toks` whose text reaches `n_chars` characters (text cut at a stop string)."""
    for i in range(len(toks) + 1):
        if len(tokenizer.decode(toks[:i], skip_special_tokens=True)) >= n_chars:
            return toks[:i]
    return toks
