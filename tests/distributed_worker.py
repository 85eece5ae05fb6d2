"""Run under `torchrun` by tests/test_distributed.py: the jobs the CLI cannot express, because they
stop part-way as a killed run would (after N shards per rank, after N training steps), and training
runs whose results are compared with one process.

    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/distributed_worker.py '<jobs JSON>'

Each job is `{"kind": "extract", "prompts": file, "out": folder, "shard_prompts": N, "stop_after_shards": N}`
or `{"kind": "train", "cfg": {SAETrainConfig fields}, "stop_after": N or null}`.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Tiny-random extraction settings shared with the test's single-process runs.
EXTRACT = {"batch_size": 4, "shard_tokens": 200, "dtype": "float32", "progress": False}
LAYER = 2


def run(job: dict) -> None:
    from reasoning_dspy.activations.chunked import ExtractionInterrupted, extract_chunked
    from reasoning_dspy.distributed import StreamedPrompts
    from reasoning_dspy.models import load_model
    from reasoning_dspy.sae import SAETrainConfig, train_sae

    if job["kind"] == "extract":
        tiny = load_model("tiny-random", dtype="float32")
        try:
            extract_chunked(tiny.model, tiny.tokenizer, StreamedPrompts(job["prompts"]), LAYER, job["out"],
                            model_name=tiny.model_spec.name, shard_prompts=job["shard_prompts"],
                            stop_after_shards=job.get("stop_after_shards"), **EXTRACT)
        except ExtractionInterrupted:
            pass
    elif job["kind"] == "train":
        train_sae(SAETrainConfig(**job["cfg"]), stop_after=job.get("stop_after"), progress=False)
    else:
        raise ValueError(f"unknown job kind {job['kind']!r}")


def main() -> None:
    from reasoning_dspy.distributed import process_group

    with process_group("cpu"):
        for job in json.loads(sys.argv[1]):
            run(job)


if __name__ == "__main__":
    main()
