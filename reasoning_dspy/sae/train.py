"""Train an SAE on activation caches (or in-memory tensors), with exact resume and run budgets.

One step: a shuffled batch, the architecture's loss, Adam (LR warm-up then linear decay), the
decoder-norm-parallel gradient removed, gradient clipping, decoder rows renormalised, dead-latent
counters updated. The output folder holds the SAE (SAELens layout, input scaling folded in),
`training_config.json` (config and final metrics), `train_log.jsonl`, `loss_curve.png` and
`checkpoint/` (weights, Adam state, RNG, dead-latent counters, data position) from which
`resume=True` continues bit for bit. Reported FVU/L0 are measured on held-out prompts
(`val_fraction`) that training never sees; FVU on training tokens alone hides overfitting.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from reasoning_dspy._io import atomic_write_json
from reasoning_dspy.models import check_device
from reasoning_dspy.sae.base import SAE, LossContext
from reasoning_dspy.sae.evals import SAEEval, evaluate_sae, fvu
from reasoning_dspy.sae.io import WEIGHTS_FILE, save_sae
from reasoning_dspy.sae.train_config import SAETrainConfig
from reasoning_dspy.sae.train_data import TrainData, open_sources, source_metadata
from reasoning_dspy.sae.train_files import load_checkpoint, plot_loss_curve, save_checkpoint, write_log
from reasoning_dspy.sae.train_schedule import contiguous_aliases, init_sae, lr_at, sparsity_at

CHECKPOINT_DIR = "checkpoint"
LOG_FILE = "train_log.jsonl"
CURVE_FILE = "loss_curve.png"
CONFIG_FILE = "training_config.json"
EVAL_TOKENS = 4096  # tokens of each evaluation set (held-out and training)

Stopped = Literal["completed", "budget_tokens", "budget_time", "interrupted"]
_clock = time.perf_counter  # the time budget's clock (tests replace it)


class TrainingDivergedError(RuntimeError):
    """The loss or the SAE weights stopped being finite during training; nothing diverged is saved."""


@dataclass
class TrainResult:
    """A trained SAE (taking raw activations) and how it got there.

    `eval_val` is measured on held-out tokens (None with `val_fraction=0`), `eval_train` on training
    tokens; `eval` is the held-out one when there is one. `stopped` says why the run ended:
    `completed` (the schedule ran out), `budget_tokens`/`budget_time` (`max_tokens`/`max_seconds`;
    resume to continue) or `interrupted` (`stop_after`). `tokens` counts this run's tokens only.
    """

    sae: SAE
    eval_train: SAEEval
    eval_val: SAEEval | None
    steps: int
    tokens: int
    seconds: float
    input_scale: float
    stopped: Stopped = "completed"
    total_steps: int = 0
    log: list[dict[str, Any]] = field(default_factory=list)
    out: Path | None = None

    @property
    def eval(self) -> SAEEval:
        return self.eval_val if self.eval_val is not None else self.eval_train

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else float("nan")


# -- output ----------------------------------------------------------------------------------------


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


# -- the loop --------------------------------------------------------------------------------------


def train_sae(
    cfg: SAETrainConfig,
    activations: Any = None,
    *,
    progress: bool = True,
    stop_after: int | None = None,
) -> TrainResult:
    """Train an SAE as `cfg` says.

    `activations` is an `ActivationCache`, a cache folder, a `[n_tokens, d_in]` tensor, or a list of
    them (same width; caches of the same model and layer); by default the caches in `cfg.cache` are
    opened. Batches draw from all of them; `val_fraction` of the tokens (whole prompts) is held out.

    Budgets: `max_tokens`/`max_seconds` end *this run* early (the clock starts when `train_sae` is
    called; at least one step runs), saving the SAE, the log and a checkpoint, as an interruption
    would. The LR and sparsity schedules stay on `tokens` (not re-planned from the measured speed), so
    `resume=True` continues the same schedule exactly; a run stopped by its budget is a snapshot taken
    before the LR decay. To fit a whole schedule into a time budget, set `tokens` from the tokens/s of
    a short run. `stop_after` ends the run after that many steps without saving the SAE (tests).

    Inside a `torch.distributed` process group (`torchrun`), each rank trains on its slice of every
    global batch and the gradients are summed across ranks weighted by slice size (`distributed.sync`),
    so R processes take the single-process steps; rank 0 writes the outputs, and every rank reads the
    checkpoint on resume (OUT must be on a filesystem they all see).
    """
    from tqdm.auto import tqdm

    from reasoning_dspy.distributed.group import torchrun_world_size
    from reasoning_dspy.distributed.sync import train_sync

    started = _clock()
    sync = train_sync()
    if sync.ranks.world_size == 1 and torchrun_world_size() > 1:
        raise ValueError("this process is one of several started by torchrun (WORLD_SIZE > 1) but has joined no "
                         "process group, so each would train alone; call train_sae inside "
                         "`with reasoning_dspy.distributed.process_group(cfg.device):`")
    if activations is None:
        if cfg.cache is None:
            raise ValueError("no activations to train on: set cache=<folder> (--cache) or pass activations=")
        activations = cfg.cache
    sources = open_sources(activations)
    meta = source_metadata(sources, cfg.hook_layer, cfg.model_name)
    out = Path(cfg.out) if cfg.out else None
    if out is not None:
        _check_out(out, cfg)
    device = check_device(cfg.device)
    compute_dtype = getattr(torch, cfg.compute_dtype)

    data = TrainData(sources, cfg.batch_size, cfg.seed, cfg.val_fraction,
                     part=(sync.ranks.rank, sync.ranks.world_size))
    total_tokens = cfg.tokens or data.per_epoch * cfg.batch_size
    total = max(1, math.ceil(total_tokens / cfg.batch_size))
    if cfg.arch == "topk" and cfg.k > cfg.d_sae:  # also validated by the config; kept for model_copy users
        raise ValueError(f"k={cfg.k} cannot exceed d_sae={cfg.d_sae}")

    torch.manual_seed(cfg.seed)
    sample = data.sample(cfg.init_tokens).float()
    scale = math.sqrt(data.d_in) / sample.norm(dim=1).mean().item() if cfg.normalize_inputs else 1.0
    sae = init_sae(cfg, data.d_in, sample * scale, meta).to(device)
    sync.broadcast_(sae.parameters())  # every rank starts from rank 0's SAE (and input scale)
    scale = sync.from_main(scale)
    fast = cfg.fast and cfg.arch == "topk"
    if fast:  # W_enc stored as [d_sae, d_in] rows: the fast backward writes its gradient in that layout
        sae.W_enc.data = sae.W_enc.data.T.contiguous().T
    params = list(sae.parameters())
    slots = contiguous_aliases(params)
    opt = torch.optim.Adam(slots, lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2),
                           fused=device.type in ("cpu", "cuda"))
    since_fired = torch.zeros(cfg.d_sae, dtype=torch.long, device=device)
    step, epoch, skip, log = 0, 0, 0, []

    ckpt = out / CHECKPOINT_DIR if out else None
    if cfg.resume and ckpt is not None and (ckpt / "state.json").is_file():
        state, since_fired = load_checkpoint(ckpt, sae, opt)
        if state["config"] != cfg.run_identity():
            diff = sorted(k for k, v in cfg.run_identity().items() if state["config"].get(k) != v)
            raise ValueError(f"cannot resume {ckpt}: the config differs in {diff}; use the same settings "
                             "or a new --out folder")
        step, epoch, skip, scale = state["step"], state["epoch"], state["next_batch"], state["scale"]
        since_fired = since_fired.to(device)
        if out and (out / LOG_FILE).is_file():
            log = [json.loads(line) for line in (out / LOG_FILE).read_text().splitlines() if line]
            log = [r for r in log if r["step"] <= step]

    if cfg.overwrite and ckpt is not None and ckpt.is_dir() and sync.ranks.is_main:
        shutil.rmtree(ckpt)  # a later --resume must not continue the replaced run

    held_out = data.held_out(EVAL_TOKENS)
    evals = _EvalSets(train=(sample[:EVAL_TOKENS] * scale).to(device),
                      val=None if held_out is None else (held_out.float() * scale).to(device),
                      batch_size=cfg.batch_size, compute_dtype=compute_dtype)
    ctx = LossContext(aux_coef=cfg.aux_coefficient, k_aux=cfg.k_aux, bandwidth=cfg.jumprelu_bandwidth,
                      fast=fast, compute_dtype=compute_dtype)
    autocast = compute_dtype != torch.float32 and not fast

    def checkpoint(next_epoch: int, next_batch: int) -> None:
        if ckpt is None:
            return
        _check_finite(cfg, step, sae)
        if not sync.ranks.is_main:
            return
        save_checkpoint(ckpt, sae, opt, since_fired, {
            "step": step, "epoch": next_epoch, "next_batch": next_batch, "scale": scale,
            "config": cfg.run_identity(),
        })
        write_log(out / LOG_FILE, log)

    bar = tqdm(total=total, initial=step, disable=not progress or not sync.ranks.is_main, unit="step",
               desc=f"train {cfg.arch} SAE", dynamic_ncols=True)
    stream = data.stream(epoch, skip)
    start = time.perf_counter()
    start_step = step
    next_pos = (epoch, skip)
    stopped: Stopped = "completed"
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
        sync.reduce_grads_(params, x.shape[0] / cfg.batch_size)
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
        since_fired += cfg.batch_size
        since_fired[sync.any_(result.fired)] = 0
        step += 1

        if step % cfg.log_every == 0 or step == total:
            means = sync.weighted_means({"loss": result.loss.item(), **result.losses, "l0": result.l0.item()},
                                        x.shape[0] / cfg.batch_size)
            row = {"step": step, "tokens": step * cfg.batch_size, "lr": opt.param_groups[0]["lr"], **means,
                   "fvu": fvu(x, result.recon.float()) if sync.ranks.world_size == 1 else sync.batch_fvu(
                       x, result.recon.float()),
                   "dead_pct": 100.0 * (since_fired >= cfg.dead_tokens).float().mean().item()}
            if cfg.eval_every and step % cfg.eval_every == 0:
                row.update(evals.metrics(sae))
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
            return _finish(cfg, sae, scale, evals, log, step, total, step - start_step,
                           time.perf_counter() - start, out=None, stopped="interrupted")
        if step < total:
            if cfg.max_tokens is not None and (step - start_step) * cfg.batch_size >= cfg.max_tokens:
                stopped = "budget_tokens"
                break
            if cfg.max_seconds is not None and sync.from_main(_clock() - started >= cfg.max_seconds):
                stopped = "budget_time"
                break
    bar.close()
    seconds = time.perf_counter() - start
    checkpoint(*next_pos)
    return _finish(cfg, sae, scale, evals, log, step, total, step - start_step, seconds,
                   out=out if sync.ranks.is_main else None, stopped=stopped,
                   sources=[_describe(s) for s in sources], split=(data.n_train, data.n_val))


def _check_out(out: Path, cfg: SAETrainConfig) -> None:
    """Refuse an output that is a file, or that holds an SAE or a run this call would silently replace
    (scores computed from that SAE would no longer match it)."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"the output {str(out)!r} is an existing file; out (--out) must be a folder")
    has_ckpt = (out / CHECKPOINT_DIR / "state.json").is_file()
    held = [name for name in (WEIGHTS_FILE, CHECKPOINT_DIR) if (out / name).exists()]
    if held and not cfg.overwrite and not (cfg.resume and has_ckpt):
        what = "an SAE" if WEIGHTS_FILE in held else "an unfinished SAE run"
        resume = ", --resume (resume=True) to continue its run" if has_ckpt else ""
        raise ValueError(f"{str(out)!r} already holds {what} ({', '.join(held)}); pass --overwrite "
                         f"(overwrite=True) to replace it{resume}, or choose another --out")


