"""ReasonScore throughput and peak memory: streaming `score_features` vs the obvious alternative.

The alternative loads the whole cache, encodes every token at once and takes the masked means —
memory grows with the number of tokens. `score_features` streams shard by shard and keeps only
O(d_sae · |R|) sums. Two synthetic caches (cache format, bf16, tiny-random token ids with
reasoning words sprinkled in) differing 8x in size are scored, each run in a fresh subprocess so
its peak RSS (`ru_maxrss`, which sees torch's allocations) is its own.

    python bench/bench_reasonscore.py            # 16k and 131k tokens, d_in 512, d_sae 2048
    python bench/bench_reasonscore.py --small 4096 --d-sae 2048
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

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WORDS = "the cat sat on a mat we add two numbers and get ten so it is done here now".split()
REASONING = ["wait", "Wait", "but", "hmm", "let me", "Let me", "therefore", "however", "maybe", "perhaps",
             "alternatively", "another"]


def write_synthetic_cache(path: Path, n_tokens: int, d_in: int, seed: int = 0, shard_tokens: int = 8192) -> None:
    """A cache of `n_tokens` random bf16 activations over tokenized synthetic prompts."""
    import torch
    from safetensors.torch import save

    from reasoning_dspy.activations import CacheManifest, ShardInfo
    from reasoning_dspy.tiny import build_tokenizer

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


def naive_scores(cache, sae, tokenizer):
    """The obvious alternative: everything in memory at once."""
    import torch

    from reasoning_dspy.features.reasonscore import reason_score, shard_windows
    from reasoning_dspy.features.vocab import Vocabulary

    data = cache.load()
    with torch.inference_mode():
        latents = sae.unit_norm_view().encode(data["acts"].float())  # [n_tokens, d_sae]
    window = shard_windows(Vocabulary.default().matcher(tokenizer), data, 1, 2).float()  # [n, G]
    pos = window.amax(dim=1).bool()
    mu_group = (window.T @ latents / window.sum(0).clamp_min(1)[:, None]).T
    score, _ = reason_score(mu_group, latents[pos].mean(0), latents[~pos].mean(0))
    max_activation, density = latents.amax(0), (latents > 0).float().mean(0)  # also part of FeatureScores
    return score, max_activation, density


def child(mode: str, cache_dir: str, d_sae: int) -> None:
    import warnings

    import torch

    from reasoning_dspy.activations import ActivationCache
    from reasoning_dspy.features.reasonscore import score_features
    from reasoning_dspy.tiny import build_tokenizer

    warnings.simplefilter("ignore")
    torch.set_num_threads(2)
    cache = ActivationCache(cache_dir)
    sae = make_sae(cache.d_model, d_sae)
    tokenizer = build_tokenizer()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    if mode == "streaming":
        score = score_features(cache, sae, tokenizer=tokenizer, batch_size=4096, progress=False).reason_score
    else:
        score = naive_scores(cache, sae, tokenizer)[0]
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"mode": mode, "tokens": cache.n_tokens, "seconds": seconds, "peak_mb": peak,
                      "import_mb": base, "top": int(score.argmax())}))


def run_child(mode: str, cache_dir: Path, d_sae: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", mode, str(cache_dir), "--d-sae", str(d_sae)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", type=int, default=16_384, help="tokens in the small cache (the large has 8x)")
    ap.add_argument("--d-in", type=int, default=512)
    ap.add_argument("--d-sae", type=int, default=2048)
    ap.add_argument("--shard-tokens", type=int, default=8192, help="tokens per cache shard")
    ap.add_argument("--child", nargs=2, metavar=("MODE", "CACHE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.d_sae)
        return
    print(f"ReasonScore bench: d_in {args.d_in}, d_sae {args.d_sae} (TopK k=32), bf16 cache in shards of "
          f"{args.shard_tokens} tokens, batches of 4096 tokens, 2 torch threads")
    print(f"{'tokens':>8} {'mode':>10} {'tok/s':>9} {'peak RSS MB':>12} {'above import MB':>16}")
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in (args.small, 8 * args.small):
            cache_dir = Path(tmp) / f"cache_{n}"
            write_synthetic_cache(cache_dir, n, args.d_in, shard_tokens=args.shard_tokens)
            for mode in ("streaming", "naive"):
                r = run_child(mode, cache_dir, args.d_sae)
                rows[(n, mode)] = r
                print(f"{r['tokens']:>8} {mode:>10} {r['tokens'] / r['seconds']:>9.0f} {r['peak_mb']:>12.0f} "
                      f"{r['peak_mb'] - r['import_mb']:>16.0f}")
            assert rows[(n, "streaming")]["top"] == rows[(n, "naive")]["top"], "streaming and naive disagree"
    small, large = args.small, 8 * args.small
    for mode in ("streaming", "naive"):
        growth = rows[(large, mode)]["peak_mb"] / rows[(small, mode)]["peak_mb"]
        print(f"{mode}: peak memory x{growth:.2f} for 8x the tokens")
    s, v = rows[(large, "streaming")], rows[(large, "naive")]
    print(f"at {large} tokens: streaming/naive speed {v['seconds'] / s['seconds']:.2f}x, "
          f"peak memory {s['peak_mb'] / v['peak_mb']:.2f}x of naive")


if __name__ == "__main__":
    main()
