"""LoRA fine-tuning throughput: our trainer vs the obvious alternative, same model, data and dtype, same run.

    python bench/bench_finetune.py                          # tiny-random, 40 steps of 8 examples (≈ 20 s)
    python bench/bench_finetune.py --model smollm2 --steps 6 --batch-size 8 --max-length 384
    python bench/bench_finetune.py --model smollm2 --device cuda --json runs/bench/finetune.json

Three runs, in this order, each a fresh LoRA (q/v, r 16) on a copy of the same base model:

- `hf labels=, all layers`: what one writes without this library: LoRA on every decoder layer, plain
  shuffled batches, `model(input_ids, attention_mask, labels=labels).loss`, i.e. the LM head and
  softmax over every position of the padded batch;
- `ours, all layers`: `finetune` with LoRA on every layer: the LM head and loss only at answer positions
  and length-bucketed batches, so the difference to the first row is those two;
- `ours (default)`: `finetune` as shipped, LoRA on the upper half only, so the backward pass stops there.

Examples are chat conversations built from the word-problem traces shipped in `reasoning_dspy/data`
(a question, then one to several traces as the answer). Tokens/s counts real (non-padding) tokens of
every example, prompt included, over all steps but the first (which allocates). Matmuls run in the
dtype `finetune` picks (`--dtype auto`: bf16 on a CPU with AMX/AVX512-BF16 or a GPU) for all three.
A busy machine slows all runs alike: read the ratios.
"""

from __future__ import annotations

import argparse
import copy
import os
import time
import warnings
from importlib import resources

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from _result import Ratio, ResultWriter, Table, add_result_args, check_device_arg  # noqa: E402

from reasoning_dspy.models import load_model  # noqa: E402
from reasoning_dspy.reasoner.finetune import FinetuneConfig, finetune, resolve_compute_dtype  # noqa: E402
from reasoning_dspy.reasoner.finetune_data import (  # noqa: E402
    batch_stream,
    check_examples,
    collate,
    encode_examples,
    stop_ids,
)

METHOD = ("Three LoRA runs (q/v, r 16) on copies of the same model, the same chat examples built from the shipped "
          "word-problem traces, the same matmul dtype (`finetune`'s choice: bf16 autocast on a CPU with bf16 "
          "units or a GPU): the loop one writes without this library (LoRA on every layer, shuffled batches, "
          "`model(..., labels=labels).loss`: LM head and softmax at every position), then `finetune` with LoRA "
          "on every layer (LM head and loss only at answer positions, length-bucketed batches), then `finetune` "
          "as shipped (LoRA on the upper half, so the backward pass stops there). Tokens/s counts every real "
          "token, prompt included, over all steps but the first (which allocates).")

def trace_examples(n: int, max_traces: int, seed: int = 0) -> list[dict]:
    """`n` chat examples: a shipped trace's question, and 1..max_traces traces as the answer."""
    text = (resources.files("reasoning_dspy") / "data" / "traces.txt").read_text(encoding="utf-8")
    blocks = [b.strip().split("\n", 1) for b in text.split("\n\n") if "\n" in b.strip()]
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        k = int(torch.randint(1, max_traces + 1, (1,), generator=gen))
        answer = "\n\n".join(blocks[(i + j) % len(blocks)][1] for j in range(k))
        out.append({"messages": [{"role": "user", "content": blocks[i % len(blocks)][0]},
                                 {"role": "assistant", "content": answer}]})
    return out


def rate(log: list[dict]) -> float:
    """Tokens/s over all logged steps but the first."""
    if len(log) < 2:
        return log[0]["tokens"] / log[0]["seconds"]
    return (log[-1]["tokens"] - log[0]["tokens"]) / (log[-1]["seconds"] - log[0]["seconds"])


