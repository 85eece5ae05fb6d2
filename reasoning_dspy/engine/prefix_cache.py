"""Prefilled KV caches of prompt prefixes, shared within a batch and kept across batches."""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from reasoning_dspy.models import ModelSpec, kv_cache_kwarg
from reasoning_dspy.steering import RowSteering, Steerer

MIN_SHARED_PREFIX = 32  # shorter common prefixes are not worth a separate forward


def common_len(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _steering_key(row: RowSteering | None) -> Any:
    if row is None:
        return None
    as_bytes = (lambda t: None if t is None else t.detach().cpu().numpy().tobytes())  # noqa: E731
    return (row.layer, as_bytes(row.add), as_bytes(row.add_relative), as_bytes(row.clamp_features),
            as_bytes(row.clamp_targets))


class PrefixCache:
    """Prefilled KV caches of recent prompt prefixes, reused across batches (automatic prefix caching).

    An entry is the `DynamicCache` of one prefix (one row) under one steering: steering at layer L
    changes the keys and values of every later layer, so the resolved steering (layer, vector, clamp
    targets, which already include f_max and the decoder rows, and residual-units directions) is part of
    the key. A new prefix takes
    the entry sharing the longest run of leading tokens with it (at least `MIN_SHARED_PREFIX`),
    cropped to that run, and prefills only the rest — a DSPy program's system prompt is computed once
    per steering, not once per batch or request. At most `size` entries, least recently used dropped
    first (0 disables). An instance belongs to one model and SAE (it empties itself if handed others)
    and is only used under the model's lock. Models with sliding-window attention share prefixes
    within a batch only.
    """

    def __init__(self, size: int = 4):
        if size < 0:
            raise ValueError(f"prefix cache size must be >= 0 entries, got {size}")
        self.size = size
        self.hits = 0  # lookups served (fully or partly) from an entry
        self.misses = 0  # lookups that prefilled from scratch
        self._entries: OrderedDict[tuple[Any, tuple[int, ...]], Any] = OrderedDict()
        self._owner: tuple[nn.Module, Any] | None = None

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()

    def bind(self, model: nn.Module, sae: Any) -> None:
        """Entries are only valid for the model and SAE that computed them."""
        if self._owner is not None and (self._owner[0] is not model or self._owner[1] is not sae):
            self.clear()
        self._owner = (model, sae)

    def get(self, key: Any, prefix: Sequence[int]) -> tuple[int, Any]:
        """`(n, cache)`: a private copy of the best entry's KV cropped to its `n` tokens shared with
        `prefix`, or `(0, None)` on a miss."""
        best, n = None, 0
        for entry_key in self._entries:
            if entry_key[0] == key:
                m = common_len(entry_key[1], prefix)
                if m > n:
                    best, n = entry_key, m
        if best is None or n < MIN_SHARED_PREFIX:
            self.misses += 1
            return 0, None
        self.hits += 1
        self._entries.move_to_end(best)
        cache = copy.deepcopy(self._entries[best])
        cache.crop(n - len(best[1]))
        return n, cache

    def put(self, key: Any, prefix: Sequence[int], cache: Any) -> None:
        """Keep a copy of `cache` (the KV of `prefix`, one row) as the most recent entry."""
        if self.size == 0 or any(cache.is_sliding):
            return
        entry_key = (key, tuple(prefix))
        self._entries[entry_key] = copy.deepcopy(cache)
        self._entries.move_to_end(entry_key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)


def prefix_kv(model: nn.Module, steerings: Sequence[RowSteering | None], prefix: list[int], sae: Any,
              model_spec: ModelSpec | None, store: PrefixCache | None) -> Any:
    """KV cache of the shared `prefix` for every row (`steerings`: each row's steering, in batch order),
    `[B, heads, len(prefix), head_dim]` per layer: one prefill per distinct steering, starting from what
    `store` already holds."""
    from transformers import DynamicCache

    # a row steered in a token window leaves its prompt unsteered: its prefix is the plain one
    steerings = [None if s is not None and not s.steers_prompt else s for s in steerings]
    groups: dict[Any, int] = {}
    index = [groups.setdefault(_steering_key(steering), len(groups)) for steering in steerings]
    first_row = {g: index.index(g) for g in groups.values()}
    device = next(model.parameters()).device
    if store is not None:
        store.bind(model, sae)
    caches = []
    for key, g in groups.items():
        start, cache = store.get(key, prefix) if store is not None else (0, None)
        if start < len(prefix):
            cache = cache if cache is not None else DynamicCache(config=model.config)
            new = torch.tensor([prefix[start:]], dtype=torch.long, device=device)
            with Steerer(model, [steerings[first_row[g]]], sae=sae, model_spec=model_spec):
                model(input_ids=new, attention_mask=torch.ones((1, len(prefix)), dtype=torch.long, device=device),
                      use_cache=True, logits_to_keep=1, **{kv_cache_kwarg(model): cache})
            if store is not None:
                store.put(key, prefix, cache)
        caches.append(cache)
    # one batch cache: the groups' rows side by side, then each row picks its group's
    batch = caches[0]
    if len(caches) > 1:
        for i, layer in enumerate(batch.layers):
            layer.keys = torch.cat([c.layers[i].keys for c in caches])
            layer.values = torch.cat([c.layers[i].values for c in caches])
    batch.reorder_cache(torch.tensor(index, dtype=torch.long, device=device))
    return batch
