"""ReasonScore throughput and peak memory: streaming `score_features` vs the obvious alternative.

The alternative loads the whole cache, encodes every token at once and takes the masked means —
memory grows with the number of tokens. `score_features` streams shard by shard and keeps only
O(d_sae · |R|) sums. Two synthetic caches (cache format, bf16, tiny-random token ids with
reasoning words sprinkled in) differing 8x in size are scored, each run in a fresh subprocess so
its peak RSS (`ru_maxrss`, which sees torch's allocations) is its own.

    python bench/bench_reasonscore.py            # 16k and 131k tokens, d_in 512, d_sae 2048
    python bench/bench_reasonscore.py --small 4096 --d-sae 2048
    python bench/bench_reasonscore.py --device cuda --json runs/bench/reasonscore.json

On a GPU, the latents live on the device: the memory that grows is then the GPU's, reported as
`torch.cuda.max_memory_allocated` next to the host's RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _result import Ratio, ResultWriter, Table, add_result_args  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WORDS = "the cat sat on a mat we add two numbers and get ten so it is done here now".split()
REASONING = ["wait", "Wait", "but", "hmm", "let me", "Let me", "therefore", "however", "maybe", "perhaps",
             "alternatively", "another"]
METHOD = ("Streaming `score_features` against the obvious alternative (load the whole cache, encode every token "
          "at once, masked means), on two synthetic caches 8× apart in size: bf16 activations in cache format, "
          "tiny-random token ids with reasoning words sprinkled in, a TopK SAE (k 32), batches of 4,096 tokens, "
          "2 torch threads. Each run is a fresh subprocess, so its peak memory (`ru_maxrss`, which sees torch's "
          "allocations) is its own; \"above import\" subtracts the RSS after imports. Both must pick the same "
          "top feature.")


def write_synthetic_cache(path: Path, n_tokens: int, d_in: int, seed: int = 0, shard_tokens: int = 8192) -> None:
    """A cache of `n_tokens` random bf16 activations over tokenized synthetic prompts."""
    import torch
    from safetensors.torch import save

    from reasoning_dspy.activations import CacheManifest, ShardInfo
    from reasoning_dspy.models.tiny import build_tokenizer

    tok = build_tokenizer()
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    path.mkdir(parents=True, exist_ok=True)
    shards, prompts, buf, done, seq = [], [], [], 0, 0

    def flush(start: int) -> None:
        ids = torch.cat([b[0] for b in buf])
        n = len(ids)
        data = save({"acts": torch.randn(n, d_in, generator=gen).to(torch.bfloat16),
                     "token_ids": ids.to(torch.int32), "seq_ids": torch.cat([b[1] for b in buf]),
                     "positions": torch.cat([b[2] for b in buf]).to(torch.int32)})
        name = f"shard_{len(shards):05d}.safetensors"
        (path / name).write_bytes(data)
        shards.append(ShardInfo(file=name, n_tokens=n, prompt_start=start, prompt_end=seq, n_bytes=len(data)))

    start = 0
    while done < n_tokens:
        text = " ".join(rng.choice(REASONING) if rng.random() < 0.08 else rng.choice(WORDS) for _ in range(60))
        ids = torch.tensor(tok(text, add_special_tokens=False)["input_ids"][: n_tokens - done])
        buf.append((ids, torch.full((len(ids),), seq, dtype=torch.int64), torch.arange(1, len(ids) + 1)))
        prompts.append(text)
        done += len(ids)
        seq += 1
        if sum(len(b[0]) for b in buf) >= shard_tokens or done >= n_tokens:
            flush(start)
            buf, start = [], seq
    manifest = CacheManifest(model="tiny-random", layer=2, d_model=d_in, dtype="bfloat16", max_length=256,
                             batch_size=16, keep_special_tokens=False, n_prompts=seq, prompts_sha256="synthetic",
                             shards=shards, complete=True)
    (path / "manifest.json").write_text(manifest.model_dump_json())
    (path / "prompts.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))


def make_sae(d_in: int, d_sae: int):
    import torch

    from reasoning_dspy.sae import SAE, SAEConfig

    torch.manual_seed(0)
    return SAE.from_config(SAEConfig(architecture="topk", k=32, d_in=d_in, d_sae=d_sae))


def naive_scores(cache, sae, tokenizer, device: str = "cpu"):
    """The obvious alternative: everything in memory at once."""
    import torch

    from reasoning_dspy.features.reasonscore import reason_score, shard_windows
    from reasoning_dspy.features.vocab import Vocabulary

    data = cache.load()
    with torch.inference_mode():
        latents = sae.unit_norm_view().to(device).encode(data["acts"].to(device).float())  # [n_tokens, d_sae]
    window = shard_windows(Vocabulary.default().matcher(tokenizer), data, 1, 2).float().to(device)  # [n, G]
    pos = window.amax(dim=1).bool()
    mu_group = (window.T @ latents / window.sum(0).clamp_min(1)[:, None]).T
    score, _ = reason_score(mu_group, latents[pos].mean(0), latents[~pos].mean(0))
    max_activation, density = latents.amax(0), (latents > 0).float().mean(0)  # also part of FeatureScores
    return score, max_activation, density


def child(mode: str, cache_dir: str, d_sae: int, device: str) -> None:
    import warnings

    import torch

    from reasoning_dspy.activations import ActivationCache
    from reasoning_dspy.features.reasonscore import score_features
    from reasoning_dspy.models.tiny import build_tokenizer

    warnings.simplefilter("ignore")
    torch.set_num_threads(2)
    cache = ActivationCache(cache_dir)
    sae = make_sae(cache.d_model, d_sae)
    tokenizer = build_tokenizer()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cuda = device.startswith("cuda")
    if cuda:
        torch.zeros(1, device=device)  # CUDA context outside the timing
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    if mode == "streaming":
        score = score_features(cache, sae, tokenizer=tokenizer, batch_size=4096, device=device,
                               progress=False).reason_score
    else:
        score = naive_scores(cache, sae, tokenizer, device)[0]
    top = int(score.argmax())  # a host read: waits for the device
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    gpu_mb = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None
    print(json.dumps({"mode": mode, "tokens": cache.n_tokens, "seconds": seconds, "peak_mb": peak,
                      "import_mb": base, "gpu_peak_mb": gpu_mb, "top": top}))


def run_child(mode: str, cache_dir: Path, d_sae: int, device: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", mode, str(cache_dir), "--d-sae", str(d_sae),
                          "--device", device], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"the {mode} run failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", type=int, default=16_384, help="tokens in the small cache (the large has 8x)")
    ap.add_argument("--d-in", type=int, default=512)
    ap.add_argument("--d-sae", type=int, default=2048)
    ap.add_argument("--shard-tokens", type=int, default=8192, help="tokens per cache shard")
    ap.add_argument("--child", nargs=2, metavar=("MODE", "CACHE"), help=argparse.SUPPRESS)
    add_result_args(ap)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.d_sae, args.device)
        return
    from _result import check_device_arg

    check_device_arg(ap, args.device)
    out = ResultWriter.from_args(args, "reasonscore")
    print(f"ReasonScore bench: d_in {args.d_in}, d_sae {args.d_sae} (TopK k=32), bf16 cache in shards of "
          f"{args.shard_tokens} tokens, batches of 4096 tokens, 2 torch threads, device {args.device}")
    print(f"{'tokens':>8} {'mode':>10} {'tok/s':>9} {'peak RSS MB':>12} {'above import MB':>16}"
          + (f" {'GPU peak MB':>12}" if args.device != "cpu" else ""))
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in (args.small, 8 * args.small):
            cache_dir = Path(tmp) / f"cache_{n}"
            write_synthetic_cache(cache_dir, n, args.d_in, shard_tokens=args.shard_tokens)
            for mode in ("streaming", "naive"):
                r = run_child(mode, cache_dir, args.d_sae, args.device)
                rows[(n, mode)] = r
                print(f"{r['tokens']:>8} {mode:>10} {r['tokens'] / r['seconds']:>9.0f} {r['peak_mb']:>12.0f} "
                      f"{r['peak_mb'] - r['import_mb']:>16.0f}"
                      + (f" {r['gpu_peak_mb']:>12.0f}" if r["gpu_peak_mb"] is not None else ""), flush=True)
            assert rows[(n, "streaming")]["top"] == rows[(n, "naive")]["top"], "streaming and naive disagree"
    small, large = args.small, 8 * args.small
    for mode in ("streaming", "naive"):
        growth = rows[(large, mode)]["peak_mb"] / rows[(small, mode)]["peak_mb"]
        print(f"{mode}: peak memory x{growth:.2f} for 8x the tokens")
    s, v = rows[(large, "streaming")], rows[(large, "naive")]
    print(f"at {large} tokens: streaming/naive speed {v['seconds'] / s['seconds']:.2f}x, "
          f"peak memory {s['peak_mb'] / v['peak_mb']:.2f}x of naive")

    case = f"{large:,} tokens, d_in {args.d_in}, d_sae {args.d_sae}"
    ratios = [Ratio(label="streaming vs load-everything speed", case=case, ours=s["tokens"] / s["seconds"],
                    baseline=v["tokens"] / v["seconds"], unit="tokens/s"),
              Ratio(label="streaming vs load-everything peak memory above import", case=case,
                    ours=s["peak_mb"] - s["import_mb"], baseline=v["peak_mb"] - v["import_mb"], unit="MB (RSS)",
                    higher_is_better=False)]
    if s["gpu_peak_mb"] is not None:
        ratios.append(Ratio(label="streaming vs load-everything GPU peak memory", case=case, ours=s["gpu_peak_mb"],
                            baseline=v["gpu_peak_mb"], unit="MB (GPU)", higher_is_better=False))
    columns = ["tokens", "mode", "tokens/s", "peak RSS (MB)", "above import (MB)"]
    if s["gpu_peak_mb"] is not None:
        columns.append("GPU peak (MB)")
    table = [[r["tokens"], mode, r["tokens"] / r["seconds"], r["peak_mb"], r["peak_mb"] - r["import_mb"],
              *([r["gpu_peak_mb"]] if r["gpu_peak_mb"] is not None else [])] for (_, mode), r in rows.items()]
    growth = {mode: rows[(large, mode)]["peak_mb"] / rows[(small, mode)]["peak_mb"] for mode in ("streaming", "naive")}
    out.write(title="ReasonScore", compares="streaming score_features vs load-everything", method=METHOD,
              settings={"small_tokens": small, "large_tokens": large, "d_in": args.d_in, "d_sae": args.d_sae,
                        "k": 32, "shard_tokens": args.shard_tokens, "batch_tokens": 4096, "device": args.device},
              ratios=ratios, tables=[Table(columns=columns, rows=table)],
              notes=[f"Peak RSS for 8× the tokens: streaming ×{growth['streaming']:.2f}, naive ×{growth['naive']:.2f}.",
                     "Both pick the same top feature at both sizes."])


if __name__ == "__main__":
    main()
