"""Train an SAE on an activation cache (or an in-memory tensor), with exact resume.

One step: a shuffled batch, the architecture's loss, Adam (LR warm-up then linear decay), the
decoder-norm-parallel gradient removed, gradient clipping, decoder rows renormalised, dead-latent
counters updated. The output folder holds the SAE (SAELens layout, input scaling folded in),
`training_config.json`, `train_log.jsonl`, `loss_curve.png` and `checkpoint/` (weights, Adam state,
RNG, dead-latent counters, data position) from which `resume=True` continues bit for bit.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from reasoning_dspy._io import atomic_write_bytes, atomic_write_json, atomic_write_text
from reasoning_dspy.models import check_device
from reasoning_dspy.sae.base import SAE, LossContext, SAEConfig
from reasoning_dspy.sae.evals import SAEEval, evaluate_sae, fvu
from reasoning_dspy.sae.io import save_sae
from reasoning_dspy.sae.train_config import SAETrainConfig

CHECKPOINT_DIR = "checkpoint"
LOG_FILE = "train_log.jsonl"
CURVE_FILE = "loss_curve.png"
CONFIG_FILE = "training_config.json"


class TrainingDivergedError(RuntimeError):
    """The loss or the SAE weights stopped being finite during training; nothing diverged is saved."""


@dataclass
class TrainResult:
    """A trained SAE (taking raw activations) and how it got there."""

    sae: SAE
    eval: SAEEval
    steps: int
    tokens: int
    seconds: float
    input_scale: float
    log: list[dict[str, Any]] = field(default_factory=list)
    out: Path | None = None

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else float("nan")


# -- data ------------------------------------------------------------------------------------------


class _Batches:
    """Deterministic shuffled full batches: epoch `e` is a fixed function of `(seed, e)`, so a
    resumed run can skip to exactly where the interrupted one stopped."""

    def __init__(self, source: Any, batch_size: int, seed: int):
        self.source, self.batch_size, self.seed = source, batch_size, seed
        self.n_tokens = int(source.shape[0]) if isinstance(source, Tensor) else int(source.n_tokens)
        self.d_in = int(source.shape[1]) if isinstance(source, Tensor) else int(source.d_model)
        if self.n_tokens < batch_size:
            raise ValueError(
                f"the activations hold {self.n_tokens} tokens, fewer than batch_size={batch_size}; "
                "lower --batch-size or extract more activations"
            )
        self.per_epoch = self.n_tokens // batch_size

    def epoch(self, e: int) -> Iterator[Tensor]:
        if isinstance(self.source, Tensor):
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + e)
            perm = torch.randperm(self.n_tokens, generator=gen)
            for i in range(self.per_epoch):
                yield self.source[perm[i * self.batch_size:(i + 1) * self.batch_size]]
        else:
            for batch in self.source.iter_batches(self.batch_size, shuffle=True, seed=self.seed * 1_000_003 + e,
                                                  drop_last=True):
                yield batch["acts"]

    def stream(self, epoch: int, skip: int) -> Iterator[tuple[int, int, Tensor]]:
        """Yield `(epoch, index in epoch, batch)` forever, starting after `skip` batches of `epoch`."""
        while True:
            for i, batch in enumerate(self.epoch(epoch)):
                if i >= skip:
                    yield epoch, i, batch
            epoch, skip = epoch + 1, 0

    def sample(self, n: int) -> Tensor:
        """A seeded random sample of up to `n` tokens (input scale, b_dec init, evaluation)."""
        if isinstance(self.source, Tensor):
            gen = torch.Generator().manual_seed(self.seed + 7919)
            return self.source[torch.randperm(self.n_tokens, generator=gen)[:n]]
        batch = next(self.source.iter_batches(min(n, self.n_tokens), shuffle=True, seed=self.seed + 7919))
        return batch["acts"]


# -- initialisation --------------------------------------------------------------------------------


def geometric_median(points: Tensor, iters: int = 50, tol: float = 1e-5) -> Tensor:
    """Weiszfeld's algorithm: the point minimising the sum of Euclidean distances; `[n, d] -> [d]`.

    Starts from the mean and stops once a step moves less than `tol` relative to the median's norm.
    """
    pts = points.float()
    median = pts.mean(0)
    for _ in range(iters):
        w = 1.0 / torch.cdist(pts, median[None]).squeeze(1).clamp_min(1e-8)
        new = (w @ pts) / w.sum()
        moved = (new - median).norm().item()
        median = new
        if moved <= tol * max(1.0, median.norm().item()):
            break
    return median.to(points.dtype)


def _init_sae(cfg: SAETrainConfig, d_in: int, sample: Tensor, meta: dict[str, Any]) -> SAE:
    sae = SAE.from_config(SAEConfig(architecture=cfg.arch, d_in=d_in, d_sae=cfg.d_sae,
                                    k=cfg.k if cfg.arch == "topk" else None, **meta))
    with torch.no_grad():
        if cfg.b_dec_init == "mean":
            sae.b_dec.copy_(sample.mean(0))
        elif cfg.b_dec_init == "geometric_median":
            sae.b_dec.copy_(geometric_median(sample))
        threshold = getattr(sae, "threshold", None)
        if isinstance(threshold, Tensor):
            threshold.fill_(cfg.jumprelu_init_threshold)
    return sae


# -- schedules -------------------------------------------------------------------------------------


def lr_at(cfg: SAETrainConfig, step: int, total: int) -> float:
    """Linear warm-up over the first `lr_warmup_frac`, constant, linear decay to 0 over the last `lr_decay_frac`."""
    warm = max(1, round(cfg.lr_warmup_frac * total)) if cfg.lr_warmup_frac > 0 else 0
    decay = round(cfg.lr_decay_frac * total)
    factor = 1.0
    if warm and step < warm:
        factor = (step + 1) / warm
    if decay and step >= total - decay:
        factor = min(factor, (total - step) / decay)
    return cfg.lr * factor


def sparsity_at(cfg: SAETrainConfig, step: int, total: int) -> float:
    """The architecture's λ (L1 for relu, L0 for jumprelu), ramped up linearly from 0."""
    coef = {"relu": cfg.l1_coefficient, "jumprelu": cfg.l0_coefficient}.get(cfg.arch, 0.0)
    warm = round(cfg.sparsity_warmup_frac * total)
    return coef * min(1.0, (step + 1) / warm) if warm else coef


