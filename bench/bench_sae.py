"""TopK SAE training throughput and quality: ours vs SAELens 6.x, same sizes, data and dtype, same run.

    python bench/bench_sae.py                       # d_in 2048, d_sae 16384, k 32, batch 4096, fp32 + bf16
    python bench/bench_sae.py --tokens 98304 --dtypes float32
    python bench/bench_sae.py --cache runs/acts     # real cached activations instead of synthetic ones

Both trainers see the same activations in the same order, with a constant learning rate, no
warm-up/decay and AuxK at 1/32 (dead window = the whole run for both), and are timed end to end
(initialisation included). Runs alternate between the two libraries, so a busy machine slows both
alike; the printed ratio is the figure to read. FVU (variance about the mean) is measured on the
same held-out tokens for both final SAEs. bf16 means bf16 matmuls with float32 weights
(SAELens: `autocast=True`; ours: `compute_dtype="bfloat16"`).
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import platform
import time

import torch
import torch.nn.functional as F


def synthetic_acts(n: int, d_in: int, n_atoms: int, active: int, seed: int = 0) -> torch.Tensor:
    """`n` tokens, each `active` random unit atoms with magnitudes 1 + |N(0,1)|, plus a fixed offset,
    rescaled to mean norm √d_in (so neither library's input normalisation changes anything)."""
    g = torch.Generator().manual_seed(seed)
    atoms = F.normalize(torch.randn(n_atoms, d_in, generator=g), dim=1)
    idx = torch.randint(0, n_atoms, (n, active), generator=g)
    mags = 1.0 + torch.randn(n, active, generator=g).abs()
    x = F.embedding_bag(idx, atoms, per_sample_weights=mags, mode="sum")
    x += 3.0 * F.normalize(torch.randn(d_in, generator=g), dim=0)
    return x * (math.sqrt(d_in) / x.norm(dim=1).mean())


def fvu(x: torch.Tensor, recon: torch.Tensor) -> float:
    from reasoning_dspy.sae.evals import fvu as _fvu

    return _fvu(x, recon)


def run_ours(x: torch.Tensor, test: torch.Tensor, args, dtype: str) -> tuple[float, float]:
    from reasoning_dspy.sae import SAETrainConfig, train_sae

    cfg = SAETrainConfig(arch="topk", d_sae=args.d_sae, k=args.k, batch_size=args.batch, tokens=args.tokens,
                         lr=args.lr, lr_warmup_frac=0.0, lr_decay_frac=0.0, compute_dtype=dtype,
                         dead_tokens=args.tokens + 1, log_every=10**9, b_dec_init="geometric_median",
                         init_tokens=4096)
    start = time.perf_counter()
    result = train_sae(cfg, x, progress=False)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        recon = torch.cat([result.sae(t)[1] for t in test.split(4096)])
    return args.tokens / seconds, fvu(test, recon)


def run_saelens(x: torch.Tensor, test: torch.Tensor, args, dtype: str) -> tuple[float, float]:
    from sae_lens.config import LoggingConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.training.sae_trainer import SAETrainer, SAETrainerConfig

    torch.manual_seed(0)
    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=args.d_in, d_sae=args.d_sae, k=args.k,
                                                aux_loss_coefficient=1 / 32))
    n_steps = args.tokens // args.batch

    def batches():
        gen = torch.Generator().manual_seed(0)
        while True:
            perm = torch.randperm(len(x), generator=gen)
            for i in range(len(x) // args.batch):
                yield x[perm[i * args.batch:(i + 1) * args.batch]]

    cfg = SAETrainerConfig(total_training_samples=args.tokens, train_batch_size_samples=args.batch, lr=args.lr,
                           lr_end=args.lr, autocast=dtype == "bfloat16", dead_feature_window=n_steps + 1,
                           feature_sampling_window=10**9, n_checkpoints=0, checkpoint_path=None,
                           save_final_checkpoint=False, logger=LoggingConfig(log_to_wandb=False))
    start = time.perf_counter()
    trainer = SAETrainer(cfg, sae, data_provider=batches())
    os.environ.setdefault("TQDM_DISABLE", "1")
    sae = trainer.fit()
    seconds = time.perf_counter() - start
    with torch.no_grad():
        recon = torch.cat([sae(t) for t in test.split(4096)])
    return args.tokens / seconds, fvu(test, recon)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=4096 * 12, help="training tokens per run")
    p.add_argument("--d-in", type=int, default=2048)
    p.add_argument("--d-sae", type=int, default=16384)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--dtypes", default="float32,bfloat16")
    p.add_argument("--repeats", type=int, default=1, help="alternating rounds per dtype")
    p.add_argument("--cache", default=None, help="train on this activation cache instead of synthetic data")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--skip-saelens", action="store_true")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ["TQDM_DISABLE"] = "1"

    if args.cache:
        from reasoning_dspy.activations import ActivationCache

        acts = ActivationCache(args.cache).load(("acts",))["acts"].float()
        args.d_in = acts.shape[1]
        test, x = acts[:4096], acts[4096:]
        source = f"cache {args.cache} ({len(acts)} tokens)"
    else:
        data = synthetic_acts(args.tokens + 4096, args.d_in, n_atoms=2 * args.d_sae, active=args.k)
        test, x = data[:4096], data[4096:]
        source = f"synthetic: {2 * args.d_sae} atoms, {args.k} active per token"
    print(f"TopK SAE d_in={args.d_in} d_sae={args.d_sae} k={args.k} batch={args.batch}, {args.tokens} tokens, "
          f"lr={args.lr}; data: {source}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    try:
        import sae_lens

        saelens_version = sae_lens.__version__
    except ImportError:
        saelens_version = None
        args.skip_saelens = True
        print("sae_lens is not installed: only our figures are printed (pip install sae-lens)")

    rows = []
    for dtype in args.dtypes.split(","):
        for rep in range(args.repeats):
            runs = [("ours", run_ours)] if args.skip_saelens else [("SAELens", run_saelens), ("ours", run_ours)]
            if rep % 2:
                runs.reverse()
            res = {}
            for name, fn in runs:
                gc.collect()
                tps, f = fn(x, test, args, dtype)
                res[name] = (tps, f)
                print(f"  {dtype:8s} {name:8s} {tps:9,.0f} tokens/s   FVU {f:.4f}", flush=True)
            rows.append((dtype, res))

    print()
    label = f"SAELens {saelens_version}" if saelens_version else "SAELens"
    print(f"| dtype | {label} tokens/s | ours tokens/s | ratio | {label} FVU | ours FVU |")
    print("|---|---:|---:|---:|---:|---:|")
    for dtype, res in rows:
        ours = res["ours"]
        if "SAELens" in res:
            sl = res["SAELens"]
            print(f"| {dtype} | {sl[0]:,.0f} | {ours[0]:,.0f} | **{ours[0] / sl[0]:.2f}×** | {sl[1]:.4f} | {ours[1]:.4f} |")
        else:
            print(f"| {dtype} | - | {ours[0]:,.0f} | - | - | {ours[1]:.4f} |")


if __name__ == "__main__":
    main()
