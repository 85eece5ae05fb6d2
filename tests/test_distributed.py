"""Scale-out with torch.distributed: 2-process `torchrun` runs (gloo, CPU) against one process.

Extraction: the 2-process cache holds the single-process rows bit for bit, and the same shards as one
process with the same `shard_prompts`; a run stopped after one shard per rank resumes (streamed from a
local JSONL file). Training: 2 processes, each on half of every batch, end with the single-process
weights (float tolerance), also after an interruption and `--resume`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from distributed_worker import EXTRACT, LAYER

from reasoning_dspy.activations import ActivationCache, CacheError, extract_activations
from reasoning_dspy.activations.chunked import ExtractionInterrupted, extract_chunked
from reasoning_dspy.distributed import (
    DistributedError,
    StreamedPrompts,
    process_group,
)
from reasoning_dspy.prompts import PromptError
from reasoning_dspy.sae import SAETrainConfig, load_sae, train_sae
from reasoning_dspy.sae.train_data import TrainData

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("distributed_worker.py")
N_PROMPTS, SHARD_PROMPTS = 48, 8
EXTRACT_FLAGS = ["--model", "tiny-random", "--model-dtype", "float32", "--layer", str(LAYER),
                 "--batch-size", str(EXTRACT["batch_size"]), "--shard-tokens", str(EXTRACT["shard_tokens"]),
                 "--dtype", EXTRACT["dtype"], "--shard-prompts", str(SHARD_PROMPTS)]
# 127 tokens a step: the ranks take 63 and 64 rows, so the gradient weights are unequal.
# Latents unused for one step count as dead, so AuxK (whose dead set needs every rank's firing) takes part.
TRAIN = dict(arch="topk", d_sae=512, k=4, batch_size=127, lr=3e-3, tokens=127 * 24, val_fraction=0.1,
             dead_tokens=127, k_aux=16, log_every=4, init_tokens=1024, seed=3)


def torchrun(*args: str, nproc: int = 2) -> subprocess.CompletedProcess:
    """`python -m torch.distributed.run --standalone` (a free localhost port) with `nproc` processes."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), str(WORKER.parent)])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *args]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


@pytest.fixture(scope="module")
def single(tiny, bundled_prompts, tmp_path_factory):
    """One process: the prompts as a JSONL file, the plain cache, and the cache with `shard_prompts`."""
    root = tmp_path_factory.mktemp("single")
    prompts = bundled_prompts[:N_PROMPTS]
    (root / "prompts.jsonl").write_text("".join(json.dumps({"text": p}) + "\n" for p in prompts))
    plain = extract_activations(tiny.model, tiny.tokenizer, prompts, LAYER, root / "plain", **EXTRACT)
    chunked = extract_activations(tiny.model, tiny.tokenizer, prompts, LAYER, root / "chunked",
                                  shard_prompts=SHARD_PROMPTS, **EXTRACT)
    return {"root": root, "prompts": prompts, "plain": plain, "chunked": chunked}


def _same_rows(a: ActivationCache, b: ActivationCache) -> None:
    da, db = a.load(), b.load()
    for k in da:
        assert torch.equal(da[k], db[k]), k


