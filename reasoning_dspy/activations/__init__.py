"""Residual-stream activations: capture them with a hook, cache them on disk, stream them back.

The forward is stopped right after the hooked layer (layers above it, the final norm and the LM
head are wasted work). Activations are stored per token with their token id, prompt index and
position, in safetensors shards listed by a JSON manifest. Every write is atomic and the
manifest is rewritten only after a shard is safely on disk, so an interrupted run resumes at the
first prompt of the first missing shard and produces the same cache as an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, Field
from torch import Tensor, nn

from reasoning_dspy._io import atomic_write_bytes, atomic_write_json, atomic_write_text
from reasoning_dspy.models import ModelSpec, layer_output, resolve_dtype
from reasoning_dspy.models import model_spec as get_model_spec

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


class _StopForward(Exception):
    """Raised from the hook to skip every layer after the one we need."""


@contextmanager
def stop_after(layer_module: nn.Module) -> Iterator[dict]:
    """Within the block, a forward records `layer_module`'s output in `box["acts"]` and stops there.

    The hook is removed on exit, also after an exception.
    """
    box: dict = {}

    def hook(_module, _inputs, output):
        box["acts"] = layer_output(output)
        raise _StopForward

    handle = layer_module.register_forward_hook(hook)
    try:
        yield box
    finally:
        handle.remove()


@torch.inference_mode()
def residual_at(
    model: nn.Module,
    layer: int,
    input_ids: Tensor,
    attention_mask: Tensor | None = None,
    *,
    model_spec: ModelSpec | None = None,
    hooks: AbstractContextManager | None = None,
) -> Tensor:
    """Residual stream after decoder layer `layer`: `[batch, seq, d_model]`, equal to
    `hidden_states[layer + 1]` of a full forward (for the last layer: before the final norm).

    `hooks` (e.g. a `Steerer`) is entered once the recording hook is in place, so hooks on earlier
    layers act on the forward while the residual is read before any hook of its own at `layer`."""
    model_spec = model_spec or get_model_spec(model)
    with stop_after(model_spec.layer(layer)) as box, hooks or nullcontext():
        try:
            model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        except _StopForward:
            pass
    if "acts" not in box:
        raise RuntimeError(f"layer {layer} was never reached during the forward pass")
    return box["acts"]


def prompts_fingerprint(prompts: Sequence[str]) -> str:
    return hashlib.sha256(json.dumps(list(prompts)).encode("utf-8")).hexdigest()


def pad_right(rows: list[list[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask


#: A token whose residual norm exceeds this multiple of the batch's median is an attention sink.
SINK_NORM_RATIO = 10.0


def attention_sinks(acts: Tensor, keep: Tensor) -> Tensor:
    """`[B, T]` True where a token's residual norm is over `SINK_NORM_RATIO` times the median of the
    batch's kept tokens: the "massive activations" of attention sinks. Models without a BOS make
    their first token (sometimes the first few) a sink: on SmolLM2 at layer 18 they reach norms of
    3,000-25,000 against a median of ≈ 200, and 1 token in 100 held 99 % of the activation variance.
    Left in, they dominate SAE training, make FVU meaningless (0.0005) and set f_max for features
    that otherwise fire on ordinary text. No ordinary token comes near the ratio (p99.9 ≈ 1.3×)."""
    norms = acts.float().norm(dim=-1)
    kept = norms[keep.to(norms.device)]
    if kept.numel() == 0:
        return torch.zeros_like(keep)
    return (norms > SINK_NORM_RATIO * kept.median()).to(keep.device)


def iter_residuals(
    model: nn.Module,
    tokenizer,
    prompts: Sequence[str],
    layer: int,
    *,
    start: int = 0,
    batch_size: int = 16,
    max_length: int = 256,
    keep_special_tokens: bool = False,
    model_spec: ModelSpec | None = None,
) -> Iterator[tuple[int, int, dict[str, Tensor]]]:
    """Per batch of prompts from index `start` on: `(batch_start, batch_end, tokens)`, where `tokens`
    holds the kept tokens' `acts [n, d_model]` (model dtype and device), `token_ids`, `seq_ids`
    (prompt index) and `positions`. The one place that decides which tokens count: right padding
    (each row keeps its own positions), pads never kept, BOS/EOS/pad and attention sinks (see
    `attention_sinks`) dropped unless `keep_special_tokens`. The cache writer and f_max estimation
    both read activations through it."""
    model_spec = model_spec or get_model_spec(model)
    special = torch.tensor(
        sorted({tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id} - {None}), dtype=torch.long
    )
    device = next(model.parameters()).device
    for s in range(start, len(prompts), batch_size):
        rows = tokenizer(list(prompts[s : s + batch_size]), truncation=True, max_length=max_length)["input_ids"]
        ids, mask = pad_right(rows, tokenizer.pad_token_id)
        acts = residual_at(model, layer, ids.to(device), mask.to(device), model_spec=model_spec)  # [B, T, d]
        keep = mask.bool()
        if not keep_special_tokens:
            keep &= ~torch.isin(ids, special)
            keep &= ~attention_sinks(acts, keep)
        b_idx, pos = keep.nonzero(as_tuple=True)
        yield s, min(s + batch_size, len(prompts)), {
            "acts": acts[keep.to(acts.device)],
            "token_ids": ids[keep].to(torch.int32),
            "seq_ids": (b_idx + s).to(torch.int64),
            "positions": pos.to(torch.int32),
        }


def extract_activations(
    model: nn.Module,
    tokenizer,
    prompts: Sequence[str],
    layer: int,
    out_dir: str | os.PathLike,
    *,
    model_name: str | None = None,
    batch_size: int = 16,
    max_length: int = 256,
    dtype: StorageDType = "bfloat16",
    shard_tokens: int = 65_536,
    keep_special_tokens: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    shard_prompts: int | None = None,
) -> ActivationCache:
    """Extract per-token activations after decoder layer `layer` for `prompts` into `out_dir`.

    Re-running with the same arguments resumes an interrupted run (or returns a finished cache);
    different arguments on an existing cache raise `CacheError` unless `overwrite=True`.
    BOS/EOS/pad tokens and attention sinks (`attention_sinks`) are dropped unless
    `keep_special_tokens`; pads are never stored.

    Inside a `torch.distributed` process group, with `shard_prompts` set, or with `prompts` an iterable
    that is not a sequence (a streamed dataset, `reasoning_dspy.distributed.StreamedPrompts`), the run is
    split into chunks of `shard_prompts` prompts taken in turn by the ranks
    (`reasoning_dspy.distributed.extract`); the cache holds the same rows in the same order. A cache
    started that way records its `shard_prompts`, and a resumed run takes it from there when not given.
    """
    from tqdm.auto import tqdm

    from reasoning_dspy.distributed.group import is_distributed, torchrun_world_size

    if shard_prompts is None and not overwrite:
        shard_prompts = _recorded_shard_prompts(Path(out_dir))
    if shard_prompts is not None or is_distributed() or not isinstance(prompts, Sequence):
        from reasoning_dspy.distributed.extract import extract_chunked

        return extract_chunked(model, tokenizer, prompts, layer, out_dir, model_name=model_name,
                               batch_size=batch_size, max_length=max_length, dtype=dtype,
                               shard_tokens=shard_tokens, shard_prompts=shard_prompts,
                               keep_special_tokens=keep_special_tokens, overwrite=overwrite, progress=progress)
    if torchrun_world_size() > 1:
        raise CacheError("this process is one of several started by torchrun (WORLD_SIZE > 1) but has joined no "
                         "process group, so every process would write the same cache; run the extraction inside "
                         "`with reasoning_dspy.distributed.process_group(device):`")
    prompts = list(prompts)
    if not prompts:
        raise ValueError("no prompts to extract activations from")
    if batch_size < 1 or max_length < 1 or shard_tokens < 1:
        raise ValueError(f"batch_size, max_length and shard_tokens must be positive, got batch_size={batch_size}, "
                         f"max_length={max_length}, shard_tokens={shard_tokens}")
    spec = get_model_spec(model, model_name)
    layer = spec.check_layer(layer)
    storage_dtype = resolve_dtype(dtype)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise CacheError(f"{str(out)!r} is an existing file; the cache (out_dir, --out) must be a folder")
    wanted = CacheManifest(
        model=spec.name,
        layer=layer,
        d_model=spec.d_model,
        dtype=dtype,
        max_length=max_length,
        batch_size=batch_size,
        keep_special_tokens=keep_special_tokens,
        n_prompts=len(prompts),
        prompts_sha256=prompts_fingerprint(prompts),
    )
    manifest = _start_or_resume(out, wanted, overwrite)
    if manifest.complete:
        return ActivationCache(out)
    if not (out / PROMPTS).exists() or manifest.prompts_done == 0:
        atomic_write_text(out / PROMPTS, "".join(json.dumps({"prompt": p}) + "\n" for p in prompts))

    buffer: list[dict[str, Tensor]] = []
    buffered = 0
    shard_start = manifest.prompts_done
    bar = tqdm(total=len(prompts), initial=shard_start, desc=f"extract L{layer}", unit="prompt",
               disable=not progress)
    for start, end, tokens in iter_residuals(model, tokenizer, prompts, layer, start=shard_start,
                                             batch_size=batch_size, max_length=max_length,
                                             keep_special_tokens=keep_special_tokens, model_spec=spec):
        tokens["acts"] = tokens["acts"].to("cpu", storage_dtype)
        buffer.append(tokens)
        buffered += len(tokens["token_ids"])
        bar.update(end - start)
        if buffered >= shard_tokens or end == len(prompts):
            _flush(out, manifest, buffer, shard_start, end)
            buffer, buffered, shard_start = [], 0, end
    bar.close()
    manifest.complete = True
    atomic_write_json(out / MANIFEST, manifest.model_dump())
    return ActivationCache(out)


def _recorded_shard_prompts(out: Path) -> int | None:
    """The `shard_prompts` an existing cache in `out` was started with (None if none or unreadable)."""
    try:
        return CacheManifest.model_validate_json((out / MANIFEST).read_text()).shard_prompts
    except (OSError, ValueError):
        return None


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
