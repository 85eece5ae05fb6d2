"""Run many generation requests as one left-padded batched `generate`, and gather them from threads.

`generate_rows` is the batched step: each row keeps its own steering, max_tokens, stop strings,
temperature and top_p, and greedy rows stay exactly greedy next to sampled ones. Left padding with
the attention mask lets Hugging Face derive each row's position ids from the mask, so a padded row
computes what it would compute alone (up to float rounding of differently shaped matmuls). The
prompt prefix all rows share is prefilled once per steering, and a `PrefixCache` keeps it across
batches, so the system prompt of a DSPy program is computed once, not once per call.

`MicroBatcher` is the concurrency step: callers on many threads (DSPy's `Evaluate(num_threads=N)`)
submit requests; one worker thread — the only thread that ever runs the model — waits a few
milliseconds for company, runs the batch, and hands each caller its own result. Decoding is bound by
reading the weights, so 16 rows per step cost little more than one.
"""

from __future__ import annotations

import copy
import logging
import queue
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import torch
from torch import Tensor, nn

from reasoning_dspy.steering import ActivationReport, CaptureConfig, RowSteering, Steerer

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


# -- one batched generate -------------------------------------------------------------------

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


@dataclass
class GenResult:
    token_ids: list[int]  # generated tokens, cut at EOS / stop string
    text: str
    finish_reason: str  # "stop" (EOS or stop string) or "length"
    prompt_tokens: int
    report: ActivationReport | None = None
    extras: dict[str, Any] = field(default_factory=dict)


class _RowSampling:
    """Per-row temperature and top-p as a logits processor; greedy rows keep only their argmax,
    so multinomial sampling returns exactly the greedy token for them."""

    def __init__(self, temperature: Tensor, top_p: Tensor):
        self.temperature, self.top_p = temperature, top_p  # [B], [B]

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        scores = scores.float()
        greedy = self.temperature <= 0
        out = scores / self.temperature.clamp_min(1e-5)[:, None]
        if (self.top_p < 1).any():
            sorted_logits, order = out.sort(dim=-1, descending=True)
            cum = sorted_logits.softmax(-1).cumsum(-1)
            remove = cum - sorted_logits.softmax(-1) > self.top_p[:, None]  # keep the token crossing top_p
            out = out.masked_fill(torch.zeros_like(remove).scatter(-1, order, remove), float("-inf"))
        if greedy.any():
            onehot = torch.full_like(scores, float("-inf")).scatter(-1, scores.argmax(-1, keepdim=True), 0.0)
            out = torch.where(greedy[:, None], onehot, out)
        return out


class _RowStopping:
    """Per-row stopping: a row is done at its own max_new_tokens or when one of its stop strings appears."""

    def __init__(self, rows: Sequence[GenRow], prompt_len: int, tokenizer: Any):
        self.rows, self.prompt_len, self.tokenizer = rows, prompt_len, tokenizer
        self.max_new = torch.tensor([r.max_new_tokens for r in rows])
        self.done = torch.zeros(len(rows), dtype=torch.bool)

    def __call__(self, input_ids: Tensor, scores: Tensor, **kwargs: Any) -> Tensor:
        n_new = input_ids.shape[1] - self.prompt_len
        self.done |= self.max_new <= n_new
        for b, row in enumerate(self.rows):
            if row.stop and not self.done[b]:
                text = self.tokenizer.decode(input_ids[b, self.prompt_len :], skip_special_tokens=True)
                if any(s in text for s in row.stop):
                    self.done[b] = True
        return self.done.to(input_ids.device)


