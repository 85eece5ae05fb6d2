"""TopK SAE training throughput and quality: ours vs SAELens 6.x, same sizes, data, dtype and AuxK, same run.

    python bench/bench_sae.py                       # d_in 2048, d_sae 16384, k 32, batch 4096, 12 steps
    python bench/bench_sae.py --tokens 98304 --dtypes float32
    python bench/bench_sae.py --cache runs/acts     # real cached activations instead of synthetic ones
    python bench/bench_sae.py --d-in 256 --d-sae 1024 --k 8 --atoms 1024 --active 8 --batch 1024 \\
        --lr 3e-3 --tokens 2097152 --pool 131072 --dead-steps 16   # long run, data the SAE can represent
    python bench/bench_sae.py --device cuda --json runs/bench/sae.json       # on a GPU, figures as JSON too

What is the same in both libraries:
- data: the same activations in the same order (epoch `e` is the permutation our trainer draws for
  it, replayed into SAELens' data provider), already scaled to mean norm √d_in by this script, with
  both libraries' own input scaling off (ours `normalize_inputs=False`, SAELens
  `normalize_activations="none"`);
- initial weights: identical (same seed; unit-norm Kaiming-uniform decoder rows, encoder = decoder
  transpose: SAELens `decoder_init_norm=1.0`), `b_dec` = 0 and `b_enc` = 0 (SAELens' trainer has no
  `b_dec` initialisation, so ours uses `b_dec_init="zeros"`);
- optimiser: Adam (0.9, 0.999), constant learning rate with no warm-up or decay, global
  gradient-norm clipping at 1;
- AuxK: coefficient 1/32, the top d_in/2 dead latents per token, loss scaled by min(dead/(d_in/2), 1),
  and the same dead-latent rule: a latent is dead once it has gone `--dead-steps` N whole steps
  without firing. SAELens counts its window in *steps* and calls a latent dead when the count
  *exceeds* the window, ours counts *tokens* and calls it dead when the count reaches `dead_tokens`,
  so N steps is `dead_feature_window=N-1` for SAELens and `dead_tokens=N*batch` for ours. Each run
  prints in how many steps AuxK was active (dead latents present, non-zero aux loss) and how many
  latents were dead, per library, so one can see that it fired;
- dtype: float32, or bf16 = bf16 matmuls with float32 weights (SAELens `autocast=True`: every
  matmul of its dense forward; ours `compute_dtype="bfloat16"`: the encoder matmul, the only dense
  one, while the sparse decoder and gradients stay float32). bf16 runs by default only on a CPU
  with AMX or AVX512-BF16; elsewhere torch's bf16 matmul is a generic fallback kernel hundreds of
  times slower than float32, and a bf16 run would time that kernel rather than either library.

What differs, by design of each library:
- decoder norm: ours keeps decoder rows at unit norm (gradient component along each row removed,
  rows renormalised after each step); SAELens' TopK default (`rescale_acts_by_decoder_norm=True`)
  leaves the norms free and divides them out (pre-activations multiplied by the row norm for the
  top-k choice, latents divided by it before decoding). Both reconstruct with unit-norm directions,
  and from identical weights the first step computes the same loss and gradients;
- AuxK on dead latents with a negative pre-activation: ours ReLUs the AuxK latents (as Gao et al.
  2024), SAELens 6.54 decodes the raw top-k_aux dead pre-activations, negative ones included;
- the implementation: ours is the sparse fast path (only the encoder forward is a dense matmul),
  SAELens computes dense `[batch, d_sae]` latents; ours uses fused Adam, SAELens the default one.

Both are timed end to end: SAELens from building the SAE to the end of `fit()`, ours the whole
`train_sae` call, which also draws a 4,096-token sample and evaluates the SAE on it at the end.
Runs alternate between the two libraries in one process, so a busy machine slows both alike: the
printed ratio is the figure to read. FVU (variance about the mean) is measured the same way on the
same held-out tokens for both final SAEs.

Synthetic data: each token is `--active` (default k) random unit atoms out of `--atoms` (default
2 × d_sae, more directions than the SAE has latents, so a short run stays far from a low FVU), with
magnitudes 1 + |N(0,1)|, plus a fixed offset. `--pool` draws fewer distinct training tokens than
`--tokens` and trains several epochs over them (to keep memory down on long runs).
"""

from __future__ import annotations

