"""The activation cache on disk: a JSON manifest listing safetensors shards of per-token
activations with their token id, prompt index and position.

Every write is atomic and the manifest is rewritten only after a shard is safely on disk, so an
interrupted run resumes at the first prompt of the first missing shard and produces the same cache
as an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, Field
from torch import Tensor

from reasoning_dspy._io import atomic_write_bytes, atomic_write_json
from reasoning_dspy.models import resolve_dtype

MANIFEST = "manifest.json"
PROMPTS = "prompts.jsonl"
FIELDS = ("acts", "token_ids", "seq_ids", "positions")
StorageDType = Literal["float32", "float16", "bfloat16"]


class CacheError(RuntimeError):
    """The activation cache is missing, corrupt, or does not match the requested run."""


class ShardInfo(BaseModel):
    file: str
    n_tokens: int
    prompt_start: int = Field(description="first prompt index in this shard")
    prompt_end: int = Field(description="one past the last prompt index in this shard")
    n_bytes: int = Field(description="file size, to detect truncated shards")


class CacheManifest(BaseModel):
    """Everything needed to interpret, verify and resume a cache."""

    format_version: int = 1
    model: str
    layer: int
    d_model: int
    dtype: StorageDType
    max_length: int
    batch_size: int
    keep_special_tokens: bool
    n_prompts: int
    prompts_sha256: str
    shard_prompts: int | None = Field(None, description="shards also end every N prompts: the chunks that the "
                                      "ranks of a multi-process or streamed run take turns on")
    source: str | None = Field(None, description="the streamed dataset the prompts come from; n_prompts and "
                               "prompts_sha256 are filled in when the run completes")
    shards: list[ShardInfo] = Field(default_factory=list)
    complete: bool = False

    @property
    def n_tokens(self) -> int:
        return sum(s.n_tokens for s in self.shards)

    @property
    def prompts_done(self) -> int:
        return self.shards[-1].prompt_end if self.shards else 0


def prompts_fingerprint(prompts: Sequence[str]) -> str:
    return hashlib.sha256(json.dumps(list(prompts)).encode("utf-8")).hexdigest()



def _start_or_resume(out: Path, wanted: CacheManifest, overwrite: bool) -> CacheManifest:
    path = out / MANIFEST
    if path.exists() and not overwrite:
        existing = ActivationCache(out).manifest  # also verifies every listed shard
        keys = set(CacheManifest.model_fields) - {"shards", "complete"}
        diff = {k: (getattr(existing, k), getattr(wanted, k)) for k in keys
                if getattr(existing, k) != getattr(wanted, k)}
        if diff:
            detail = ", ".join(f"{k}: cache has {a!r}, run asks {b!r}" for k, (a, b) in sorted(diff.items()))
            raise CacheError(
                f"{out} already holds a cache from a different run ({detail}). "
                "Use another output folder, or overwrite=True (--overwrite) to start again."
            )
        return existing
    if overwrite and out.exists():
        for f in out.glob("shard_*.safetensors"):
            f.unlink()
        path.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, wanted.model_dump())
    return wanted.model_copy(deep=True)


def _flush(out: Path, manifest: CacheManifest, buffer: list[dict[str, Tensor]], start: int, end: int) -> None:
    name = f"shard_{len(manifest.shards):05d}.safetensors"
    manifest.shards.append(write_shard(out, name, buffer, start, end, manifest.d_model, manifest.dtype))
    atomic_write_json(out / MANIFEST, manifest.model_dump())


def write_shard(out: Path, name: str, buffer: list[dict[str, Tensor]], start: int, end: int, d_model: int,
                dtype: StorageDType) -> ShardInfo:
    """Write the tokens of prompts `[start, end)` (batches from `iter_residuals`) atomically as `out/name`."""
    from safetensors.torch import save

    tensors = {k: torch.cat([b[k] for b in buffer]).contiguous() for k in FIELDS} if buffer else {
        "acts": torch.zeros(0, d_model, dtype=resolve_dtype(dtype)),
        "token_ids": torch.zeros(0, dtype=torch.int32),
        "seq_ids": torch.zeros(0, dtype=torch.int64),
        "positions": torch.zeros(0, dtype=torch.int32),
    }
    data = save(tensors, metadata={"prompt_start": str(start), "prompt_end": str(end)})
    atomic_write_bytes(out / name, data)
    return ShardInfo(file=name, n_tokens=len(tensors["acts"]), prompt_start=start, prompt_end=end, n_bytes=len(data))


class ActivationCache:
    """Read side of a cache folder: verified on open, streamed shard by shard.

    >>> cache = ActivationCache("runs/acts")
    >>> for batch in cache.iter_batches(4096, shuffle=True):
    ...     acts = batch["acts"]  # [4096, d_model]
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        manifest_path = self.path / MANIFEST
        if not manifest_path.is_file():
            raise CacheError(f"no activation cache at {str(self.path)!r}: {MANIFEST} is missing")
        try:
            self.manifest = CacheManifest.model_validate_json(manifest_path.read_text())
        except ValueError as err:
            raise CacheError(f"{manifest_path} is not a valid cache manifest: {err}") from None
        for shard in self.manifest.shards:
            self._check_shard(shard)

    def _check_shard(self, shard: ShardInfo) -> None:
        f = self.path / shard.file
        if not f.is_file():
            raise CacheError(f"shard {f} listed in the manifest is missing; re-run the extraction")
        size = f.stat().st_size
        if size != shard.n_bytes:
            raise CacheError(
                f"shard {f} is corrupt: {size} bytes on disk, manifest expects {shard.n_bytes} "
                "(truncated or overwritten). Delete the cache folder and extract again."
            )

    # -- metadata ---------------------------------------------------------------------------
    @property
    def d_model(self) -> int:
        return self.manifest.d_model

    @property
    def layer(self) -> int:
        return self.manifest.layer

    @property
    def model_name(self) -> str:
        return self.manifest.model

    @property
    def n_tokens(self) -> int:
        return self.manifest.n_tokens

    def load_tokenizer(self):
        """The tokenizer of the model these activations came from (any name `load_model` resolves,
        offline models and converted GGUF files included), to read the cached token ids."""
        from reasoning_dspy.models import ModelLoadError, load_tokenizer

        try:
            return load_tokenizer(self.model_name)
        except ModelLoadError as err:
            raise ModelLoadError(
                f"this cache records model {self.model_name!r}, whose tokenizer cannot be loaded here; "
                f"pass tokenizer= (the model's own tokenizer) instead. Cause: {err}"
            ) from err

    def __len__(self) -> int:
        return self.n_tokens

    def __repr__(self) -> str:
        m = self.manifest
        state = "complete" if m.complete else f"{m.prompts_done}/{m.n_prompts} prompts"
        return (f"ActivationCache({str(self.path)!r}, model={m.model!r}, layer={m.layer}, "
                f"d_model={m.d_model}, tokens={m.n_tokens}, dtype={m.dtype}, {state})")

    def prompts(self) -> list[str]:
        lines = (self.path / PROMPTS).read_text(encoding="utf-8").splitlines()
        return [json.loads(line)["prompt"] for line in lines if line]

    # -- data -------------------------------------------------------------------------------
    def load_shard(self, index: int, fields: Sequence[str] = FIELDS) -> dict[str, Tensor]:
        """The `fields` of shard `index`; only those are read from disk (token ids without activations
        cost a fraction of the shard)."""
        from safetensors import SafetensorError, safe_open

        shard = self.manifest.shards[index]
        self._check_shard(shard)
        try:
            with safe_open(self.path / shard.file, "pt") as fh:
                return {k: fh.get_tensor(k) for k in fields}
        except SafetensorError as err:
            raise CacheError(f"shard {self.path / shard.file} cannot be read: {err}") from None

    def iter_shards(self, fields: Sequence[str] = FIELDS) -> Iterator[dict[str, Tensor]]:
        for i in range(len(self.manifest.shards)):
            yield self.load_shard(i, fields)

    def load(self, fields: Sequence[str] = FIELDS) -> dict[str, Tensor]:
        """The whole cache in memory: for small caches and tests."""
        shards = list(self.iter_shards(fields))
        return {k: torch.cat([s[k] for s in shards]) for k in fields}

    def iter_batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        fields: Sequence[str] = ("acts",),
        buffer_shards: int = 4,
        drop_last: bool = False,
    ) -> Iterator[dict[str, Tensor]]:
        """Stream batches of `batch_size` tokens; memory holds at most `buffer_shards` shards.

        With `shuffle`, shards come in a random order and tokens are shuffled across each group
        of `buffer_shards` shards (the leftover of a group carries over to the next).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        gen = torch.Generator().manual_seed(seed)
        order = (torch.randperm(len(self.manifest.shards), generator=gen).tolist() if shuffle
                 else list(range(len(self.manifest.shards))))
        carry: dict[str, Tensor] | None = None
        group = max(1, buffer_shards if shuffle else 1)
        for g in range(0, len(order), group):
            parts = [self.load_shard(i, fields) for i in order[g : g + group]]
            if carry is not None:
                parts.insert(0, carry)
            pool = {k: torch.cat([p[k] for p in parts]) for k in fields}
            n = len(pool[fields[0]])
            if shuffle:
                perm = torch.randperm(n, generator=gen)
                pool = {k: v[perm] for k, v in pool.items()}
            full = n - n % batch_size
            for s in range(0, full, batch_size):
                yield {k: v[s : s + batch_size] for k, v in pool.items()}
            carry = {k: v[full:] for k, v in pool.items()} if full < n else None
        if carry is not None and not drop_last:
            yield carry