@pytest.mark.slow  # torchrun: 2 processes importing torch (10-25 s)
def test_two_process_extraction_equals_single_process(single, tmp_path):
    out = tmp_path / "cache"
    res = torchrun("-m", "reasoning_dspy.cli", "extract", "--prompts", str(single["root"] / "prompts.jsonl"),
                   "--out", str(out), *EXTRACT_FLAGS)
    assert res.stdout.count("ActivationCache(") == 1  # rank 0 reports, once
    cache = ActivationCache(out)
    assert cache.manifest.complete and cache.manifest.n_prompts == N_PROMPTS
    _same_rows(cache, single["plain"])  # row for row, bit for bit, as one process writes them
    # with the same chunking, one process writes the same shards: same boundaries, sizes and tensors
    assert cache.manifest.shards == single["chunked"].manifest.shards
    assert cache.manifest.prompts_sha256 == single["plain"].manifest.prompts_sha256
    assert cache.prompts() == single["prompts"]
    for i in range(len(cache.manifest.shards)):  # same tensors (the header's key order is not fixed)
        mine, theirs = cache.load_shard(i), single["chunked"].load_shard(i)
        assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    progress = {p.name: json.loads(p.read_text()) for p in (out / "progress").iterdir()}
    assert sorted(progress) == ["rank-00000-of-00002.json", "rank-00001-of-00002.json"]
    starts = {r["rank"]: {s["prompt_start"] // SHARD_PROMPTS for s in r["shards"]} for r in progress.values()}
    assert starts == {0: {0, 2, 4}, 1: {1, 3, 5}}  # chunks of 8 prompts, taken in turn


@pytest.mark.slow
def test_interrupted_streamed_extraction_resumes(tiny, single, tmp_path):
    out = tmp_path / "cache"
    job = {"kind": "extract", "prompts": str(single["root"] / "prompts.jsonl"), "out": str(out),
           "shard_prompts": SHARD_PROMPTS, "stop_after_shards": 1}
    torchrun(str(WORKER), json.dumps([job]))  # each rank stops after its first shard, as if killed
    partial = ActivationCache(out)
    assert not partial.manifest.complete and partial.manifest.shards == []
    written = {p.name: p.stat().st_mtime_ns for p in out.glob("shard_*.safetensors")}
    assert len(written) == 2 and not (out / "prompts.jsonl").exists()
    # one process can finish what two started (it reads both ranks' progress files)
    alone = shutil.copytree(out, tmp_path / "alone")
    streamed = StreamedPrompts(single["root"] / "prompts.jsonl")
    _same_rows(extract_activations(tiny.model, tiny.tokenizer, streamed, LAYER, alone, **EXTRACT), single["plain"])

    torchrun("-m", "reasoning_dspy.cli", "extract", "--streaming", "--prompts", str(single["root"] / "prompts.jsonl"),
             "--out", str(out), *EXTRACT_FLAGS)
    cache = ActivationCache(out)
    assert cache.manifest.complete and cache.manifest.n_prompts == N_PROMPTS
    assert cache.manifest.source.startswith("json:") and cache.prompts() == single["prompts"]
    assert cache.manifest.prompts_sha256 == single["plain"].manifest.prompts_sha256
    assert cache.manifest.shards == single["chunked"].manifest.shards
    _same_rows(cache, single["plain"])
    assert {n: (out / n).stat().st_mtime_ns for n in written} == written  # finished shards were not redone


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return dict(load_sae(path).named_parameters())


def _losses(path: Path) -> list[float]:
    return [r["loss"] for r in map(json.loads, (path / "train_log.jsonl").read_text().splitlines()) if "loss" in r]


@pytest.mark.slow
def test_two_process_training_matches_single_process_and_resumes(single, tmp_path):
    cache = str(single["root"] / "plain")
    ref = {}
    for arch, kw in (("topk", {}), ("relu", {"l1_coefficient": 1.0})):
        cfg = SAETrainConfig(**{**TRAIN, "arch": arch, **kw}, cache=cache, out=str(tmp_path / f"one_{arch}"))
        ref[arch] = (cfg, train_sae(cfg, progress=False))
    jobs = [{"kind": "train", "cfg": ref[a][0].model_copy(update={"out": str(tmp_path / f"two_{a}")}).model_dump()}
            for a in ref]
    jobs.append({"kind": "train", "cfg": ref["topk"][0].model_copy(update={"out": str(tmp_path / "resumed")}).model_dump(),
                 "stop_after": 10})
    torchrun(str(WORKER), json.dumps(jobs))
    assert not (tmp_path / "resumed" / "sae_weights.safetensors").exists()  # stopped before the end
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in TRAIN.items()]
    res = torchrun("-m", "reasoning_dspy.cli", "train-sae", "--cache", cache, "--out", str(tmp_path / "resumed"),
                   "--resume", *flags)
    assert res.stdout.count("FVU") == 1  # rank 0 reports, once

    for arch, name in (("topk", "two_topk"), ("relu", "two_relu"), ("topk", "resumed")):
        one, two = _weights(tmp_path / f"one_{arch}"), _weights(tmp_path / name)
        for k in one:
            torch.testing.assert_close(two[k], one[k], atol=1e-5, rtol=1e-4, msg=f"{name}: {k}")
        assert _losses(tmp_path / name) == pytest.approx(_losses(tmp_path / f"one_{arch}"), rel=1e-4)
        meta = json.loads((tmp_path / name / "training_config.json").read_text())
        assert meta["steps"] == 24 and meta["fvu_val"] == pytest.approx(ref[arch][1].eval.fvu, rel=1e-4)


# -- one process -----------------------------------------------------------------------------------
def test_chunked_and_streamed_extraction_in_one_process(tiny, single, tmp_path):
    """The chunked path alone: same rows as the plain cache; a stopped run resumes with the chunking
    its manifest recorded; a streamed source gives the same cache and is re-used when finished."""
    out = tmp_path / "cache"
    with pytest.raises(ExtractionInterrupted):
        extract_chunked(tiny.model, tiny.tokenizer, single["prompts"], LAYER, out, shard_prompts=SHARD_PROMPTS,
                        stop_after_shards=2, **EXTRACT)
    resumed = extract_activations(tiny.model, tiny.tokenizer, single["prompts"], LAYER, out, **EXTRACT)
    assert resumed.manifest.shard_prompts == SHARD_PROMPTS  # taken from the manifest
    assert resumed.manifest.shards == single["chunked"].manifest.shards
    _same_rows(resumed, single["plain"])

    streamed = StreamedPrompts(single["root"] / "prompts.jsonl", limit=20)
    cache = extract_activations(tiny.model, tiny.tokenizer, streamed, LAYER, tmp_path / "s", **EXTRACT)
    assert cache.manifest.n_prompts == 20 and cache.prompts() == single["prompts"][:20]
    assert cache.manifest.shard_prompts == 64 * EXTRACT["batch_size"]  # the default chunk
    stamp = (tmp_path / "s" / "manifest.json").stat().st_mtime_ns
    again = extract_activations(tiny.model, tiny.tokenizer, streamed, LAYER, tmp_path / "s", **EXTRACT)
    assert again.n_tokens == cache.n_tokens and (tmp_path / "s" / "manifest.json").stat().st_mtime_ns == stamp
    with pytest.raises(CacheError, match="source"):
        extract_activations(tiny.model, tiny.tokenizer, StreamedPrompts(single["root"] / "prompts.jsonl", limit=9),
                            LAYER, tmp_path / "s", **EXTRACT)
    with pytest.raises(ValueError, match="multiple of batch_size=4"):
        extract_activations(tiny.model, tiny.tokenizer, single["prompts"], LAYER, tmp_path / "x", shard_prompts=6,
                            **EXTRACT)


def test_streamed_prompts_read_lazily_with_clear_errors(tmp_path):
    (tmp_path / "p.txt").write_text("first\n\n  \nsecond\nthird\n")
    assert list(StreamedPrompts(tmp_path / "p.txt")) == ["first", "second", "third"]
    assert list(StreamedPrompts(tmp_path / "p.txt", limit=2)) == ["first", "second"]
    (tmp_path / "q.jsonl").write_text(json.dumps({"question": "Why?", "id": 1}) + "\n")
    assert list(StreamedPrompts(tmp_path / "*.jsonl")) == ["Why?"]  # a glob of local files
    with pytest.raises(PromptError, match="has no column 'text'"):
        list(StreamedPrompts(tmp_path / "q.jsonl", column="text"))
    with pytest.raises(PromptError, match="prompts file not found"):
        StreamedPrompts(tmp_path / "nope.jsonl")
    with pytest.raises(PromptError, match="is a folder"):
        StreamedPrompts(tmp_path)
    with pytest.raises(PromptError, match="cannot stream 'p.md'"):
        (tmp_path / "p.md").write_text("x")
        StreamedPrompts(tmp_path / "p.md")


def test_torchrun_without_a_process_group_is_refused(tiny, monkeypatch, tmp_path):
    for key in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(CacheError, match="joined no process group"):
        extract_activations(tiny.model, tiny.tokenizer, ["a b c"], LAYER, tmp_path, progress=False)
    with pytest.raises(ValueError, match="joined no process group"):
        train_sae(SAETrainConfig(d_sae=16, k=2, batch_size=8), torch.randn(64, 8), progress=False)
    with pytest.raises(DistributedError, match="WORLD_SIZE is set but RANK, MASTER_ADDR, MASTER_PORT not"):
        with process_group("cpu"):
            pass
    with pytest.raises(ValueError, match="batch_size=2 is smaller than the 4 processes"):
        TrainData([torch.randn(64, 8)], 2, 0, 0.0, part=(0, 4))