def _describe(source: Any) -> str:
    return f"tensor {list(source.shape)}" if isinstance(source, Tensor) else str(source.path)


@dataclass
class _EvalSets:
    """Fixed evaluation tokens (already input-scaled): training tokens and, if any, held-out ones."""

    train: Tensor  # [n, d_in]
    val: Tensor | None  # [m, d_in]
    batch_size: int
    compute_dtype: torch.dtype

    def run(self, sae: SAE) -> tuple[SAEEval, SAEEval | None]:
        def ev(x: Tensor) -> SAEEval:
            return evaluate_sae(sae, x.split(self.batch_size), compute_dtype=self.compute_dtype)

        return ev(self.train), None if self.val is None else ev(self.val)

    def metrics(self, sae: SAE) -> dict[str, float]:
        return _eval_row(*self.run(sae))


def _eval_row(train: SAEEval, val: SAEEval | None) -> dict[str, float]:
    """`fvu_train`, `l0_train` and, with a held-out slice, `fvu_val`, `l0_val`, `dead_pct_val`."""
    row = {"fvu_train": train.fvu, "l0_train": train.l0}
    if val is not None:
        row.update(fvu_val=val.fvu, l0_val=val.l0, dead_pct_val=100.0 * val.dead_fraction)
    return row


def _finish(cfg: SAETrainConfig, sae: SAE, scale: float, evals: _EvalSets, log: list[dict[str, Any]], step: int,
            total: int, steps_run: int, seconds: float, *, out: Path | None, stopped: Stopped,
            sources: list[str] | None = None, split: tuple[int, int] = (0, 0)) -> TrainResult:
    """Evaluate, fold the input scale into a copy of the SAE, log why the run stopped, write the output."""
    _check_finite(cfg, step, sae)
    ev_train, ev_val = evals.run(sae)
    log.append({"step": step, "tokens": step * cfg.batch_size, "stopped": stopped, "total_steps": total,
                "seconds": seconds, **_eval_row(ev_train, ev_val)})
    final = copy.deepcopy(sae)
    with torch.no_grad():
        final.W_enc.data = final.W_enc.data.contiguous()
        final.fold_input_scale(scale)
    final.eval()
    result = TrainResult(sae=final, eval_train=ev_train, eval_val=ev_val, steps=step,
                         tokens=steps_run * cfg.batch_size, seconds=seconds, input_scale=scale, stopped=stopped,
                         total_steps=total, log=log, out=out)
    if out is not None:
        save_sae(final, out)
        write_log(out / LOG_FILE, log)
        atomic_write_json(out / CONFIG_FILE, {
            "train": cfg.model_dump(), "sources": sources, "train_tokens": split[0], "val_tokens": split[1],
            "input_scale": scale, "steps": step, "total_steps": total, "tokens": step * cfg.batch_size,
            "stopped": stopped, "fvu_val": None if ev_val is None else ev_val.fvu, "fvu_train": ev_train.fvu,
            "final_eval": result.eval.as_dict(), "eval_val": None if ev_val is None else ev_val.as_dict(),
            "eval_train": ev_train.as_dict(), "tokens_per_second": result.tokens_per_second,
            "torch": torch.__version__, "threads": torch.get_num_threads(),
        })
        plot_loss_curve(log, out / CURVE_FILE)
    return result