def _contiguous_aliases(params: list[Tensor]) -> list[Tensor]:
    """What Adam updates: each parameter, or for a transposed-stored one a contiguous alias of the
    same memory (`p.detach().T`). Fused Adam copies non-contiguous tensors on every step; the alias
    avoids that (its `.grad` is set to `p.grad.T` before each step)."""
    out = []
    for p in params:
        if p.is_contiguous() or p.dim() != 2 or not p.T.is_contiguous():
            out.append(p)
        else:
            out.append(p.detach().T)
    return out


# -- checkpoints -----------------------------------------------------------------------------------


def _save_checkpoint(folder: Path, sae: SAE, opt: torch.optim.Optimizer, since_fired: Tensor,
                     state: dict[str, Any]) -> None:
    from safetensors.torch import save

    tensors: dict[str, Tensor] = {f"sae.{n}": p.detach().contiguous() for n, p in sae.named_parameters()}
    opt_state = opt.state_dict()
    for pid, st in opt_state["state"].items():
        for key, value in st.items():
            tensors[f"optim.{pid}.{key}"] = value.contiguous() if value.dim() else value.reshape(1)
    tensors["since_fired"] = since_fired
    tensors["rng_cpu"] = torch.get_rng_state()
    atomic_write_bytes(folder / "state.safetensors", save(tensors, metadata={"step": str(state["step"])}))
    atomic_write_json(folder / "state.json", {**state, "param_groups": opt_state["param_groups"]})


