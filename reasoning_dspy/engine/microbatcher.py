"""Gather requests from many threads into batches for one worker thread.

Callers on many threads (DSPy's `Evaluate(num_threads=N)`) submit requests; one worker thread waits a
few milliseconds for company, runs the batch, and hands each caller its own result. Decoding is bound
by reading the weights, so 16 rows per step cost little more than one.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import weakref
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from torch import nn

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

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
    seq: int  # submission order


_STOP = object()


@dataclass
class _Burst:
    """An announced burst (`MicroBatcher.expect`): items up to submission number `until` belong to it."""

    until: int
    threads: int | None = None


@dataclass
class BatchStats:
    """How many batches ran and of which sizes: counters whose size does not grow with the number of
    batches (one entry per distinct size), so a long-running server can report them in constant time."""

    count: int = 0  # batches run
    rows: int = 0  # items over all batches
    last: int = 0  # size of the most recent batch
    by_size: Counter[int] = field(default_factory=Counter)  # batches per size

    def add(self, size: int) -> None:
        self.count += 1
        self.rows += size
        self.last = size
        self.by_size[size] += 1

    def copy(self) -> BatchStats:
        return BatchStats(self.count, self.rows, self.last, Counter(self.by_size))


class MicroBatcher(Generic[T, R]):
    """Gather items submitted from any thread into batches for `run_batch` on one worker thread.

    The worker takes the first waiting item, then collects more until none arrives for
    `max_wait_ms`, `max_gather_ms` have passed, or `max_batch_size` items are in, and calls
    `run_batch(payloads) -> results` (same order). Each caller's future gets its own result; if a
    batch raises an `Exception`, its items are retried one by one so a single bad request cannot
    fail its neighbours. An interrupt (`KeyboardInterrupt`, `SystemExit`) is never retried: every
    caller of the batch receives it at once and the worker stops (the next `submit` starts a new
    one). `max_batch_size=1` gives the one-request-at-a-time baseline.

    A caller that knows a burst is coming (an optimizer about to evaluate 4 candidates × 16
    examples from 64 threads) announces it with `expect(n)`: the worker then gathers until those
    `n` items are in (waiting up to `expect_wait_ms` for each next one) and hands them to `run_batch`
    in one call, however many that is, so the burst is never split by when its threads happened to
    arrive. `run_batch` then owns the split into model batches. A burst submitted from fewer
    threads than it has items (`expect(n, threads=k)`) arrives in waves of `k`, each caller blocked
    until its item is answered: each wave runs as soon as its `k` items are in.

    `stats` counts the batches by size (bounded); `batch_sizes` keeps the sizes of the most recent
    `recent` batches, for diagnostics and benchmarks.
    """

    def __init__(
        self,
        run_batch: Callable[[list[T]], list[R]],
        *,
        max_batch_size: int = 16,
        max_wait_ms: float = 5.0,
        max_gather_ms: float = 50.0,
        expect_wait_ms: float = 1000.0,
        name: str = "reasoning-dspy-batcher",
        recent: int = 4096,
    ):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait_ms = max_wait_ms
        self.max_gather_ms = max_gather_ms
        self.expect_wait_ms = expect_wait_ms
        self.name = name
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._submitted = 0  # items ever submitted
        self._bursts: dict[int, _Burst] = {}  # announced bursts still arriving, by id
        self.batch_sizes: deque[int] = deque(maxlen=recent)  # the most recent batch sizes
        self._stats = BatchStats()
        self._stats_lock = threading.Lock()

    @property
    def stats(self) -> BatchStats:
        """A snapshot of the batch counters (safe to read from any thread)."""
        with self._stats_lock:
            return self._stats.copy()

    def submit(self, payload: T) -> Future:
        """Queue `payload`; the returned future resolves to its result (or raises its error)."""
        future: Future = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{self.name} is closed; create a new engine")
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name=self.name, daemon=True)
                self._thread.start()
            self._queue.put(_Item(payload, future, self._submitted))
            self._submitted += 1
        return future

    @contextmanager
    def expect(self, n: int, threads: int | None = None) -> Iterator[None]:
        """Announce that `n` items are about to be submitted (from any threads): they run as one
        gathered batch. Items that never come (a caller served from a cache) are waited for at most
        `expect_wait_ms` after the last arrival, and no longer once the block ends.

        `threads`: how many threads submit them, each waiting for its item's answer before it
        submits the next. Then at most that many can arrive before a batch runs, so the burst runs
        in waves of `threads` items, each as soon as it is in, instead of waiting for items that
        cannot come until it has run."""
        if n < 0:
            raise ValueError(f"expect() needs a count >= 0, got {n}")
        if threads is not None and threads < 1:
            raise ValueError(f"expect() needs threads >= 1, got {threads}")
        with self._lock:
            burst = _Burst(self._submitted + n, threads)
            self._bursts[id(burst)] = burst
        try:
            yield
        finally:
            with self._lock:
                del self._bursts[id(burst)]

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
            batch, stop = self._gather(first)
            try:
                self._run(batch)
            except BaseException:  # an interrupt: its callers have it; the next submit starts a new worker
                return
            if stop:
                return

    def _gather(self, first: _Item) -> tuple[list[_Item], bool]:
        """The batch that starts with `first`, and whether a stop request ended it.

        Gathers while requests keep arriving (each one extends the wait by `max_wait_ms`), up to
        `max_gather_ms` and `max_batch_size`: callers released together by the previous batch
        re-submit in a burst. While an announced burst (`expect`) is still arriving, it waits up to
        `expect_wait_ms` for each next item and takes them all.
        """
        batch = [first]
        start = time.monotonic()
        deadline = start + self.max_wait_ms / 1000
        cap = start + max(self.max_gather_ms, self.max_wait_ms) / 1000
        while True:
            with self._lock:
                # the bursts the next item belongs to, and the most items they can have in flight
                bursts = [b for b in self._bursts.values() if batch[-1].seq + 1 < b.until]
                wave = min((b.threads for b in bursts if b.threads is not None), default=None)
            announced = bool(bursts)
            if announced and wave is not None and len(batch) >= wave:
                break  # every thread of the burst is waiting on this batch: nothing more can come
            if announced:
                timeout = self.expect_wait_ms / 1000
            elif len(batch) < self.max_batch_size:
                timeout = min(deadline, cap) - time.monotonic()
            else:
                break
            try:
                item = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                return batch, True
            batch.append(item)
            deadline = time.monotonic() + self.max_wait_ms / 1000
        return batch, False

    def _run(self, batch: list[_Item]) -> None:
        live = [it for it in batch if it.future.set_running_or_notify_cancel()]
        if not live:
            return
        self.batch_sizes.append(len(live))
        with self._stats_lock:
            self._stats.add(len(live))
        try:
            results = self.run_batch([it.payload for it in live])
            if len(results) != len(live):
                raise RuntimeError(f"run_batch returned {len(results)} results for {len(live)} items")
        except Exception as err:  # noqa: BLE001 - every error is handed to its caller
            if len(live) == 1:
                live[0].future.set_exception(err)
                return
            logger.debug("batch of %d failed (%s); retrying one by one", len(live), err)
            for it in live:
                try:
                    it.future.set_result(self.run_batch([it.payload])[0])
                except Exception as single_err:  # noqa: BLE001
                    it.future.set_exception(single_err)
            return
        except BaseException as stop:  # KeyboardInterrupt, SystemExit: no retries, every caller hears at once
            for it in live:
                it.future.set_exception(stop)
            raise
        for it, res in zip(live, results, strict=True):
            it.future.set_result(res)
