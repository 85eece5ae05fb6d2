"""Activation extraction split across the ranks of a process group, or over a streamed dataset.

The prompts are cut into chunks of `shard_prompts` prompts (a multiple of the batch size) and rank r
takes chunks r, r + R, r + 2R, ... Every batch is then the batch a single process runs (same
prompts, same padding, same attention-sink median), so the merged cache holds the single-process
rows, bit for bit, in the same order; only the shard files differ (a shard also ends at each chunk
end). A single process given the same `shard_prompts` writes the same shards.

Each rank writes its shards (`shard_p<first prompt>.safetensors`) and lists them, after each write,
in its own `progress/rank-<r>-of-<R>.json`. A restarted run reads every progress file, skips the
shards listed there whose files are intact, and resumes each chunk after its last finished shard, so
a resumed run writes the same files an uninterrupted one would, with any number of ranks. When all
ranks are done, rank 0 checks that the shards cover every prompt exactly once and writes the one
`manifest.json` (atomically); until then the manifest lists no shards.

A streamed source (any iterable that is not a sequence) is read once by every rank, which keeps
only its own chunks, so the corpus is never held in memory; rank 0 also writes `prompts.jsonl` and
the prompts' fingerprint as it goes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from pathlib import Path

from torch import nn

from reasoning_dspy._io import atomic_write_json, atomic_write_text
from reasoning_dspy.activations.cache import (
    MANIFEST,
    PROMPTS,
    ActivationCache,
    CacheError,
    CacheManifest,
    ShardInfo,
    StorageDType,
    _start_or_resume,
    prompts_fingerprint,
    write_shard,
)
from reasoning_dspy.activations.residuals import iter_residuals
from reasoning_dspy.distributed.group import Ranks, all_ok, current, share_from_main
from reasoning_dspy.models import model_spec as get_model_spec
from reasoning_dspy.models import resolve_dtype

PROGRESS = "progress"
#: Default chunk, in batches: large enough that a shard is rarely cut short by a chunk end.
CHUNK_BATCHES = 64


class ExtractionInterrupted(RuntimeError):
    """Raised by `extract_chunked(stop_after_shards=N)`: this rank stopped as a killed run would."""


def extract_chunked(
    model: nn.Module,
    tokenizer,
    prompts: Iterable[str],
    layer: int,
    out_dir: str | os.PathLike,
    *,
    model_name: str | None = None,
    batch_size: int = 16,
    max_length: int = 256,
    dtype: StorageDType = "bfloat16",
    shard_tokens: int = 65_536,
    shard_prompts: int | None = None,
    keep_special_tokens: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    stop_after_shards: int | None = None,
) -> ActivationCache:
    """`extract_activations` by chunks of `shard_prompts` prompts, shared round-robin by the ranks of the
    current process group (one rank without a group). The default chunk is `CHUNK_BATCHES` batches,
    fewer when a list of prompts would give a rank under 4 chunks.

    `prompts` is a list or a stream (an iterable read once per rank, such as `StreamedPrompts`, whose
    `identity` then names the source in the manifest). `stop_after_shards` ends this rank's part
    after that many shards with `ExtractionInterrupted`, as a killed run would (tests). Every rank
    returns the merged `ActivationCache`.
    """
    ranks = current()
    if batch_size < 1 or max_length < 1 or shard_tokens < 1:
        raise ValueError(f"batch_size, max_length and shard_tokens must be positive, got batch_size={batch_size}, "
                         f"max_length={max_length}, shard_tokens={shard_tokens}")
    streamed = not isinstance(prompts, Sequence)
    if not streamed:
        prompts = list(prompts)
        if not prompts:
            raise ValueError("no prompts to extract activations from")
    if shard_prompts is None:
        shard_prompts = batch_size * (CHUNK_BATCHES if streamed else _default_chunk(len(prompts), batch_size, ranks))
    if shard_prompts < 1 or shard_prompts % batch_size:
        raise ValueError(f"shard_prompts={shard_prompts} must be a positive multiple of batch_size={batch_size}, so "
                         "that every batch is the one a single process runs")
    spec = get_model_spec(model, model_name)
    layer = spec.check_layer(layer)
    out = Path(out_dir)
    wanted = CacheManifest(
        model=spec.name, layer=layer, d_model=spec.d_model, dtype=dtype, max_length=max_length,
        batch_size=batch_size, keep_special_tokens=keep_special_tokens,
        n_prompts=0 if streamed else len(prompts), prompts_sha256="" if streamed else prompts_fingerprint(prompts),
        shard_prompts=shard_prompts, source=_identity(prompts) if streamed else None,
    )
    error, complete = None, False
    if ranks.is_main:
        try:
            complete = _prepare(out, wanted, overwrite, None if streamed else prompts)
        except (CacheError, OSError) as err:
            error = err
    all_ok(error)
    if share_from_main(complete):
        return ActivationCache(out)

    run = _RankRun(out, ranks, wanted, shard_prompts, shard_tokens, stop_after_shards)
    error = None
    try:
        n_prompts, sha = run.extract(model, tokenizer, prompts, spec, progress)
    except ExtractionInterrupted:
        raise
    except Exception as err:  # reported to every rank by all_ok, so no rank waits for a failed one
        error, n_prompts, sha = err, 0, ""
    all_ok(error)
    if ranks.is_main:
        try:
            _merge(out, wanted, n_prompts, sha)
        except (CacheError, OSError) as err:
            error = err
    all_ok(error)
    return ActivationCache(out)


def _default_chunk(n_prompts: int, batch_size: int, ranks: Ranks) -> int:
    """Batches per chunk: `CHUNK_BATCHES`, fewer when that would leave a rank under 4 chunks (balance)."""
    n_batches = -(-n_prompts // batch_size)
    return max(1, min(CHUNK_BATCHES, -(-n_batches // (4 * ranks.world_size))))


def _identity(prompts: Iterable[str]) -> str:
    return str(getattr(prompts, "identity", None) or type(prompts).__name__)


def _prepare(out: Path, wanted: CacheManifest, overwrite: bool, prompts: list[str] | None) -> bool:
    """Rank 0: create, check or reset the cache folder; True when it already holds the finished cache."""
    path = out / MANIFEST
    if out.exists() and not out.is_dir():
        raise CacheError(f"{str(out)!r} is an existing file; the cache (out_dir, --out) must be a folder")
    fresh = overwrite or not path.is_file()
    if wanted.source is not None and not fresh:  # a finished streamed cache knows its size; compare the rest
        try:
            existing = CacheManifest.model_validate_json(path.read_text())
        except ValueError:
            existing = None
        if existing is not None and existing.complete and existing.source == wanted.source:
            wanted = wanted.model_copy(update={"n_prompts": existing.n_prompts,
                                               "prompts_sha256": existing.prompts_sha256})
    manifest = _start_or_resume(out, wanted, overwrite)
    if fresh:
        shutil.rmtree(out / PROGRESS, ignore_errors=True)
    if manifest.complete:
        return True
    if prompts is not None and (fresh or not (out / PROMPTS).exists()):
        atomic_write_text(out / PROMPTS, "".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    return False


def _finished_shards(out: Path) -> dict[int, ShardInfo]:
    """Shards listed in any rank's progress file whose file is intact, by first prompt."""
    done: dict[int, ShardInfo] = {}
    for f in sorted((out / PROGRESS).glob("rank-*.json")):
        try:
            listed = [ShardInfo.model_validate(s) for s in json.loads(f.read_text())["shards"]]
        except (ValueError, KeyError, TypeError) as err:
            raise CacheError(f"progress file {f} is unreadable ({err}); delete the cache folder and extract "
                             "again, or pass overwrite=True (--overwrite)") from None
        for s in listed:
            file = out / s.file
            if file.is_file() and file.stat().st_size == s.n_bytes:
                done[s.prompt_start] = s
    return done