import os

os.environ.setdefault("TQDM_DISABLE", "1")  # before torch imports tqdm: silences SAELens' progress bar

import argparse  # noqa: E402
import gc  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from _machine import cpu_features, cpu_model, has_bf16_matmul  # noqa: E402
from _result import Ratio, ResultWriter, Table, add_result_args, check_device_arg, sync  # noqa: E402

METHOD = ("TopK SAE training, ours (`train_sae`, sparse fast path) against SAELens (`TopKTrainingSAE` driven by its "
          "`SAETrainer` with an in-memory data provider), run alternately in one process on the same activations "
          "in the same order, with identical initial weights (unit-norm decoder rows, encoder = decoderᵀ, "
          "`b_dec` = 0), no input scaling in either (the data is scaled once to mean norm √d_in), Adam with a "
          "constant learning rate and gradient clipping at 1, and AuxK at 1/32 with the same dead-latent window "
          "(a latent is dead after `dead_steps` whole steps without firing). What differs by design: ours keeps "
          "decoder rows at unit norm, SAELens divides free norms out; ours ReLUs the AuxK latents; ours is "
          "sparse after the encoder matmul and uses fused Adam. Both are timed end to end, initialisation "
          "included (our final evaluation on a 4,096-token sample counts against us); FVU (variance about the "
          "mean) on the same 4,096 held-out tokens. Synthetic data: `active` random unit atoms of `atoms` per "
          "token (more directions than latents by default), magnitudes 1 + |N(0,1)|, plus a fixed offset. "
          "bf16 runs only where bf16 matmuls have hardware (GPU, AMX or AVX512-BF16) unless asked for.")


def synthetic_acts(n: int, d_in: int, n_atoms: int, active: int, seed: int = 0) -> torch.Tensor:
    """`n` tokens, each `active` random unit atoms with magnitudes 1 + |N(0,1)|, plus a fixed offset."""
    g = torch.Generator().manual_seed(seed)
    atoms = F.normalize(torch.randn(n_atoms, d_in, generator=g), dim=1)
    x = torch.empty(n, d_in)
    offset = 3.0 * F.normalize(torch.randn(d_in, generator=g), dim=0)
    for s in range(0, n, 65536):  # in chunks: the index and magnitude tensors are n × active
        m = min(65536, n - s)
        idx = torch.randint(0, n_atoms, (m, active), generator=g)
        mags = 1.0 + torch.randn(m, active, generator=g).abs()
        x[s:s + m] = F.embedding_bag(idx, atoms, per_sample_weights=mags, mode="sum") + offset
    return x


def cpu_info() -> tuple[str, bool]:
    """(CPU model, torch's kernel level, bf16 instructions), and whether the CPU has bf16 matmul
    instructions (AVX512-BF16 or AMX): without them torch's bf16 matmul is a slow fallback."""
    f = cpu_features()
    flags = ", ".join(name if f[key] else f"{name} unknown" if f[key] is None else f"no {name}"
                      for key, name in (("amx", "AMX"), ("avx512_bf16", "AVX512-BF16")))
    return f"{cpu_model()} ({f['kernels']} kernels, {flags})", has_bf16_matmul()


def fvu(x: torch.Tensor, recon: torch.Tensor) -> float:
    from reasoning_dspy.sae.evals import fvu as _fvu

    return _fvu(x, recon)


@dataclass
class Run:
    tokens_per_s: float
    fvu: float
    dead: list[int]  # dead latents seen by the loss at each step
    aux: list[float]  # AuxK term of the loss at each step (coefficient and scale applied; 0 where none)
    first_mse: float  # MSE at the first step: equal in both libraries when data and weights are
    load: tuple[float, float] = (0.0, 0.0)  # load average before and after the run

    @property
    def aux_steps(self) -> int:
        return sum(a > 0 for a in self.aux)

    def auxk_summary(self) -> str:
        if not self.aux_steps:
            return f"AuxK active in 0/{len(self.aux)} steps"
        first = next(i for i, a in enumerate(self.aux) if a > 0) + 1
        return (f"AuxK active in {self.aux_steps}/{len(self.aux)} steps (from step {first}), "
                f"dead latents max {max(self.dead):,}, last step {self.dead[-1]:,}")


