"""Extract per-token residual activations of a set of prompts into an `ActivationCache` folder,
resuming an interrupted run."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from torch import Tensor, nn

from reasoning_dspy._io import atomic_write_json, atomic_write_text
from reasoning_dspy.activations.cache import (
    MANIFEST,
    PROMPTS,
    ActivationCache,
    CacheError,
    CacheManifest,
    StorageDType,
    _flush,
    _start_or_resume,
    prompts_fingerprint,
)
from reasoning_dspy.activations.residuals import iter_residuals
from reasoning_dspy.models import model_spec as get_model_spec
from reasoning_dspy.models import resolve_dtype


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
    (`reasoning_dspy.activations.chunked`); the cache holds the same rows in the same order. A cache
    started that way records its `shard_prompts`, and a resumed run takes it from there when not given.
    """
    from tqdm.auto import tqdm

    from reasoning_dspy.distributed.group import is_distributed, torchrun_world_size

    if shard_prompts is None and not overwrite:
        shard_prompts = _recorded_shard_prompts(Path(out_dir))
    if shard_prompts is not None or is_distributed() or not isinstance(prompts, Sequence):
        from reasoning_dspy.activations.chunked import extract_chunked

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
