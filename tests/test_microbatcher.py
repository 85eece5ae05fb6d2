"""`MicroBatcher` on its own: bounded batch counters, and announced bursts that arrive in waves."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from reasoning_dspy.engine.microbatcher import BatchStats, MicroBatcher
from reasoning_dspy.serve.metrics import Metrics


def test_batch_counters_stay_bounded_however_many_batches_run():
    batcher = MicroBatcher(lambda batch: batch, max_batch_size=1, max_wait_ms=0, recent=50)
    for f in [batcher.submit(i) for i in range(3000)]:
        f.result()
    batcher.close()
    stats = batcher.stats
    assert len(batcher.batch_sizes) == 50  # only the most recent sizes are kept
    assert stats.count == 3000 and stats.rows == 3000 and stats.last == 1 and dict(stats.by_size) == {1: 3000}


def test_metrics_render_in_constant_time_from_the_counters():
    """Two million batches cost /metrics no more than two."""
    many, few = BatchStats(), BatchStats()
    many.count, many.rows, many.last, many.by_size[16] = 2_000_000, 32_000_000, 16, 2_000_000
    few.add(16), few.add(16)
    metrics = Metrics()

    def render(stats: BatchStats) -> tuple[float, str]:
        start = time.perf_counter()
        text = metrics.render(queue_depth=0, admitted=0, capacity=8, rejected=0, batches=stats)
        return time.perf_counter() - start, text

    seconds, text = render(many)
    assert 'reasoning_dspy_batch_size_bucket{le="16"} 2000000' in text and "reasoning_dspy_batch_size_sum 32000000" in text
    assert seconds < 0.05, f"{seconds:.3f} s"


def test_a_burst_from_fewer_threads_than_calls_runs_in_waves_without_stalling():
    """24 announced calls on 8 threads: each wave of 8 runs as soon as it is in, instead of waiting
    `expect_wait_ms` (1 s) for a ninth call that cannot come until the wave is answered."""
    gathered: list[int] = []

    def run(batch):
        gathered.append(len(batch))
        return [x * 10 for x in batch]

    batcher = MicroBatcher(run, max_batch_size=4, max_wait_ms=1, max_gather_ms=5, expect_wait_ms=1000)
    start = time.perf_counter()
    with batcher.expect(24, threads=8), ThreadPoolExecutor(8) as pool:
        results = list(pool.map(batcher, range(24)))
    elapsed = time.perf_counter() - start
    batcher.close()
    assert results == [x * 10 for x in range(24)]
    assert gathered == [8, 8, 8] and elapsed < 0.9, (gathered, elapsed)


def test_a_short_burst_inside_a_long_one_leaves_the_long_one_announced():
    gathered: list[list[int]] = []

    def run(batch):
        gathered.append(sorted(batch))
        return batch

    batcher = MicroBatcher(run, max_batch_size=2, max_wait_ms=1, max_gather_ms=2)
    results = {}

    def call(x):
        time.sleep(0.02 * x)
        if x == 1:
            with batcher.expect(1):  # a caller announcing its own item, then waiting outside the block
                future = batcher.submit(x)
            results[x] = future.result()
        else:
            results[x] = batcher(x)

    with batcher.expect(4):
        threads = [threading.Thread(target=call, args=(x,)) for x in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    batcher.close()
    assert gathered == [[0, 1, 2, 3]] and results == {x: x for x in range(4)}