def _load_checkpoint(folder: Path, sae: SAE, opt: torch.optim.Optimizer) -> tuple[dict[str, Any], Tensor]:
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        state = json.loads((folder / "state.json").read_text())
        tensors = load_file(folder / "state.safetensors")
        with safe_open(folder / "state.safetensors", "pt") as fh:
            saved_step = int((fh.metadata() or {}).get("step", -1))
    except (OSError, json.JSONDecodeError, SafetensorError) as err:
        raise ValueError(f"checkpoint in {folder} is unreadable ({err}); delete it or train without --resume") from None
    if saved_step != state["step"]:
        raise ValueError(f"checkpoint in {folder} is inconsistent (weights at step {saved_step}, "
                         f"state at step {state['step']}); delete it to restart")
    with torch.no_grad():
        for name, p in sae.named_parameters():
            p.copy_(tensors[f"sae.{name}"])
    opt_state: dict[str, Any] = {"state": {}, "param_groups": state.pop("param_groups")}
    n_params = sum(len(g["params"]) for g in opt.param_groups)
    for pid in range(n_params):
        st = {}
        for key in ("step", "exp_avg", "exp_avg_sq"):
            t = tensors.get(f"optim.{pid}.{key}")
            if t is not None:
                st[key] = t.reshape(()) if key == "step" else t
        if st:
            opt_state["state"][pid] = st
    opt.load_state_dict(opt_state)
    torch.set_rng_state(tensors["rng_cpu"])
    return state, tensors["since_fired"].clone()


# -- output ----------------------------------------------------------------------------------------