def _eos_ids(model: nn.Module, tokenizer: Any) -> set[int]:
    eos = getattr(model.generation_config, "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    return set(eos if isinstance(eos, (list, tuple)) else [eos]) - {None}


@torch.inference_mode()
def generate_rows(
    model: nn.Module,
    tokenizer: Any,
    rows: Sequence[GenRow],
    *,
    sae: Any = None,
    capture: CaptureConfig | None = None,
    spec: Any = None,
    output_scores: bool = False,
    min_new_tokens: int = 0,
    share_prefix: bool = True,
    prefix_cache: PrefixCache | None = None,
) -> list[GenResult]:
    """Generate for all `rows` in one left-padded batch, each with its own settings.

    `min_new_tokens` suppresses EOS that long (benchmarks compare equal amounts of decoding).
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
    cache = _prefix_kv(model, rows, rows[0].prompt_ids[:shared], sae, spec, prefix_cache) if shared else None

    from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

    eos = _eos_ids(model, tokenizer)
    sampled = any(r.temperature > 0 for r in rows)
    gen_cfg = GenerationConfig(
        max_new_tokens=max(r.max_new_tokens for r in rows),
        min_new_tokens=min_new_tokens or None,
        do_sample=sampled,
        temperature=1.0,
        top_k=None,
        top_p=1.0,
        pad_token_id=pad_id,
        eos_token_id=sorted(eos) or None,
        output_scores=output_scores,
        return_dict_in_generate=True,
    )
    processors = LogitsProcessorList()
    if sampled:
        processors.append(_RowSampling(
            torch.tensor([r.temperature for r in rows], device=device, dtype=torch.float32),
            torch.tensor([r.top_p for r in rows], device=device, dtype=torch.float32),
        ))
    stopping = _RowStopping(rows, width, tokenizer)
    want_capture = capture if any(r.capture for r in rows) else None
    steerer = Steerer(model, [r.steering for r in rows], sae=sae, capture=want_capture,
                      capture_features=[r.capture_features for r in rows], spec=spec)
    with steerer:
        out = model.generate(
            input_ids=ids, attention_mask=mask, generation_config=gen_cfg, past_key_values=cache,
            logits_processor=processors, stopping_criteria=StoppingCriteriaList([stopping]),
        )
    sequences = out.sequences[:, width:].cpu()
    results: list[GenResult] = []
    for b, r in enumerate(rows):
        toks = sequences[b, : r.max_new_tokens].tolist()
        finish = "length"
        for i, t in enumerate(toks):
            if t in eos:
                toks, finish = toks[:i], "stop"
                break
        text = tokenizer.decode(toks, skip_special_tokens=True)
        if r.stop:
            cut = min((text.find(s) for s in r.stop if s in text), default=-1)
            if cut >= 0:
                text, finish = text[:cut], "stop"
                toks = _tokens_covering(tokenizer, toks, cut)
        results.append(GenResult(toks, text, finish, len(r.prompt_ids)))
        if output_scores:
            results[-1].extras["scores"] = [s[b].float().cpu() for s in out.scores]
    if want_capture is not None:
        reports = steerer.reports([len(res.token_ids) for res in results])
        for r, res, rep in zip(rows, results, reports, strict=True):
            res.report = rep if r.capture else None
    return results


MIN_SHARED_PREFIX = 32  # shorter common prefixes are not worth a separate forward


def _common_len(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _shared_prefix_len(rows: Sequence[GenRow]) -> int:
    """Length of the prompt prefix common to every row, leaving each row at least one own token."""
    first = rows[0].prompt_ids
    return min(min(_common_len(first, r.prompt_ids) for r in rows), min(len(r.prompt_ids) for r in rows) - 1)


def _steering_key(row: RowSteering | None) -> Any:
    if row is None:
        return None
    as_bytes = (lambda t: None if t is None else t.detach().cpu().numpy().tobytes())  # noqa: E731
    return (row.layer, as_bytes(row.add), as_bytes(row.clamp_features), as_bytes(row.clamp_targets))


class PrefixCache:
    """Prefilled KV caches of recent prompt prefixes, reused across batches (automatic prefix caching).

    An entry is the `DynamicCache` of one prefix (one row) under one steering: steering at layer L
    changes the keys and values of every later layer, so the resolved steering (layer, vector, clamp
    targets, which already include f_max and the decoder rows) is part of the key. A new prefix takes
    the entry sharing the longest run of leading tokens with it (at least `MIN_SHARED_PREFIX`),
    cropped to that run, and prefills only the rest — a DSPy program's system prompt is computed once
    per steering, not once per batch or request. At most `size` entries, least recently used dropped
    first (0 disables). An instance belongs to one model and SAE (it empties itself if handed others)
    and is only used under the model's lock. Models with sliding-window attention share prefixes
    within a batch only.
    """

    def __init__(self, size: int = 4):
        if size < 0:
            raise ValueError(f"prefix cache size must be >= 0 entries, got {size}")
        self.size = size
        self.hits = 0  # lookups served (fully or partly) from an entry
        self.misses = 0  # lookups that prefilled from scratch
        self._entries: OrderedDict[tuple[Any, tuple[int, ...]], Any] = OrderedDict()
        self._owner: tuple[nn.Module, Any] | None = None

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()

    def bind(self, model: nn.Module, sae: Any) -> None:
        """Entries are only valid for the model and SAE that computed them."""
        if self._owner is not None and (self._owner[0] is not model or self._owner[1] is not sae):
            self.clear()
        self._owner = (model, sae)

    def get(self, key: Any, prefix: Sequence[int]) -> tuple[int, Any]:
        """`(n, cache)`: a private copy of the best entry's KV cropped to its `n` tokens shared with
        `prefix`, or `(0, None)` on a miss."""
        best, n = None, 0
        for entry_key in self._entries:
            if entry_key[0] == key:
                m = _common_len(entry_key[1], prefix)
                if m > n:
                    best, n = entry_key, m
        if best is None or n < MIN_SHARED_PREFIX:
            self.misses += 1
            return 0, None
        self.hits += 1
        self._entries.move_to_end(best)
        cache = copy.deepcopy(self._entries[best])
        cache.crop(n - len(best[1]))
        return n, cache

    def put(self, key: Any, prefix: Sequence[int], cache: Any) -> None:
        """Keep a copy of `cache` (the KV of `prefix`, one row) as the most recent entry."""
        if self.size == 0 or any(cache.is_sliding):
            return
        entry_key = (key, tuple(prefix))
        self._entries[entry_key] = copy.deepcopy(cache)
        self._entries.move_to_end(entry_key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)


def _prefix_kv(model: nn.Module, rows: Sequence[GenRow], prefix: list[int], sae: Any, spec: Any,
               store: PrefixCache | None) -> Any:
    """KV cache of the shared `prefix` for every row, `[B, heads, len(prefix), head_dim]` per layer:
    one prefill per distinct steering, starting from what `store` already holds."""
    from transformers import DynamicCache

    groups: dict[Any, int] = {}
    index = [groups.setdefault(_steering_key(r.steering), len(groups)) for r in rows]
    first_row = {g: index.index(g) for g in groups.values()}
    device = next(model.parameters()).device
    if store is not None:
        store.bind(model, sae)
    caches = []
    for key, g in groups.items():
        start, cache = store.get(key, prefix) if store is not None else (0, None)
        if start < len(prefix):
            cache = cache if cache is not None else DynamicCache(config=model.config)
            new = torch.tensor([prefix[start:]], dtype=torch.long, device=device)
            with Steerer(model, [rows[first_row[g]].steering], sae=sae, spec=spec):
                model(input_ids=new, attention_mask=torch.ones((1, len(prefix)), dtype=torch.long, device=device),
                      past_key_values=cache, use_cache=True, logits_to_keep=1)
            if store is not None:
                store.put(key, prefix, cache)
        caches.append(cache)
    # one batch cache: the groups' rows side by side, then each row picks its group's
    batch = caches[0]
    if len(caches) > 1:
        for i, layer in enumerate(batch.layers):
            layer.keys = torch.cat([c.layers[i].keys for c in caches])
            layer.values = torch.cat([c.layers[i].values for c in caches])
    batch.reorder_cache(torch.tensor(index, dtype=torch.long, device=device))
    return batch


def _tokens_covering(tokenizer: Any, toks: list[int], n_chars: int) -> list[int]:
    """The shortest prefix of `toks` whose text reaches `n_chars` characters (text cut at a stop string)."""
    for i in range(len(toks) + 1):
        if len(tokenizer.decode(toks[:i], skip_special_tokens=True)) >= n_chars:
            return toks[:i]
    return toks


# -- thread gathering -----------------------------------------------------------------------

_MODEL_LOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_MODEL_LOCKS_GUARD = threading.Lock()


def model_lock(model: nn.Module) -> threading.Lock:
    """One lock per model object: engines sharing a model never run it from two threads at once."""
    with _MODEL_LOCKS_GUARD:
        lock = _MODEL_LOCKS.get(model)
        if lock is None:
            lock = _MODEL_LOCKS[model] = threading.Lock()
        return lock


@dataclass
class _Item(Generic[T]):
    payload: T
    future: Future


_STOP = object()


class MicroBatcher(Generic[T, R]):
    """Gather items submitted from any thread into batches for `run_batch` on one worker thread.

    The worker takes the first waiting item, then collects more until none arrives for
    `max_wait_ms`, `max_gather_ms` have passed, or `max_batch_size` items are in, and calls
    `run_batch(payloads) -> results` (same order). Each caller's future gets its own result; if a
    batch fails, its items are retried one by one so a single bad request cannot fail its
    neighbours. `max_batch_size=1` gives the one-request-at-a-time baseline.
    """

    def __init__(
        self,
        run_batch: Callable[[list[T]], list[R]],
        *,
        max_batch_size: int = 16,
        max_wait_ms: float = 5.0,
        max_gather_ms: float = 50.0,
        name: str = "reasoning-dspy-batcher",
    ):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait_ms = max_wait_ms
        self.max_gather_ms = max_gather_ms
        self.name = name
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False
        self.batch_sizes: list[int] = []  # observed batch sizes (diagnostics, benchmarks)

    def submit(self, payload: T) -> Future:
        """Queue `payload`; the returned future resolves to its result (or raises its error)."""
        future: Future = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{self.name} is closed; create a new engine")
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name=self.name, daemon=True)
                self._thread.start()
            self._queue.put(_Item(payload, future))
        return future

    def __call__(self, payload: T) -> R:
        return self.submit(payload).result()

    def close(self) -> None:
        """Finish queued work, then stop the worker thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
            self._queue.put(_STOP)
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _work(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch, stop = [first], False
            # Gather while requests keep arriving (each one extends the wait by max_wait_ms), up to
            # max_gather_ms: callers released together by the previous batch re-submit in a burst.
            start = time.monotonic()
            deadline = start + self.max_wait_ms / 1000
            cap = start + max(self.max_gather_ms, self.max_wait_ms) / 1000
            while len(batch) < self.max_batch_size:
                try:
                    timeout = min(deadline, cap) - time.monotonic()
                    item = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)
                deadline = time.monotonic() + self.max_wait_ms / 1000
            self._run(batch)
            if stop:
                return

    def _run(self, batch: list[_Item]) -> None:
        live = [it for it in batch if it.future.set_running_or_notify_cancel()]
        if not live:
            return
        self.batch_sizes.append(len(live))
        try:
            results = self.run_batch([it.payload for it in live])
            if len(results) != len(live):
                raise RuntimeError(f"run_batch returned {len(results)} results for {len(live)} items")
        except BaseException as err:  # noqa: BLE001 - every error is handed to its caller
            if len(live) == 1:
                live[0].future.set_exception(err)
                return
            logger.debug("batch of %d failed (%s); retrying one by one", len(live), err)
            for it in live:
                try:
                    it.future.set_result(self.run_batch([it.payload])[0])
                except BaseException as single_err:  # noqa: BLE001
                    it.future.set_exception(single_err)
            return
        for it, res in zip(live, results, strict=True):
            it.future.set_result(res)
