"""What `train_sae` reads: one or more activation sources, split into training and held-out tokens,
served as deterministic shuffled batches.

A source is an `ActivationCache` (or its folder) or a `[n_tokens, d_in]` tensor. The held-out slice
is made of whole prompts (caches: `seq_ids`) or whole contiguous blocks of rows (tensors, whose rows
usually come in sequence order), so no held-out token sits next to a training token of the same
prompt. Which units are held out is a fixed function of `seed` and the sources.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import reduce
from typing import Any

import torch
from torch import Tensor

BUFFER_CHUNKS = 4  # shards shuffled together; memory holds at most this many (plus a partial batch)
MAX_BLOCK = 256  # tensor rows per held-out block: about one prompt


def hook_name_for(layer: int) -> str:
    """The SAELens/TransformerLens name of the residual stream after decoder layer `layer`."""
    return f"blocks.{layer}.hook_resid_post"


def open_sources(activations: Any) -> list[Any]:
    """`activations` as a list of `ActivationCache`s and `[n, d]` tensors (paths are opened)."""
    from reasoning_dspy.activations import ActivationCache

    items = list(activations) if isinstance(activations, (list, tuple)) else [activations]
    if not items:
        raise ValueError("no activations to train on: the list of caches is empty")
    out = []
    for i, item in enumerate(items):
        if isinstance(item, (str, os.PathLike)):
            item = ActivationCache(item)
        if isinstance(item, Tensor):
            if item.dim() != 2:
                raise ValueError(f"activations must be [n_tokens, d_in], got shape {list(item.shape)}"
                                 + (f" for source {i}" if len(items) > 1 else ""))
        elif not isinstance(item, ActivationCache):
            raise ValueError(f"source {i} is a {type(item).__name__}; expected an ActivationCache, a cache "
                             "folder or a [n_tokens, d_in] tensor")
        out.append(item)
    return out


def _name(source: Any, i: int) -> str:
    return repr(str(source.path)) if not isinstance(source, Tensor) else f"tensor #{i}"


def source_metadata(sources: list[Any], hook_layer: int | None, model_name: str | None) -> dict[str, Any]:
    """SAE provenance (`model_name`, `hook_layer`, `hook_name`) agreed by every cache and the config.

    Caches must share d_model, layer and model; values set in the config must match them (they only
    fill in what plain tensors cannot say)."""
    widths = {_name(s, i): int(s.shape[1]) if isinstance(s, Tensor) else s.d_model for i, s in enumerate(sources)}
    if len(set(widths.values())) > 1:
        detail = ", ".join(f"{n} has d_model={d}" for n, d in widths.items())
        raise ValueError(f"the activations disagree on width: {detail}; train on sources of one model and layer")
    caches = [(i, s) for i, s in enumerate(sources) if not isinstance(s, Tensor)]
    for attr, label in (("layer", "layer"), ("model_name", "model")):
        values = {getattr(s, attr) for _, s in caches}
        if len(values) > 1:
            detail = ", ".join(f"{_name(s, i)} has {label} {getattr(s, attr)!r}" for i, s in caches)
            raise ValueError(f"the caches disagree on {label}: {detail}; train one SAE per model and layer")
    if caches:
        cache = caches[0][1]
        if hook_layer is not None and hook_layer != cache.layer:
            raise ValueError(f"hook_layer={hook_layer} contradicts the cache {str(cache.path)!r}, extracted at layer "
                             f"{cache.layer}; leave hook_layer unset (it defaults to the cache's)")
        if model_name is not None and model_name != cache.model_name:
            raise ValueError(f"model_name={model_name!r} contradicts the cache {str(cache.path)!r}, extracted from "
                             f"{cache.model_name!r}; leave model_name unset (it defaults to the cache's)")
        hook_layer, model_name = cache.layer, cache.model_name
    meta: dict[str, Any] = {"model_name": model_name, "hook_layer": hook_layer}
    if hook_layer is not None:
        meta["hook_name"] = hook_name_for(hook_layer)
    return meta


@dataclass
class _Chunk:
    """One shard of a cache, or a whole tensor: the unit that is loaded and shuffled."""

    source: int
    shard: int | None  # shard index in the cache; None for a tensor
    n_train: int
    n_val: int


class TrainData:
    """Training and held-out tokens of `sources`, as deterministic shuffled batches.

    Epoch `e` is a fixed function of `(seed, e)`: chunks (cache shards, whole tensors) come in a
    seeded order, groups of `BUFFER_CHUNKS` are shuffled together, and a partial batch carries over
    to the next group, so an epoch has exactly `n_train // batch_size` batches and a resumed run can
    skip to where an interrupted one stopped.

    `part=(rank, world_size)` makes `epoch` yield only that rank's rows of each batch (a contiguous
    slice, sizes within one of each other): R ranks together see exactly the single-process batches.
    """

    def __init__(self, sources: list[Any], batch_size: int, seed: int, val_fraction: float,
                 part: tuple[int, int] = (0, 1)):
        self.sources, self.batch_size, self.seed = sources, batch_size, seed
        rank, world = part
        if batch_size < world:
            raise ValueError(f"batch_size={batch_size} is smaller than the {world} processes sharing each batch; "
                             f"use --batch-size >= {world}")
        self.rows = slice(batch_size * rank // world, batch_size * (rank + 1) // world)  # this rank's rows
        self.d_in = int(sources[0].shape[1]) if isinstance(sources[0], Tensor) else int(sources[0].d_model)
        self.val_fraction = val_fraction
        counts = [self._unit_counts(s) for s in sources]  # per source, per chunk: (first unit, tokens per unit)
        self.val_units = self._choose_val(counts, val_fraction, seed)  # per source: bool [n_units]
        self.chunks: list[_Chunk] = []
        for src, per_chunk in enumerate(counts):
            for j, (first, n) in enumerate(per_chunk):
                n_val = int(n[self.val_units[src][first:first + len(n)]].sum())
                shard = None if isinstance(sources[src], Tensor) else j
                self.chunks.append(_Chunk(src, shard, int(n.sum()) - n_val, n_val))
        self.n_train = sum(c.n_train for c in self.chunks)
        self.n_val = sum(c.n_val for c in self.chunks)
        if self.n_train < batch_size:
            held = f" ({self.n_val} more held out for validation, val_fraction={val_fraction})" if self.n_val else ""
            raise ValueError(
                f"the activations hold {self.n_train} training tokens{held}, fewer than batch_size={batch_size}; "
                "lower --batch-size" + (" or --val-fraction" if self.n_val else "") + " or extract more activations"
            )
        self.per_epoch = self.n_train // batch_size

    # -- the split ---------------------------------------------------------------------------
    @staticmethod
    def _block(n: int) -> int:
        """Rows per held-out block of a tensor: at least ~100 blocks, at most `MAX_BLOCK` rows each."""
        return max(1, min(MAX_BLOCK, n // 100))

    def _units(self, source: Any) -> Tensor:
        """Unit (block) of every row of a tensor: `[n_tokens]` long."""
        return torch.arange(source.shape[0]) // self._block(source.shape[0])

    def _unit_counts(self, source: Any) -> list[tuple[int, Tensor]]:
        """Per chunk: `(first unit, tokens of each unit from there on)`; a cache's shard holds whole
        prompts `[prompt_start, prompt_end)`, so only its `seq_ids` are read, not its activations."""
        if isinstance(source, Tensor):
            return [(0, torch.bincount(self._units(source)))]
        out = []
        for i, shard in enumerate(source.manifest.shards):
            seq = source.load_shard(i, ("seq_ids",))["seq_ids"].long() - shard.prompt_start
            out.append((shard.prompt_start, torch.bincount(seq, minlength=shard.prompt_end - shard.prompt_start)))
        return out

    @staticmethod
    def _choose_val(counts: list[list[tuple[int, Tensor]]], val_fraction: float, seed: int) -> list[Tensor]:
        """Hold out whole units in a seeded random order until `val_fraction` of the tokens is reached."""
        sizes = []
        for per_chunk in counts:
            size = torch.zeros(max((f + len(n) for f, n in per_chunk), default=0), dtype=torch.long)
            for first, n in per_chunk:
                size[first:first + len(n)] += n
            sizes.append(size)
        masks = [torch.zeros(len(s), dtype=torch.bool) for s in sizes]
        if val_fraction == 0:
            return masks
        target = max(1, round(val_fraction * sum(int(s.sum()) for s in sizes)))
        owner = torch.cat([torch.full((len(s),), i, dtype=torch.long) for i, s in enumerate(sizes)])
        local = torch.cat([torch.arange(len(s)) for s in sizes])
        size = torch.cat(sizes)
        order = torch.randperm(len(size), generator=torch.Generator().manual_seed(seed + 104_729))
        taken = 0
        for g in order[size[order] > 0].tolist():
            if taken >= target:
                break
            masks[int(owner[g])][int(local[g])] = True
            taken += int(size[g])
        return masks

    def _load(self, chunk: _Chunk, held_out: bool) -> tuple[Tensor, Tensor, Tensor]:
        """`(acts [n, d], rows of the wanted split [m], unit of each row [n])` of one chunk."""
        source = self.sources[chunk.source]
        if isinstance(source, Tensor):
            acts, units = source, self._units(source)
        else:
            data = source.load_shard(chunk.shard, ("acts", "seq_ids"))
            acts, units = data["acts"], data["seq_ids"].long()
        val = self.val_units[chunk.source][units] if len(units) else torch.zeros(0, dtype=torch.bool)
        return acts, (val if held_out else ~val).nonzero().squeeze(1), units

    # -- batches -----------------------------------------------------------------------------
    def _pass(self, seed: int, batch_size: int, *, held_out: bool = False, units: bool = False,
              rows: slice | None = None) -> Iterator[tuple[Tensor, Tensor | None]]:
        """Shuffled batches of one split; the last partial batch is dropped. With `units`, also the
        global unit id of each row (`source * 2**40 + prompt or block`), for tests of the split.
        With `rows`, only those rows of each batch."""
        lo, hi = (0, batch_size) if rows is None else (rows.start, rows.stop)
        gen = torch.Generator().manual_seed(seed)
        chunks = [c for c in self.chunks if (c.n_val if held_out else c.n_train) > 0]
        order = torch.randperm(len(chunks), generator=gen).tolist()
        carry: tuple[Tensor, Tensor] | None = None  # acts, unit ids of the leftover rows
        for g in range(0, len(order), BUFFER_CHUNKS):
            parts, rows, ids = [], [], []
            if carry is not None:
                parts.append(carry[0])
                rows.append(torch.arange(len(carry[0])))
                ids.append(carry[1])
            for idx in order[g:g + BUFFER_CHUNKS]:
                acts, keep, unit = self._load(chunks[idx], held_out)
                parts.append(acts)
                rows.append(keep)
                ids.append(unit[keep] + chunks[idx].source * 2**40)
            which = torch.cat([torch.full((len(r),), p, dtype=torch.long) for p, r in enumerate(rows)])
            row, uid = torch.cat(rows), torch.cat(ids)
            perm = torch.randperm(len(row), generator=gen)
            which, row, uid = which[perm], row[perm], uid[perm]
            full = len(row) - len(row) % batch_size
            for s in range(0, full, batch_size):
                sl = slice(s + lo, s + hi)
                yield _gather(parts, which[sl], row[sl]), (uid[sl] if units else None)
            carry = (_gather(parts, which[full:], row[full:]), uid[full:]) if full < len(row) else None

    def epoch(self, e: int, *, units: bool = False) -> Iterator[Any]:
        """The training batches of epoch `e`: `[batch_size, d_in]`, or this part's rows of each (with
        `units`: `(acts, unit ids)`)."""
        for x, u in self._pass(self.seed * 1_000_003 + e, self.batch_size, units=units, rows=self.rows):
            yield (x, u) if units else x

    def stream(self, epoch: int, skip: int) -> Iterator[tuple[int, int, Tensor]]:
        """Yield `(epoch, index in epoch, batch)` forever, starting after `skip` batches of `epoch`."""
        while True:
            for i, batch in enumerate(self.epoch(epoch)):
                if i >= skip:
                    yield epoch, i, batch
            epoch, skip = epoch + 1, 0

    def sample(self, n: int) -> Tensor:
        """A seeded random sample of up to `n` training tokens (input scale, b_dec init, train FVU)."""
        return next(self._pass(self.seed + 7919, min(n, self.n_train)))[0]

    def held_out(self, n: int) -> Tensor | None:
        """A seeded random sample of up to `n` held-out tokens; None without a held-out slice."""
        if self.n_val == 0:
            return None
        return next(self._pass(self.seed + 7919, min(n, self.n_val), held_out=True))[0]


def _gather(parts: Sequence[Tensor], which: Tensor, row: Tensor) -> Tensor:
    """Rows `row[i]` of `parts[which[i]]`, stacked: one copy of the batch, none of the pool."""
    dtype = reduce(torch.promote_types, (p.dtype for p in parts))
    out = torch.empty(len(row), parts[0].shape[1], dtype=dtype)
    for p, part in enumerate(parts):
        sel = (which == p).nonzero().squeeze(1)
        if len(sel):
            out[sel] = part[row[sel]].to(dtype)
    return out
