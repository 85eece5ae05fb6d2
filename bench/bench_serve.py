"""Serving throughput: `reasoning-dspy serve` under concurrent clients against the same requests sent
one at a time, with p50/p95 latency, on loopback.

    python bench/bench_serve.py                                   # tiny-random + tiny-planted
    python bench/bench_serve.py --model smollm2-reasoner --requests 48 --max-tokens 32 --concurrency 1,8,24,48
    python bench/bench_serve.py --device cuda --json runs/bench/serve.json   # a server on the GPU, figures as JSON

The server runs in its own process (`reasoning-dspy serve`, as users start it), the clients in this
one (`httpx.AsyncClient`, one connection per client). Every level sends the same requests (distinct
bundled prompts, greedy, half of them steered — a mixed batch), so the outputs and token counts
match across levels; the script checks that and reports how many answers equal the serial ones.
Concurrency 1 is the serial baseline; each level's ratio is against it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
from _result import Ratio, ResultWriter, Table, add_result_args, check_device_arg

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
METHOD = ("`reasoning-dspy serve` started as users start it (its own process, `--max-batch-size` as set), clients in the "
          "benchmark's process (`httpx.AsyncClient`, one connection per client) on 127.0.0.1. Every concurrency "
          "level sends the same requests: distinct bundled prompts, greedy, every other one steered, so each batch "
          "mixes steered and unsteered rows. Concurrency 1 (one request at a time) is the serial baseline; ratios "
          "are against it, measured in the same run, and every level's answers are compared with the serial ones.")
STEERING = {"tiny-random": {"features": {"5": 0.5}, "units": "residual"},
            "smollm2-reasoner": {"top": 3, "strength": 0.2, "units": "residual"}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args: argparse.Namespace, port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "reasoning_dspy.cli", "serve", "--model", args.model, "--port", str(port),
           "--max-queue", "1024", "--max-batch-size", str(args.max_batch_size), "--log-level", "warning",
           "--device", args.device]
    if args.sae:
        cmd += ["--sae", args.sae]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited: {proc.stderr.read()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.terminate()
    raise TimeoutError("the server did not start within 300 s")


def requests_for(args: argparse.Namespace) -> list[dict]:
    from reasoning_dspy.prompts import load_prompts

    prompts = load_prompts("bundled", limit=args.requests)
    steering = STEERING.get(args.model)
    return [{"model": args.model, "messages": [{"role": "user", "content": p}], "max_tokens": args.max_tokens,
             "temperature": 0.0, "steering": steering if i % 2 else None} for i, p in enumerate(prompts)]


async def run_level(url: str, bodies: list[dict], concurrency: int) -> dict:
    """Send every body with `concurrency` clients pulling from one queue; wall time and latencies."""
    work: asyncio.Queue = asyncio.Queue()
    for i, body in enumerate(bodies):
        work.put_nowait((i, body))
    latencies, texts, tokens = [0.0] * len(bodies), [""] * len(bodies), [0] * len(bodies)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as http:
        async def client() -> None:
            while not work.empty():
                i, body = work.get_nowait()
                start = time.perf_counter()
                response = await http.post("/v1/chat/completions", json=body)
                latencies[i] = time.perf_counter() - start
                response.raise_for_status()
                out = response.json()
                texts[i], tokens[i] = out["choices"][0]["message"]["content"], out["usage"]["completion_tokens"]

        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    ordered = sorted(latencies)
    return {"concurrency": concurrency, "wall_s": wall, "requests_per_s": len(bodies) / wall,
            "tokens_per_s": sum(tokens) / wall, "tokens": sum(tokens),
            "p50_s": statistics.median(ordered), "p95_s": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
            "texts": texts}


def batch_stats(url: str) -> tuple[int, float]:
    count = total = 0.0
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith("reasoning_dspy_batch_size_count "):
            count = float(line.split()[-1])
        if line.startswith("reasoning_dspy_batch_size_sum "):
            total = float(line.split()[-1])
    return int(count), total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny-random")
    parser.add_argument("--sae", default=None, help="default: tiny-planted for tiny-random, the shipped SAE otherwise")
    parser.add_argument("--requests", type=int, default=256)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--concurrency", default="1,4,16,64", help="comma-separated; 1 is the serial baseline")
    parser.add_argument("--max-batch-size", type=int, default=32)
    add_result_args(parser)
    args = parser.parse_args()
    check_device_arg(parser, args.device)
    out = ResultWriter.from_args(args, "serve")
    if args.sae is None and args.model == "tiny-random":
        args.sae = "tiny-planted"
    levels = sorted({int(c) for c in args.concurrency.split(",")} | {1})
    bodies = requests_for(args)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(args, port)
    try:
        httpx.post(f"{url}/v1/chat/completions", json=bodies[0], timeout=600).raise_for_status()  # warm-up
        results = []
        for level in levels:
            before = batch_stats(url)
            result = asyncio.run(run_level(url, bodies, level))
            after = batch_stats(url)
            batches = after[0] - before[0]
            result["mean_batch"] = (after[1] - before[1]) / batches if batches else 0.0
            results.append(result)
            print(f"concurrency {level:>3}: {result['requests_per_s']:.2f} req/s, {result['tokens_per_s']:.1f} tok/s, "
                  f"p50 {result['p50_s'] * 1000:.0f} ms, p95 {result['p95_s'] * 1000:.0f} ms, "
                  f"mean batch {result['mean_batch']:.1f}", flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)
    serial = results[0]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print(f"\n{args.model} ({args.sae or 'its shipped SAE'}), {args.requests} requests × max_tokens {args.max_tokens}, half steered, greedy; "
          f"server max_batch_size {args.max_batch_size}; {os.cpu_count()} CPUs ({cpu}), load average {load:.2f}\n")
    print("| concurrency | requests/s | tokens/s | p50 latency | p95 latency | mean batch | throughput vs serial | p50 vs serial | same answers as serial |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        same = sum(a == b for a, b in zip(r["texts"], serial["texts"], strict=True))
        print(f"| {r['concurrency']} | {r['requests_per_s']:.2f} | {r['tokens_per_s']:.1f} | {r['p50_s'] * 1000:.0f} ms | "
              f"{r['p95_s'] * 1000:.0f} ms | {r['mean_batch']:.1f} | **{r['tokens_per_s'] / serial['tokens_per_s']:.2f}×** | "
              f"{r['p50_s'] / serial['p50_s']:.2f}× | {same}/{len(r['texts'])} |")
    case = f"{args.model}, {args.requests} requests × max_tokens {args.max_tokens}"
    ratios = [Ratio(label=f"{r['concurrency']} concurrent clients vs serial, tokens/s", case=case,
                    ours=r["tokens_per_s"], baseline=serial["tokens_per_s"], unit="tokens/s", summary=False)
              for r in results[1:]]
    if ratios:
        max(ratios, key=lambda r: r.ratio).summary = True  # the summary shows the best level, named in its label
    rows = [[r["concurrency"], r["requests_per_s"], r["tokens_per_s"], 1000 * r["p50_s"], 1000 * r["p95_s"],
             r["mean_batch"], f"**{r['tokens_per_s'] / serial['tokens_per_s']:.2f}×**",
             f"{r['p50_s'] / serial['p50_s']:.2f}×",
             f"{sum(a == b for a, b in zip(r['texts'], serial['texts'], strict=True))}/{len(r['texts'])}"]
            for r in results]
    out.write(title="Serving over HTTP", compares="concurrent clients vs one request at a time", method=METHOD,
              settings={"model": args.model, "sae": args.sae or "its shipped SAE", "requests": args.requests,
                        "max_tokens": args.max_tokens, "concurrency": levels, "max_batch_size": args.max_batch_size,
                        "steering": STEERING.get(args.model), "device": args.device},
              ratios=ratios,
              tables=[Table(columns=["concurrency", "requests/s", "tokens/s", "p50 latency (ms)", "p95 latency (ms)",
                                     "mean batch", "throughput vs serial", "p50 vs serial", "same answers as serial"],
                            rows=rows)],
              figures={"results": [{k: v for k, v in r.items() if k != "texts"} for r in results]})


if __name__ == "__main__":
    main()
