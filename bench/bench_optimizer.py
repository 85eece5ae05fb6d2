"""Optimizer throughput: trials per minute with the micro-batched engine against `max_batch_size=1`,
the same `ReasoningOptimizer` search in the same run.

    python bench/bench_optimizer.py                                  # smollm2-reasoner, its shipped SAE
    python bench/bench_optimizer.py --model tiny-random --trials 8   # the planted tiny SAE, seconds
    python bench/bench_optimizer.py --examples 16 --device cuda --json runs/bench/optimizer.json

Both runs use the same seed, so they propose the same candidates; the check at the end says so.
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

from optimizers import ReasoningOptimizer  # noqa: E402
from reasoning_dspy.models import load_model  # noqa: E402
from reasoning_dspy.problems import as_dspy_examples, make_problems  # noqa: E402
from reasoning_dspy.program.adapter import LenientChatAdapter  # noqa: E402
from reasoning_dspy.program.lm import SteeredLM, engine_of  # noqa: E402

METHOD = ("The same `ReasoningOptimizer` search run twice in one process with the same seed, so the same candidates "
          "(checked): once on a micro-batched engine (`max_batch_size` = `batch_size`: a batch of `batch_trials` "
          "candidates × `examples` problems decodes as one batch) and once with `max_batch_size=1` (the same "
          "calls from parallel threads, decoded one at a time). Throughput is trials per minute.")
TARGET_SETTINGS = {"model": "smollm2-reasoner", "trials": 8, "examples": 16, "max_tokens": 96, "batch_trials": 4,
                   "batch_size": 64}


def setup(model: str, device: str = "cpu"):
    """The model, SAE, f_max, candidate and reasoning features."""
    if model == "tiny-random":
        from reasoning_dspy.sae import planted

        loaded = load_model(model)
        sae = planted.planted_sae(loaded.model, loaded.tokenizer)  # built from CPU forwards, then moved
        loaded.model.to(device)
        return loaded, sae.to(device), None, planted.CANDIDATES, planted.REASONING
    from reasoning_dspy.features.reasonscore import FeatureScores
    from reasoning_dspy.sae import load_sae
    from reasoning_dspy.sae.io import shipped_sae_folder

    loaded = load_model(model, device=device)
    scores = FeatureScores.load(shipped_sae_folder(model) / "scores")
    return loaded, load_sae(model, device=device), scores.max_activation, scores.top(3), scores.top(3)


def run(loaded, sae, fmax, features, reasoning, train, *, max_batch_size: int, trials: int, batch_trials: int,
        max_tokens: int) -> tuple[float, list]:
    lm = SteeredLM(loaded, sae=sae, max_activation=fmax, reasoning_features=reasoning, max_tokens=max_tokens,
                   cache=False, max_batch_size=max_batch_size)
    optimizer = ReasoningOptimizer(features=features, n_trials=trials, batch_trials=batch_trials,
                                   accuracy_margin=None, progress=True, seed=0, adapter=LenientChatAdapter())
    start = time.perf_counter()
    with dspy.context(lm=lm):
        compiled = optimizer.compile(dspy.ChainOfThought("question -> answer"), trainset=train)
    elapsed = time.perf_counter() - start
    engine_of(lm).close()
    return elapsed, compiled.trials


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-reasoner")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--batch-trials", type=int, default=4)
    parser.add_argument("--examples", type=int, default=8, help="training examples per trial")
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=64, help="max_batch_size of the batched engine")
    add_result_args(parser)
    args = parser.parse_args()
    check_device_arg(parser, args.device)
    out = ResultWriter.from_args(args, "optimizer")

    loaded, sae, fmax, features, reasoning = setup(args.model, args.device)
    train = as_dspy_examples(make_problems(args.examples, split="train"))
    common = dict(trials=args.trials, batch_trials=args.batch_trials, max_tokens=args.max_tokens)
    batched, b_trials = run(loaded, sae, fmax, features, reasoning, train, max_batch_size=args.batch_size, **common)
    single, s_trials = run(loaded, sae, fmax, features, reasoning, train, max_batch_size=1, **common)
    same = [t.candidate for t in b_trials] == [t.candidate for t in s_trials]
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads; {args.model}, {args.trials} trials x "
          f"{args.examples} examples, max_tokens {args.max_tokens}")
    print(f"micro-batched (max_batch_size={args.batch_size}): {batched:.1f} s = {60 * args.trials / batched:.1f} "
          "trials/min")
    print(f"one at a time (max_batch_size=1): {single:.1f} s = {60 * args.trials / single:.1f} trials/min")
    print(f"ratio: {single / batched:.2f}x (same candidates proposed: {same})")

    settings = {"model": args.model, "trials": args.trials, "examples": args.examples, "max_tokens": args.max_tokens,
                "batch_trials": args.batch_trials, "batch_size": args.batch_size, "device": args.device}
    case = f"{args.model}, {args.trials} trials × {args.examples} problems, max_tokens {args.max_tokens}"
    per_min = {label: 60 * args.trials / sec for label, sec in (("batched", batched), ("single", single))}
    out.write(title="Optimizer throughput", compares="micro-batched engine vs one call at a time", method=METHOD,
              settings=settings,
              ratios=[Ratio(label="micro-batched vs max_batch_size=1, trials/min", case=case, ours=per_min["batched"],
                            baseline=per_min["single"], unit="trials/min",
                            target=Target.at(5.0, TARGET_SETTINGS, settings))],
              tables=[Table(columns=["model", "trials × problems", "max_tokens", "micro-batched", "one at a time",
                                     "ratio"],
                            rows=[[args.model, f"{args.trials} × {args.examples}", args.max_tokens,
                                   f"{per_min['batched']:.1f} trials/min ({batched:.1f} s)",
                                   f"{per_min['single']:.1f} trials/min ({single:.1f} s)",
                                   f"**{single / batched:.2f}×**"]])],
              notes=[f"Same candidates proposed by both runs: {'yes' if same else 'no'}."])


if __name__ == "__main__":
    main()