def hf_baseline(loaded, examples: list[dict], args, compute_dtype: torch.dtype) -> tuple[float, float]:
    """LoRA on all layers, plain batches, HF's `labels=` loss; returns (tokens/s, last loss)."""
    from peft import LoraConfig, get_peft_model

    tok = loaded.tokenizer
    data = encode_examples(tok, check_examples(examples), stop_ids(loaded.model, tok), args.max_length)
    torch.manual_seed(0)
    model = get_peft_model(copy.deepcopy(loaded.model), LoraConfig(
        r=16, lora_alpha=32, lora_dropout=0.05, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=2e-4)
    stream = batch_stream(data.lengths, args.batch_size, seed=0, bucket=False)
    log, tokens, start, loss = [], 0, time.perf_counter(), float("nan")
    for step in range(args.steps):
        batch = collate([data.examples[j] for j in next(stream)[2]], tok.pad_token_id)
        with torch.autocast("cpu" if args.device == "cpu" else "cuda", dtype=compute_dtype,
                            enabled=compute_dtype != torch.float32):
            out = model(**{k: v.to(args.device) for k, v in batch.items()})
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss = out.loss.item()
        tokens += int(batch["attention_mask"].sum())
        log.append({"step": step + 1, "tokens": tokens, "seconds": time.perf_counter() - start})
    return rate(log), loss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="tiny-random", help="tiny-random (default) or smollm2, or any load_model name")
    ap.add_argument("--steps", type=int, default=40, help="optimiser steps per run")
    ap.add_argument("--batch-size", type=int, default=8, help="examples per step")
    ap.add_argument("--examples", type=int, default=256, help="distinct examples")
    ap.add_argument("--max-traces", type=int, default=3, help="traces per answer, 1..N (sets the length spread)")
    ap.add_argument("--max-length", type=int, default=384, help="longest example in tokens")
    ap.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"], help="matmul dtype")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: 1 for tiny-random, whose "
                    "tensors gain nothing from a second thread and lose much on a busy CPU; else torch's)")
    add_result_args(ap, device=False)  # --device is above
    args = ap.parse_args()
    check_device_arg(ap, args.device)
    out = ResultWriter.from_args(args, "finetune")
    threads = args.threads or (1 if args.model == "tiny-random" else None)
    if threads:
        torch.set_num_threads(threads)
    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers deprecations peft calls
    warnings.filterwarnings("ignore", message=r".*exceed max_length")  # reported in the header instead

    t0 = time.perf_counter()
    loaded = load_model(args.model, dtype="float32", device=args.device)
    spec = loaded.model_spec
    compute_dtype = resolve_compute_dtype(args.dtype, torch.device(args.device))
    examples = trace_examples(args.examples, args.max_traces)
    data = encode_examples(loaded.tokenizer, check_examples(examples), stop_ids(loaded.model, loaded.tokenizer),
                           args.max_length)
    mean_len = sum(data.lengths) / len(data.lengths)
    answer = sum(sum(lab != -100 for lab in e.labels) for e in data.examples) / len(data.examples)
    print(f"{spec.name}: {spec.n_layers} layers, d_model {spec.d_model}, vocab {len(loaded.tokenizer)}; loaded in "
          f"{time.perf_counter() - t0:.1f} s; torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{args.device}, matmuls in {str(compute_dtype).removeprefix('torch.')}")
    print(f"{len(examples)} examples, mean {mean_len:.0f} tokens ({answer:.0f} answer tokens), "
          f"{data.truncated} cut at {args.max_length}; {args.steps} steps of {args.batch_size} examples per run\n")

    rows = []
    t = time.perf_counter()
    base_rate, base_loss = hf_baseline(loaded, examples, args, compute_dtype)
    rows.append(("hf labels=, all layers", base_rate, base_loss, time.perf_counter() - t))
    for label, upper in (("ours, all layers", spec.n_layers), ("ours (default: upper half)", None)):
        cfg = FinetuneConfig(base_model=spec.name, max_steps=args.steps, batch_size=args.batch_size,
                             max_length=args.max_length, upper_layers=upper, compute_dtype=args.dtype,
                             device=args.device, lr=2e-4, lora_r=16, lora_alpha=32)
        t = time.perf_counter()
        result = finetune(cfg, examples, loaded=loaded, progress=False)
        rows.append((label, rate(result.log), result.loss, time.perf_counter() - t))

    print(f"{'':28} {'tokens/s':>10} {'vs hf':>7} {'last loss':>10} {'wall s':>7}")
    for label, r, loss, wall in rows:
        print(f"{label:28} {r:10.0f} {r / base_rate:6.2f}x {loss:10.3f} {wall:7.1f}")

    dtype = str(compute_dtype).removeprefix("torch.")
    case = f"{spec.name}, {args.steps} steps of {args.batch_size}, max_length {args.max_length}, {dtype}"
    out.write(title="LoRA fine-tuning", compares="finetune vs a plain PEFT loop with labels=", method=METHOD,
              settings={"model": spec.name, "steps": args.steps, "batch_size": args.batch_size,
                        "examples": args.examples, "max_traces": args.max_traces, "max_length": args.max_length,
                        "mean_tokens": round(mean_len), "matmul_dtype": dtype, "torch_threads": torch.get_num_threads(),
                        "device": args.device},
              ratios=[Ratio(label=f"{label} vs HF labels=, all layers", case=case, ours=r, baseline=base_rate,
                            unit="tokens/s") for label, r, _, _ in rows[1:]],
              tables=[Table(columns=["run", "tokens/s", "vs HF", "last loss", "wall (s)"],
                            rows=[[label, r, f"**{r / base_rate:.2f}×**", f"{loss:.3f}", wall]
                                  for label, r, loss, wall in rows])])


if __name__ == "__main__":
    main()
