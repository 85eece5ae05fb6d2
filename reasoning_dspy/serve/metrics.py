"""Prometheus-style counters and gauges for `/metrics` (text exposition format 0.0.4).

Queue depth (rows waiting in the engine) and admitted rows, the engine's batch sizes, tokens
generated and their rate over the last `window_s` seconds, requests by endpoint and status with
their latency, refusals (queue full) and cancellations (client gone).
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque

from reasoning_dspy.engine.microbatcher import BatchStats

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class Metrics:
    """Thread-safe counters; `render(...)` adds the engine's live gauges."""

    def __init__(self, window_s: float = 30.0):
        self.window_s = window_s
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._requests: Counter[tuple[str, int]] = Counter()
        self._latency_sum: Counter[str] = Counter()
        self._latency_count: Counter[str] = Counter()
        self._cancelled: Counter[str] = Counter()
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self._recent: deque[tuple[float, int]] = deque()  # (time, tokens) of finished rows

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        with self._lock:
            self._requests[(endpoint, status)] += 1
            self._latency_sum[endpoint] += seconds
            self._latency_count[endpoint] += 1

    def observe_tokens(self, prompt: int, completion: int) -> None:
        now = time.monotonic()
        with self._lock:
            self.prompt_tokens += prompt
            self.completion_tokens += completion
            self._recent.append((now, completion))
            self._trim(now)

    def observe_cancel(self, stage: str) -> None:
        """`stage`: "queued" (dropped before it ran) or "running" (stopped at its next decoding step)."""
        with self._lock:
            self._cancelled[stage] += 1

    def tokens_per_second(self) -> float:
        now = time.monotonic()
        with self._lock:
            self._trim(now)
            span = min(self.window_s, max(now - self.started, 1e-3))
            return sum(n for _, n in self._recent) / span

    def _trim(self, now: float) -> None:
        while self._recent and self._recent[0][0] < now - self.window_s:
            self._recent.popleft()

    def render(self, *, queue_depth: int, admitted: int, capacity: int, rejected: int, batches: BatchStats) -> str:
        """The exposition text; its cost does not grow with the number of requests or batches served."""
        lines: list[str] = []

        def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
            # a sample's "labels" may start with a suffix: `_bucket{le="1"}`, `_sum{...}`
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            lines.extend(f"{name}{labels} {_num(value)}" for labels, value in samples)

        metric("reasoning_dspy_queue_depth", "gauge", "Generation rows waiting for the engine's next batch.",
               [("", queue_depth)])
        metric("reasoning_dspy_admitted_rows", "gauge", "Generation rows admitted (queued + running).",
               [("", admitted)])
        metric("reasoning_dspy_queue_capacity", "gauge", "Rows admitted at most; more get 503.", [("", capacity)])
        metric("reasoning_dspy_rejected_total", "counter", "Requests refused with 503 (queue full).",
               [("", rejected)])
        metric("reasoning_dspy_batch_size_last", "gauge", "Rows in the engine's most recent batch.",
               [("", batches.last)])
        buckets = [(f'{{le="{b}"}}', sum(n for size, n in batches.by_size.items() if size <= b)) for b in BATCH_BUCKETS]
        metric("reasoning_dspy_batch_size", "histogram", "Rows per engine batch.",
               [*[("_bucket" + lb, v) for lb, v in buckets], ('_bucket{le="+Inf"}', batches.count),
                ("_sum", batches.rows), ("_count", batches.count)])
        with self._lock:
            requests = sorted(self._requests.items())
            lat = sorted(self._latency_count)
            lat_sum, lat_count = dict(self._latency_sum), dict(self._latency_count)
            cancelled = sorted(self._cancelled.items())
            prompt, completion = self.prompt_tokens, self.completion_tokens
        metric("reasoning_dspy_prompt_tokens_total", "counter", "Prompt tokens of answered requests.",
               [("", prompt)])
        metric("reasoning_dspy_generated_tokens_total", "counter", "Tokens generated.", [("", completion)])
        metric("reasoning_dspy_tokens_per_second", "gauge",
               f"Tokens generated per second over the last {self.window_s:g} s.", [("", self.tokens_per_second())])
        metric("reasoning_dspy_requests_total", "counter", "Requests by endpoint and HTTP status.",
               [(f'{{endpoint="{e}",status="{s}"}}', n) for (e, s), n in requests])
        metric("reasoning_dspy_request_seconds", "summary", "Request latency by endpoint.",
               [x for e in lat for x in ((f'_sum{{endpoint="{e}"}}', lat_sum[e]),
                                         (f'_count{{endpoint="{e}"}}', lat_count[e]))])
        metric("reasoning_dspy_cancelled_total", "counter",
               "Rows whose client went away: queued ones are dropped, running ones stop at their next decoding step.",
               [(f'{{stage="{s}"}}', n) for s, n in cancelled])
        metric("reasoning_dspy_uptime_seconds", "gauge", "Seconds since the server started.",
               [("", time.monotonic() - self.started)])
        return "\n".join(lines) + "\n"


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.6g}"

