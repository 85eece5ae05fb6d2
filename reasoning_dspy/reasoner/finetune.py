"""LoRA fine-tuning of a causal LM on chat examples (DSPy's fine-tuning format), sized for a CPU.

    >>> from reasoning_dspy.models import load_model
    >>> from reasoning_dspy.reasoner.finetune import FinetuneConfig, finetune, load_adapter
    >>> result = finetune(FinetuneConfig(base_model="smollm2", out="runs/reasoner"), examples)
    >>> loaded = load_adapter(load_model("smollm2"), "runs/reasoner")   # merged into the weights

Where the time goes, and what the trainer does about it: LoRA sits on the upper layers only, so no
tensor below the first adapted layer needs a gradient and the backward pass stops there; the LM head
and loss run only at answer positions (`finetune_data.labelled_loss`); batches group similar lengths;
matmuls run in bf16 under autocast where the hardware has bf16 units. The output folder holds the
adapter in PEFT's layout, `reasoner.json`, `log.jsonl` and `checkpoint/`, from which `resume=True`
continues exactly as an uninterrupted run would.
"""

from __future__ import annotations

import copy
import json
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from reasoning_dspy.models import LoadedModel, check_device, load_model, model_spec
from reasoning_dspy.models.adapter_files import AdapterError, load_adapter
from reasoning_dspy.reasoner.finetune_config import FinetuneConfig
from reasoning_dspy.reasoner.finetune_data import (
    IGNORE,
    Spans,
    batch_stream,
    batches_per_epoch,
    check_examples,
    check_untrained,
    collate,
    encode_examples,
    fast_path_supported,
    fingerprint,
    label_weight,
    labelled_loss,
    reference_loss,
    stop_ids,
)
from reasoning_dspy.reasoner.finetune_files import (
    CHECKPOINT_DIR,
    LOG_FILE,
    load_checkpoint,
    read_log,
    save_adapter,
    save_checkpoint,
    write_log,
)

__all__ = ["AdapterError", "FinetuneConfig", "FinetuneResult", "finetune", "load_adapter"]

Stopped = Literal["completed", "budget_time", "interrupted"]
_clock = time.perf_counter  # the time budget's clock


@dataclass
class FinetuneResult:
    """A fine-tuning run: the trained `PeftModel` (adapter not merged), its last step's loss, and how
    it ended. `steps` counts all steps of the schedule done so far (resumed runs included); `tokens` and
    `seconds` are this run's (input tokens, padding excluded). `stopped` is `completed`, `budget_time`
    (`max_seconds`; resume to continue) or `interrupted` (`stop_after`: a checkpoint but no adapter)."""

    model: Any
    loss: float
    steps: int
    total_steps: int
    tokens: int
    seconds: float
    out: Path | None
    stopped: Stopped = "completed"
    n_examples: int = 0
    truncated: int = 0
    dropped: int = 0
    log: list[dict[str, Any]] = field(default_factory=list)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else float("nan")


def lr_at(cfg: FinetuneConfig, step: int, total: int) -> float:
    """Linear warm-up over the first `warmup_frac` of the steps, then linear decay to 0 at `total`."""
    warm = max(1, round(cfg.warmup_frac * total)) if cfg.warmup_frac > 0 else 0
    if step < warm:
        return cfg.lr * (step + 1) / warm
    return cfg.lr * max(0.0, (total - step) / max(1, total - warm))


def resolve_compute_dtype(name: str, device: torch.device) -> torch.dtype:
    """`auto`: bfloat16 where matmuls have bf16 units (CUDA with bf16, a CPU with AMX/AVX512-BF16);
    elsewhere bf16 is a slow emulation and float32 is faster."""
    if name != "auto":
        return getattr(torch, name)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    if device.type == "cpu" and (torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()):
        return torch.bfloat16
    return torch.float32