def epoch_batches(x: torch.Tensor, batch: int, seed: int = 0):
    """The batches `reasoning_dspy.sae.train` draws from an in-memory tensor: epoch `e` is
    `randperm(n)` from a generator seeded `seed * 1_000_003 + e`, cut into whole batches."""
    e = 0
    while True:
        gen = torch.Generator().manual_seed(seed * 1_000_003 + e)
        perm = torch.randperm(len(x), generator=gen)
        for i in range(len(x) // batch):
            yield x[perm[i * batch:(i + 1) * batch]]
        e += 1


def run_ours(x: torch.Tensor, test: torch.Tensor, args, dtype: str) -> Run:
    from reasoning_dspy.sae import SAETrainConfig, train_sae
    from reasoning_dspy.sae.topk import TopKSAE

    cfg = SAETrainConfig(arch="topk", d_sae=args.d_sae, k=args.k, batch_size=args.batch, tokens=args.tokens,
                         lr=args.lr, lr_warmup_frac=0.0, lr_decay_frac=0.0, grad_clip=1.0, aux_coefficient=1 / 32,
                         compute_dtype=dtype, dead_tokens=args.dead_steps * args.batch, log_every=10**9,
                         b_dec_init="zeros", normalize_inputs=False, init_tokens=4096, seed=0,
                         val_fraction=0.0, device=args.device)  # same training tokens as SAELens; the test set is held out here
    dead: list[int] = []
    aux: list[float] = []
    mse: list[float] = []
    loss_fn = TopKSAE.training_loss

    def traced(self, xb, ctx):  # records what the loss saw; a few scalar reads per step
        out = loss_fn(self, xb, ctx)
        n_dead = 0 if ctx.dead_mask is None else int(ctx.dead_mask.sum())
        dead.append(n_dead)
        k_aux = ctx.k_aux or self.cfg.d_in // 2  # the AuxK term as added to the loss, as SAELens reports it
        aux.append(out.losses.get("aux", 0.0) * ctx.aux_coef * min(n_dead / k_aux, 1.0))
        if not mse:
            mse.append(out.losses["mse"])
        return out

    TopKSAE.training_loss = traced
    try:
        sync(args.device)
        start = time.perf_counter()
        result = train_sae(cfg, x, progress=False)
        sync(args.device)
        seconds = time.perf_counter() - start
    finally:
        TopKSAE.training_loss = loss_fn
    with torch.no_grad():
        recon = torch.cat([result.sae(t.to(args.device))[1].float().cpu() for t in test.split(4096)])
    return Run(args.tokens / seconds, fvu(test, recon), dead, aux, mse[0])


def run_saelens(x: torch.Tensor, test: torch.Tensor, args, dtype: str) -> Run:
    from sae_lens.config import LoggingConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.training.sae_trainer import SAETrainer, SAETrainerConfig

    cfg = SAETrainerConfig(total_training_samples=args.tokens, train_batch_size_samples=args.batch, lr=args.lr,
                           lr_end=args.lr, lr_scheduler_name="constant", lr_warm_up_steps=0, lr_decay_steps=0,
                           autocast=dtype == "bfloat16", dead_feature_window=args.dead_steps - 1, device=args.device,
                           feature_sampling_window=10**9, n_checkpoints=0, checkpoint_path=None,
                           save_final_checkpoint=False, logger=LoggingConfig(log_to_wandb=False))
    dead: list[int] = []
    aux: list[float] = []
    mse: list[float] = []
    sync(args.device)
    start = time.perf_counter()
    torch.manual_seed(0)  # the same first random draws as our trainer: identical initial weights
    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=args.d_in, d_sae=args.d_sae, k=args.k,
                                                aux_loss_coefficient=1 / 32, decoder_init_norm=1.0,
                                                normalize_activations="none"))  # on the CPU, as ours: same draws
    sae.to(args.device)
    trainer = SAETrainer(cfg, sae, data_provider=epoch_batches(x, args.batch))
    step = trainer.step

    def traced(batch):  # records what the loss saw; a few scalar reads per step
        dead.append(int(trainer.dead_neurons.sum()))
        out = step(batch)
        aux.append(out.losses["auxiliary_reconstruction_loss"].item())
        if not mse:
            mse.append(out.losses["mse_loss"].item())
        return out

    trainer.step = traced
    sae = trainer.fit()
    sync(args.device)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        recon = torch.cat([sae(t.to(args.device)).float().cpu() for t in test.split(4096)])
    return Run(args.tokens / seconds, fvu(test, recon), dead, aux, mse[0])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=4096 * 12, help="training tokens per run")
    p.add_argument("--d-in", type=int, default=2048)
    p.add_argument("--d-sae", type=int, default=16384)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--dead-steps", type=int, default=3,
                   help="a latent is dead (enters AuxK) after this many whole steps without firing")
    p.add_argument("--atoms", type=int, default=None, help="synthetic dictionary size (default 2 × d_sae)")
    p.add_argument("--active", type=int, default=None, help="synthetic atoms per token (default k)")
    p.add_argument("--pool", type=int, default=None,
                   help="distinct synthetic training tokens (default --tokens: one pass, no token seen twice)")
    p.add_argument("--dtypes", default=None,
                   help="default float32,bfloat16, or float32 alone on a CPU without bf16 matmul instructions")
    p.add_argument("--repeats", type=int, default=1, help="alternating rounds per dtype")
    p.add_argument("--cache", default=None, help="train on this activation cache instead of synthetic data")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--skip-saelens", action="store_true")
    p.add_argument("--per-step", action="store_true",
                   help="also print dead latents and the AuxK term of the loss at every step")
    add_result_args(p)
    args = p.parse_args()
    if args.dead_steps < 1:
        p.error("--dead-steps must be at least 1")
    check_device_arg(p, args.device)
    out = ResultWriter.from_args(args, "sae")
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.cache:
        from reasoning_dspy.activations import ActivationCache

        data = ActivationCache(args.cache).load(("acts",))["acts"].float()
        args.d_in = data.shape[1]
        source = f"cache {args.cache} ({len(data)} tokens)"
    else:
        atoms = args.atoms or 2 * args.d_sae
        active = args.active or args.k
        pool = args.pool or args.tokens
        data = synthetic_acts(pool + 4096, args.d_in, n_atoms=atoms, active=active)
        source = f"synthetic: {atoms} atoms, {active} active per token, {pool} distinct training tokens"
    data *= math.sqrt(args.d_in) / data.norm(dim=1).mean()  # mean norm √d_in; both libraries' scaling is off
    test, x = data[:4096], data[4096:]
    n_steps = args.tokens // args.batch
    print(f"TopK SAE d_in={args.d_in} d_sae={args.d_sae} k={args.k} batch={args.batch}, {args.tokens} tokens "
          f"({n_steps} steps, {args.tokens / len(x):.2f} epochs), lr={args.lr}, AuxK 1/32 with dead = "
          f"{args.dead_steps} steps ({args.dead_steps * args.batch} tokens) without firing; data: {source}")
    cpu, bf16_hw = cpu_info()
    on_gpu = args.device.startswith("cuda")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {cpu}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}; device {args.device}"
          + (f" ({torch.cuda.get_device_name(args.device)})" if on_gpu else ""))
    if args.dtypes is None:
        args.dtypes = "float32,bfloat16" if bf16_hw or on_gpu else "float32"
    if not bf16_hw and not on_gpu:
        print("this CPU has neither AMX nor AVX512-BF16: torch's bf16 matmuls fall back to a slow generic kernel "
              "(both libraries), so " + ("bf16 runs measure that fallback" if "bfloat16" in args.dtypes
                                         else "only float32 is run (ask with --dtypes float32,bfloat16)"))
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
                load = os.getloadavg()[0]
                r = fn(x, test, args, dtype)
                r.load = (load, os.getloadavg()[0])
                res[name] = r
                print(f"  {dtype:8s} {name:8s} {r.tokens_per_s:9,.1f} tokens/s   FVU {r.fvu:.4f}   "
                      f"{r.auxk_summary()}; step-1 MSE {r.first_mse:.4f}; load {load:.2f} -> "
                      f"{os.getloadavg()[0]:.2f}", flush=True)
                if args.per_step:
                    print(f"    dead latents per step: {r.dead}\n    AuxK term per step: "
                          f"{[float(f'{a:.4g}') for a in r.aux]}", flush=True)
            rows.append((dtype, res))

    print()
    label = f"SAELens {saelens_version}" if saelens_version else "SAELens"
    print(f"| dtype | {label} tokens/s | ours tokens/s | ratio | {label} FVU | ours FVU "
          f"| AuxK steps (SAELens / ours) | dead at last step (SAELens / ours) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for dtype, res in rows:
        o = res["ours"]
        if "SAELens" in res:
            s = res["SAELens"]
            print(f"| {dtype} | {s.tokens_per_s:,.0f} | {o.tokens_per_s:,.0f} | **{o.tokens_per_s / s.tokens_per_s:.2f}×** "
                  f"| {s.fvu:.4f} | {o.fvu:.4f} | {s.aux_steps} / {o.aux_steps} of {n_steps} "
                  f"| {s.dead[-1]:,} / {o.dead[-1]:,} |")
        else:
            print(f"| {dtype} | - | {o.tokens_per_s:,.0f} | - | - | {o.fvu:.4f} | - / {o.aux_steps} of {n_steps} "
                  f"| - / {o.dead[-1]:,} |")
    write_json(out, args, rows, source=source, saelens_version=saelens_version, cpu=cpu, n_steps=n_steps)


def write_json(out: ResultWriter, args, rows: list, *, source: str, saelens_version: str | None, cpu: str,
               n_steps: int) -> None:
    """The figures above, for bench/run_all.py: one ratio per dtype (mean rates over its rounds)."""
    ratios, table, per_step = [], [], []
    for dtype in dict.fromkeys(d for d, _ in rows):
        runs = [res for d, res in rows if d == dtype]
        if "SAELens" not in runs[0]:
            continue
        mean = {lib: sum(r[lib].tokens_per_s for r in runs) / len(runs) for lib in ("SAELens", "ours")}
        ratios.append(Ratio(label=f"ours vs SAELens {saelens_version}", case=f"{dtype}, d_in {args.d_in}, "
                            f"d_sae {args.d_sae}, k {args.k}, {n_steps} steps of {args.batch}",
                            ours=mean["ours"], baseline=mean["SAELens"], unit="tokens/s"))
    for i, (dtype, res) in enumerate(rows):
        o, s = res["ours"], res.get("SAELens")
        round_ = sum(d == dtype for d, _ in rows[:i]) + 1
        table.append([dtype, round_, s and s.tokens_per_s, o.tokens_per_s,
                      s and f"**{o.tokens_per_s / s.tokens_per_s:.2f}×**", s and f"{s.fvu:.4f}", f"{o.fvu:.4f}",
                      f"{s.aux_steps if s else '-'} / {o.aux_steps} of {n_steps}",
                      f"{s.dead[-1] if s else '-'} / {o.dead[-1]}",
                      f"{s.load[0]:.1f} → {s.load[1]:.1f}" if s else "-", f"{o.load[0]:.1f} → {o.load[1]:.1f}"])
        per_step.append({"dtype": dtype, **{lib: {"dead": r.dead, "aux": r.aux, "first_mse": r.first_mse}
                                            for lib, r in res.items()}})
    notes = [f"CPU: {cpu}."]
    if saelens_version is None:
        notes.append("sae_lens is not installed (`pip install -e '.[saelens]'`): only our figures, no ratio.")
    if rows and all("SAELens" in res for _, res in rows):
        same = all(math.isclose(res["SAELens"].first_mse, res["ours"].first_mse, rel_tol=1e-5) for _, res in rows)
        notes.append("Step-1 MSE equal in both libraries to 5 digits (same weights, same data): "
                     f"{'yes' if same else 'no'} ({rows[0][1]['SAELens'].first_mse:.4f} vs "
                     f"{rows[0][1]['ours'].first_mse:.4f}).")
    out.write(title="SAE training", compares=f"ours vs SAELens {saelens_version or ''}".strip(), method=METHOD,
              settings={"d_in": args.d_in, "d_sae": args.d_sae, "k": args.k, "batch": args.batch,
                        "tokens": args.tokens, "steps": n_steps, "lr": args.lr, "dead_steps": args.dead_steps,
                        "dtypes": args.dtypes, "repeats": args.repeats, "data": source, "device": args.device,
                        "saelens": saelens_version},
              ratios=ratios,
              tables=[Table(columns=["dtype", "round", "SAELens tokens/s", "ours tokens/s", "ratio", "SAELens FVU",
                                     "ours FVU", "AuxK steps (SAELens / ours)",
                                     "dead latents at the last step (SAELens / ours)", "load (SAELens run)",
                                     "load (our run)"], rows=table)],
              notes=notes, figures={"per_step": per_step})


if __name__ == "__main__":
    main()