def _chunks(prompts: Iterable[str], size: int) -> Iterator[list[str]]:
    if isinstance(prompts, list):
        for s in range(0, len(prompts), size):
            yield prompts[s : s + size]
        return
    it = iter(prompts)
    while chunk := list(islice(it, size)):
        yield chunk


class _RankRun:
    """One rank's part: its chunks, its shards and its progress file."""

    def __init__(self, out: Path, ranks: Ranks, wanted: CacheManifest, chunk: int, shard_tokens: int,
                 stop_after_shards: int | None):
        self.out, self.ranks, self.wanted, self.chunk = out, ranks, wanted, chunk
        self.shard_tokens, self.stop_after_shards = shard_tokens, stop_after_shards
        self.done = _finished_shards(out)
        self.progress_file = out / PROGRESS / f"rank-{ranks.rank:05d}-of-{ranks.world_size:05d}.json"
        self.mine: list[ShardInfo] = []
        if self.progress_file.is_file():  # this rank's earlier shards that are still intact
            kept = {s.file for s in self.done.values()}
            listed = json.loads(self.progress_file.read_text())["shards"]
            self.mine = [ShardInfo.model_validate(s) for s in listed if s["file"] in kept]
        self.written = 0

    def extract(self, model: nn.Module, tokenizer, prompts: Iterable[str], spec, progress: bool) -> tuple[int, str]:
        """Run this rank's chunks; return `(number of prompts, fingerprint)` of the whole source."""
        from tqdm.auto import tqdm

        known = isinstance(prompts, list)
        mine = (sum(len(prompts[s : s + self.chunk]) for s in range(0, len(prompts), self.chunk)
                    if self.ranks.owns(s // self.chunk)) if known else None)
        bar = tqdm(total=mine, desc=f"extract L{self.wanted.layer} rank {self.ranks.rank}/{self.ranks.world_size}",
                   unit="prompt", disable=not (progress and self.ranks.is_main))
        record = _PromptRecord(self.out, enabled=not known and self.ranks.is_main)
        n = 0
        for c, chunk in enumerate(_chunks(prompts, self.chunk)):
            first = c * self.chunk
            n = first + len(chunk)
            record.add(chunk)
            if self.ranks.owns(c):
                self._chunk(model, tokenizer, chunk, first, spec, bar)
        bar.close()
        if n == 0:
            raise ValueError(f"no prompts in {self.wanted.source}: the stream is empty or every text is blank")
        sha = record.finish() if not known else self.wanted.prompts_sha256
        return n, sha

    def _chunk(self, model: nn.Module, tokenizer, chunk: list[str], first: int, spec, bar) -> None:
        end = first + len(chunk)
        pos = first
        while pos in self.done and pos < end:  # the finished shards at the start of this chunk
            pos = self.done[pos].prompt_end
        bar.update(pos - first)
        if pos >= end:
            return
        w = self.wanted
        storage = resolve_dtype(w.dtype)
        buffer, buffered, shard_start = [], 0, pos
        for start, stop, tokens in iter_residuals(model, tokenizer, chunk, w.layer, start=pos - first,
                                                  batch_size=w.batch_size, max_length=w.max_length,
                                                  keep_special_tokens=w.keep_special_tokens, model_spec=spec):
            tokens["acts"] = tokens["acts"].to("cpu", storage)
            tokens["seq_ids"] += first
            buffer.append(tokens)
            buffered += len(tokens["token_ids"])
            bar.update(stop - start)
            if buffered >= self.shard_tokens or stop == len(chunk):
                self._write(buffer, shard_start, first + stop)
                buffer, buffered, shard_start = [], 0, first + stop

    def _write(self, buffer: list, start: int, end: int) -> None:
        info = write_shard(self.out, f"shard_p{start:010d}.safetensors", buffer, start, end, self.wanted.d_model,
                           self.wanted.dtype)
        self.mine = [s for s in self.mine if s.prompt_start != start] + [info]
        atomic_write_json(self.progress_file, {"rank": self.ranks.rank, "world_size": self.ranks.world_size,
                                               "shards": [s.model_dump() for s in self.mine]})
        self.written += 1
        if self.stop_after_shards is not None and self.written >= self.stop_after_shards:
            raise ExtractionInterrupted(f"rank {self.ranks.rank} stopped after {self.written} shard(s)")


class _PromptRecord:
    """Rank 0 of a streamed run: `prompts.jsonl` and the fingerprint `prompts_fingerprint` would give,
    written as the prompts stream past (the file appears, whole, at the end)."""

    def __init__(self, out: Path, enabled: bool):
        self.enabled = enabled
        if not enabled:
            return
        self.path = out / f".{PROMPTS}.partial"
        self.fh = self.path.open("w", encoding="utf-8")
        self.sha = hashlib.sha256(b"[")
        self.first = True

    def add(self, prompts: list[str]) -> None:
        if not self.enabled:
            return
        for p in prompts:
            self.fh.write(json.dumps({"prompt": p}) + "\n")
            self.sha.update((("" if self.first else ", ") + json.dumps(p)).encode("utf-8"))
            self.first = False

    def finish(self) -> str:
        if not self.enabled:
            return ""
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()
        os.replace(self.path, self.path.parent / PROMPTS)
        self.sha.update(b"]")
        return self.sha.hexdigest()


def _merge(out: Path, wanted: CacheManifest, n_prompts: int, sha: str) -> None:
    """Rank 0, after every rank is done: one manifest listing every shard in prompt order."""
    shards = sorted(_finished_shards(out).values(), key=lambda s: s.prompt_start)
    expected = 0
    for s in shards:
        if s.prompt_start != expected:
            raise CacheError(f"the shards in {out} leave prompts {expected}..{s.prompt_start - 1} without activations "
                             "(a rank's progress was lost); re-run the extraction to fill them in")
        expected = s.prompt_end
    if expected != n_prompts:
        raise CacheError(f"the shards in {out} cover {expected} prompts but the source has {n_prompts}; re-run "
                         "the extraction, or pass overwrite=True (--overwrite) if the source changed")
    manifest = wanted.model_copy(update={"n_prompts": n_prompts, "prompts_sha256": sha, "shards": shards,
                                         "complete": True})
    atomic_write_json(out / MANIFEST, manifest.model_dump())