def plot_loss_curve(log: list[dict[str, Any]], path: Path) -> None:
    """Loss, FVU and L0 against training tokens, as a PNG (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in log if "loss" in r]
    if not rows:
        return
    tokens = [r["tokens"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, key, title in zip(axes, ("loss", "fvu", "l0"), ("training loss", "FVU (batch)", "L0"), strict=True):
        ax.plot(tokens, [r[key] for r in rows])
        ax.set_title(title)
        ax.set_xlabel("tokens")
        if key in ("loss", "fvu") and all(r[key] > 0 for r in rows):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def _check_finite(cfg: SAETrainConfig, step: int, sae: SAE, loss: float | None = None) -> None:
    """Raise `TrainingDivergedError` if the loss (when given) or any SAE weight is NaN/inf."""
    if loss is not None and math.isfinite(loss):
        return
    bad = [name for name, p in sae.named_parameters() if not bool(torch.isfinite(p).all())]
    if loss is None and not bad:
        return
    what = f"the loss is {loss}" if loss is not None else f"the SAE weights {bad} hold NaN/inf"
    raise TrainingDivergedError(
        f"training diverged at step {step}: {what} (lr={cfg.lr}, grad_clip={cfg.grad_clip}), so the SAE "
        "was not saved. Lower --lr, keep --grad-clip above 0, and check that the activations are finite"
    )


def _write_log(path: Path, log: list[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in log))


# -- the loop --------------------------------------------------------------------------------------


def train_sae(
    cfg: SAETrainConfig,
    activations: Any = None,
    *,
    progress: bool = True,
    stop_after: int | None = None,
) -> TrainResult:
    """Train an SAE as `cfg` says.

    `activations` is an `ActivationCache` or a `[n_tokens, d_in]` tensor; by default the cache at
    `cfg.cache` is opened. `stop_after` ends the run after that many steps (checkpointing first),
    as an interruption would — `resume=True` then continues it exactly.
    """
    from tqdm.auto import tqdm

    if activations is None:
        if cfg.cache is None:
            raise ValueError("no activations to train on: set cache=<folder> (--cache) or pass activations=")
        from reasoning_dspy.activations import ActivationCache

        activations = ActivationCache(cfg.cache)
    meta: dict[str, Any] = {}
    if not isinstance(activations, Tensor):
        meta = {"model_name": activations.model_name, "hook_layer": activations.layer,
                "hook_name": f"blocks.{activations.layer}.hook_resid_post"}
    elif activations.dim() != 2:
        raise ValueError(f"activations must be [n_tokens, d_in], got shape {list(activations.shape)}")
    out = Path(cfg.out) if cfg.out else None
    if out is not None and out.exists() and not out.is_dir():
        raise ValueError(f"the output {str(out)!r} is an existing file; out (--out) must be a folder")
    device = check_device(cfg.device)
    compute_dtype = getattr(torch, cfg.compute_dtype)

    data = _Batches(activations, cfg.batch_size, cfg.seed)
    total_tokens = cfg.tokens or data.per_epoch * cfg.batch_size
    total = max(1, math.ceil(total_tokens / cfg.batch_size))
    if cfg.arch == "topk" and cfg.k > cfg.d_sae:  # also validated by the config; kept for model_copy users
        raise ValueError(f"k={cfg.k} cannot exceed d_sae={cfg.d_sae}")

    torch.manual_seed(cfg.seed)
    sample = data.sample(cfg.init_tokens).float()
    scale = math.sqrt(data.d_in) / sample.norm(dim=1).mean().item() if cfg.normalize_inputs else 1.0
    sample = sample * scale
    sae = _init_sae(cfg, data.d_in, sample, meta).to(device)
    fast = cfg.fast and cfg.arch == "topk"
    if fast:  # W_enc stored as [d_sae, d_in] rows: the fast backward writes its gradient in that layout
        sae.W_enc.data = sae.W_enc.data.T.contiguous().T
    params = list(sae.parameters())
    slots = _contiguous_aliases(params)
    opt = torch.optim.Adam(slots, lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2),
                           fused=device.type in ("cpu", "cuda"))
    since_fired = torch.zeros(cfg.d_sae, dtype=torch.long, device=device)
    step, epoch, skip, log = 0, 0, 0, []

    ckpt = out / CHECKPOINT_DIR if out else None
    if cfg.resume and ckpt is not None and (ckpt / "state.json").is_file():
        state, since_fired = _load_checkpoint(ckpt, sae, opt)
        if state["config"] != cfg.run_identity():
            diff = sorted(k for k, v in cfg.run_identity().items() if state["config"].get(k) != v)
            raise ValueError(f"cannot resume {ckpt}: the config differs in {diff}; use the same settings "
                             "or a new --out folder")
        step, epoch, skip, scale = state["step"], state["epoch"], state["next_batch"], state["scale"]
        since_fired = since_fired.to(device)
        if out and (out / LOG_FILE).is_file():
            log = [json.loads(line) for line in (out / LOG_FILE).read_text().splitlines() if line]
            log = [r for r in log if r["step"] <= step]

    eval_x = sample[: min(len(sample), 4096)].to(device)
    ctx = LossContext(aux_coef=cfg.aux_coefficient, k_aux=cfg.k_aux, bandwidth=cfg.jumprelu_bandwidth,
                      fast=fast, compute_dtype=compute_dtype)
    autocast = compute_dtype != torch.float32 and not fast

    def checkpoint(next_epoch: int, next_batch: int) -> None:
        if ckpt is None:
            return
        _check_finite(cfg, step, sae)
        _save_checkpoint(ckpt, sae, opt, since_fired, {
            "step": step, "epoch": next_epoch, "next_batch": next_batch, "scale": scale,
            "config": cfg.run_identity(),
        })
        _write_log(out / LOG_FILE, log)

    bar = tqdm(total=total, initial=step, disable=not progress, unit="step", desc=f"train {cfg.arch} SAE",
               dynamic_ncols=True)
    stream = data.stream(epoch, skip)
    start = time.perf_counter()
    start_step = step
    next_pos = (epoch, skip)
    while step < total:
        e, i, x = next(stream)
        next_pos = (e, i + 1) if i + 1 < data.per_epoch else (e + 1, 0)
        x = x.to(device, torch.float32, non_blocking=True)
        if scale != 1.0:
            x = x * scale
        for group in opt.param_groups:
            group["lr"] = lr_at(cfg, step, total)
        ctx.sparsity_coef = sparsity_at(cfg, step, total)
        dead = since_fired >= cfg.dead_tokens
        ctx.dead_mask = dead if bool(dead.any()) else None
        with torch.autocast(device.type, dtype=compute_dtype, enabled=autocast):
            result = sae.training_loss(x, ctx)
        sae.zero_grad(set_to_none=True)
        result.loss.backward()
        sae.remove_parallel_decoder_grad()
        if cfg.grad_clip > 0:
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params
                                                         if p.grad is not None]))
            if norm > cfg.grad_clip:  # clip only when needed: scaling 67M gradients is not free
                torch._foreach_mul_([p.grad for p in params if p.grad is not None], cfg.grad_clip / (norm + 1e-6))
        for p, slot in zip(params, slots, strict=True):
            if slot is not p:
                slot.grad = None if p.grad is None else p.grad.T
        opt.step()
        sae.after_step()
        since_fired += x.shape[0]
        since_fired[result.fired] = 0
        step += 1

        if step % cfg.log_every == 0 or step == total:
            row = {"step": step, "tokens": step * cfg.batch_size, "lr": opt.param_groups[0]["lr"],
                   "loss": result.loss.item(), **result.losses, "l0": result.l0.item(),
                   "fvu": fvu(x, result.recon.float()),
                   "dead_pct": 100.0 * (since_fired >= cfg.dead_tokens).float().mean().item()}
            if cfg.eval_every and step % cfg.eval_every == 0:
                ev = evaluate_sae(sae, eval_x.split(cfg.batch_size), compute_dtype=compute_dtype)
                row.update(eval_fvu=ev.fvu, eval_l0=ev.l0)
            _check_finite(cfg, step, sae, row["loss"])
            log.append(row)
            bar.set_postfix(loss=f"{row['loss']:.4g}", L0=f"{row['l0']:.1f}", FVU=f"{row['fvu']:.3f}",
                            dead=f"{row['dead_pct']:.1f}%")
        bar.update(1)
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < total:
            checkpoint(*next_pos)
        if stop_after is not None and step >= stop_after and step < total:
            checkpoint(*next_pos)
            bar.close()
            return _finish(cfg, sae, scale, eval_x, log, step, step - start_step, time.perf_counter() - start,
                           out=None, compute_dtype=compute_dtype)
    bar.close()
    seconds = time.perf_counter() - start
    checkpoint(*next_pos)
    return _finish(cfg, sae, scale, eval_x, log, step, step - start_step, seconds, out=out,
                   compute_dtype=compute_dtype)


def _finish(cfg: SAETrainConfig, sae: SAE, scale: float, eval_x: Tensor, log: list[dict[str, Any]], step: int,
            steps_run: int, seconds: float, *, out: Path | None, compute_dtype: torch.dtype) -> TrainResult:
    """Evaluate, fold the input scale into a copy of the SAE, write the output folder."""
    _check_finite(cfg, step, sae)
    ev = evaluate_sae(sae, eval_x.split(cfg.batch_size), compute_dtype=compute_dtype)
    final = copy.deepcopy(sae)
    with torch.no_grad():
        final.W_enc.data = final.W_enc.data.contiguous()
        final.fold_input_scale(scale)
    final.eval()
    result = TrainResult(sae=final, eval=ev, steps=step, tokens=steps_run * cfg.batch_size, seconds=seconds,
                         input_scale=scale, log=log, out=out)
    if out is not None:
        save_sae(final, out)
        _write_log(out / LOG_FILE, log)
        atomic_write_json(out / CONFIG_FILE, {
            "train": cfg.model_dump(), "input_scale": scale, "steps": step, "tokens": step * cfg.batch_size,
            "final_eval": ev.as_dict(), "tokens_per_second": result.tokens_per_second,
            "torch": torch.__version__, "threads": torch.get_num_threads(),
        })
        plot_loss_curve(log, out / CURVE_FILE)
    return result