def adapted_layers(cfg: FinetuneConfig, n_layers: int, name: str) -> list[int]:
    """Indices of the decoder layers that get LoRA: the last `upper_layers` (default: the upper half)."""
    upper = cfg.upper_layers if cfg.upper_layers is not None else max(1, n_layers // 2)
    if upper > n_layers:
        raise ValueError(f"upper_layers={upper} exceeds the {n_layers} decoder layers of {name}; "
                         f"use 1..{n_layers}")
    return list(range(n_layers - upper, n_layers))


def build_peft_model(cfg: FinetuneConfig, loaded: LoadedModel) -> Any:
    """Wrap `loaded.model` (modified in place) with LoRA on `target_modules` of the upper layers,
    initialised from `cfg.seed`; only the adapter is trainable."""
    from peft import LoraConfig, get_peft_model

    spec = loaded.model_spec
    layers = adapted_layers(cfg, spec.n_layers, spec.name)
    one_layer = {n.rsplit(".", 1)[-1] for n, m in spec.layers[layers[0]].named_modules()
                 if isinstance(m, torch.nn.Linear)}
    missing = [m for m in cfg.target_modules if m not in one_layer]
    if missing:
        raise ValueError(f"target_modules {missing} are not linear layers of {spec.name}'s decoder layers; "
                         f"it has {sorted(one_layer)}")
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(cfg.target_modules), layers_to_transform=layers,
                      layers_pattern=spec.layers_path.rsplit(".", 1)[-1], task_type="CAUSAL_LM",
                      base_model_name_or_path=spec.name)
    torch.manual_seed(cfg.seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # transformers deprecations peft still calls
        return get_peft_model(loaded.model, lora)


def _prepare_model(cfg: FinetuneConfig, loaded: LoadedModel | None, device: torch.device) -> LoadedModel:
    """The base model to train on `device`: loaded in float32, or a copy of the one given (never modified)."""
    if loaded is None:
        return load_model(cfg.base_model, dtype="float32", device=device)
    from reasoning_dspy.models.gguf import ALIASES

    if loaded.model_spec.name not in (cfg.base_model, ALIASES.get(cfg.base_model)):
        raise ValueError(f"the given model is {loaded.model_spec.name!r} but cfg.base_model is {cfg.base_model!r}; "
                         "set base_model to the model you pass (it is recorded with the adapter)")
    model = copy.deepcopy(loaded.model).to(device)
    return LoadedModel(model, loaded.tokenizer, model_spec(model, loaded.model_spec.name))


def finetune(cfg: FinetuneConfig, examples: list[dict[str, Any]], *, loaded: LoadedModel | None = None,
             progress: bool = True, stop_after: int | None = None) -> FinetuneResult:
    """Fine-tune `cfg.base_model` with LoRA on `examples` (`{"messages": [...]}`, the answer last, and
    optionally `"untrained": [[start, end], ...]`, spans of the answer that carry no loss).

    `loaded` reuses a model already in memory (it is copied, not modified). Budget: `max_seconds`
    ends this run early (the clock starts at this call; at least one step runs), saving the adapter
    and a checkpoint; the LR schedule stays on the planned steps, so `resume=True` continues it
    exactly. `stop_after` ends the run after that many steps with a checkpoint only, as a crash after
    a checkpoint would. Global RNG state is left as it was.
    """
    started = _clock()
    device = check_device(cfg.device)
    conversations = check_examples(examples)
    untrained = check_untrained(examples)
    out = Path(cfg.out) if cfg.out else None
    if out is not None and out.exists() and not out.is_dir():
        raise ValueError(f"the output {str(out)!r} is an existing file; out must be a folder")
    ckpt = out / CHECKPOINT_DIR if out else None
    has_ckpt = ckpt is not None and (ckpt / "state.json").is_file()
    if has_ckpt and not cfg.resume:
        raise ValueError(f"{out} already holds a run (checkpoint/); pass resume=True to continue it, or choose "
                         "a new out folder")
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        return _run(cfg, conversations, untrained, loaded, device, out, has_ckpt, progress, stop_after, started)


def _run(cfg: FinetuneConfig, conversations: list[list[dict[str, str]]], untrained: list[Spans],
         loaded: LoadedModel | None,
         device: torch.device, out: Path | None, has_ckpt: bool, progress: bool, stop_after: int | None,
         started: float) -> FinetuneResult:
    from tqdm.auto import tqdm

    ckpt = out / CHECKPOINT_DIR if out else None
    base = _prepare_model(cfg, loaded, device)
    spec, tokenizer = base.model_spec, base.tokenizer
    data = encode_examples(tokenizer, conversations, stop_ids(base.model, tokenizer), cfg.max_length, cfg.overlong,
                           cfg.field_start_weight, cfg.field_start_tokens, untrained)
    if data.truncated or data.dropped:
        what = f"cut {data.truncated}" if cfg.overlong == "truncate" else f"left out {data.dropped}"
        warnings.warn(f"{data.truncated + data.dropped} of {len(conversations)} examples exceed max_length="
                      f"{cfg.max_length} tokens: {what}" + (f" and left out {data.dropped} (no answer token "
                      "left)" if cfg.overlong == "truncate" and data.dropped else ""), stacklevel=3)
    data_id = fingerprint(conversations, untrained)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    lengths = data.lengths
    per_epoch = batches_per_epoch(len(lengths), cfg.batch_size)
    total = cfg.max_steps or max(1, math.ceil(cfg.epochs * per_epoch / cfg.grad_accum))

    peft_model = build_peft_model(cfg, base)
    causal_lm = peft_model.base_model.model
    fast = cfg.fast_loss and fast_path_supported(causal_lm)
    params = {n: p for n, p in peft_model.named_parameters() if p.requires_grad}
    opt = torch.optim.AdamW(list(params.values()), lr=cfg.lr, weight_decay=cfg.weight_decay)
    compute_dtype = resolve_compute_dtype(cfg.compute_dtype, device)

    step, epoch, position, tokens_before, seconds_before, log = 0, 0, 0, 0, 0.0, []
    if has_ckpt:
        assert ckpt is not None and out is not None
        state = load_checkpoint(ckpt, params, opt, device)
        if state["config"] != cfg.run_identity():
            diff = sorted(k for k, v in cfg.run_identity().items() if state["config"].get(k) != v)
            raise ValueError(f"cannot resume {ckpt}: the config differs in {diff}; use the same settings or a new "
                             "out folder")
        if state["data"] != data_id:
            raise ValueError(f"cannot resume {ckpt}: it was trained on other examples (data fingerprint "
                             f"{state['data']}, these are {data_id}); pass the same examples or a new out folder")
        step, epoch, position = state["step"], state["epoch"], state["position"]
        tokens_before, seconds_before = state["tokens"], state["seconds"]
        log = read_log(out / LOG_FILE, step)
    if out is not None:
        write_log(out / LOG_FILE, log)

    def checkpoint() -> None:
        if ckpt is not None:
            save_checkpoint(ckpt, params, opt, {
                "step": step, "epoch": next_pos[0], "position": next_pos[1], "total_steps": total,
                "tokens": tokens_before + tokens, "seconds": seconds_before + (time.perf_counter() - start),
                "data": data_id, "config": cfg.run_identity()}, device)

    peft_model.train()
    stream = batch_stream(lengths, cfg.batch_size, cfg.seed, cfg.bucket, epoch, position)
    next_pos = (epoch, position)
    bar = tqdm(total=total, initial=step, disable=not progress, unit="step", desc=f"finetune {spec.name}",
               dynamic_ncols=True)
    start, tokens, start_step = time.perf_counter(), 0, step
    stopped: Stopped = "completed"
    log_fh = open(out / LOG_FILE, "a") if out is not None else None  # noqa: SIM115 (closed below)
    try:
        while step < total:
            micro = []
            for _ in range(cfg.grad_accum):
                e, i, idx = next(stream)
                next_pos = (e, i + 1) if i + 1 < per_epoch else (e + 1, 0)
                micro.append(collate([data.examples[j] for j in idx], pad_id))
            n_labels = sum(int((b["labels"][:, 1:] != IGNORE).sum()) for b in micro)
            weight = sum(label_weight(b) for b in micro)
            lr = lr_at(cfg, step, total)
            for group in opt.param_groups:
                group["lr"] = lr
            loss_sum, step_tokens = _accumulate(causal_lm, micro, weight, device, compute_dtype, fast)
            tokens += step_tokens
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(list(params.values()), cfg.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            elapsed = time.perf_counter() - start
            row = {"step": step, "loss": loss_sum / weight, "tokens": tokens_before + tokens,
                   "answer_tokens": n_labels, "lr": lr, "seconds": round(seconds_before + elapsed, 3)}
            if not math.isfinite(row["loss"]):
                raise FloatingPointError(f"the loss is {row['loss']} at step {step} (lr={cfg.lr}); nothing after "
                                         "the last checkpoint was saved. Lower lr or check the examples")
            log.append(row)
            if log_fh is not None:
                log_fh.write(_json_line(row))
                log_fh.flush()
            bar.set_postfix(loss=f"{row['loss']:.4f}", tok_s=f"{tokens / max(elapsed, 1e-9):.0f}")
            bar.update(1)
            if stop_after is not None and step >= stop_after and step < total:
                stopped = "interrupted"
                break
            if cfg.save_every and step % cfg.save_every == 0 and step < total:
                checkpoint()
            if step < total and cfg.max_seconds is not None and _clock() - started >= cfg.max_seconds:
                stopped = "budget_time"
                break
    finally:
        bar.close()
        if log_fh is not None:
            log_fh.close()
    seconds = time.perf_counter() - start
    checkpoint()
    peft_model.eval()
    final_loss = log[-1]["loss"] if log else float("nan")
    result = FinetuneResult(model=peft_model, loss=final_loss, steps=step, total_steps=total, tokens=tokens,
                            seconds=seconds, out=out, stopped=stopped, n_examples=len(data.examples),
                            truncated=data.truncated, dropped=data.dropped, log=log)
    if out is not None and stopped != "interrupted":
        save_adapter(peft_model, out, _info(cfg, spec, data_id, result, tokens_before, seconds_before,
                                            compute_dtype, fast, step - start_step))
    return result


def _accumulate(causal_lm: torch.nn.Module, micro: list[dict[str, torch.Tensor]], weight: float,
                device: torch.device, compute_dtype: torch.dtype, fast: bool) -> tuple[float, int]:
    """Forward and backward over one step's batches, each scaled by the step's (weighted) answer-token
    count, so the gradient is that of the mean loss over the whole step. Returns (summed loss, input
    tokens)."""
    loss_sum, tokens = 0.0, 0
    for batch in micro:
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with torch.autocast(device.type, dtype=compute_dtype, enabled=compute_dtype != torch.float32):
            loss = (labelled_loss if fast else reference_loss)(causal_lm, batch)
        (loss / weight).backward()
        loss_sum += loss.item()
        tokens += int(batch["attention_mask"].sum())
    return loss_sum, tokens


def _json_line(row: dict[str, Any]) -> str:
    return json.dumps(row) + "\n"


def _info(cfg: FinetuneConfig, spec: Any, data_id: str, result: FinetuneResult, tokens_before: int,
          seconds_before: float, compute_dtype: torch.dtype, fast: bool, steps_run: int) -> dict[str, Any]:
    """`reasoner.json`: what `load_adapter` checks (base model, width, depth) and how the adapter was made."""
    import peft
    import transformers

    return {
        "base_model": spec.name, "d_model": spec.d_model, "n_layers": spec.n_layers,
        "adapted_layers": adapted_layers(cfg, spec.n_layers, spec.name), "config": cfg.model_dump(),
        "data": data_id, "n_examples": result.n_examples, "truncated": result.truncated, "dropped": result.dropped,
        "final_loss": result.loss, "steps": result.steps, "total_steps": result.total_steps,
        "stopped": result.stopped, "tokens": tokens_before + result.tokens,
        "seconds": round(seconds_before + result.seconds, 3), "steps_this_run": steps_run,
        "tokens_per_second": result.tokens_per_second, "compute_dtype": str(compute_dtype).removeprefix("torch."),
        "fast_loss": fast, "threads": torch.get_num_threads(), "torch": torch.__version__,
        "transformers": transformers.__version__, "peft": peft.__version__,
    }

