"""Fingerprints of weights, so caches keyed by a model name never serve another model's answers."""

from __future__ import annotations

import hashlib
import re
import weakref
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

_FINGERPRINT_SAMPLE = 4096  # elements sampled per tensor for weight fingerprints


def tensors_fingerprint(named: Iterator[tuple[str, torch.Tensor]] | Sequence[tuple[str, torch.Tensor]]) -> str:
    """Hash names, shapes, dtypes and an evenly strided sample of each tensor's values.

    Reading every byte of a 1B-parameter model would take seconds; a strided sample of every
    tensor changes whenever the weights are re-initialised, fine-tuned or swapped.
    """
    h = hashlib.sha256()
    for name, t in named:
        flat = t.detach().reshape(-1)
        step = max(1, flat.numel() // _FINGERPRINT_SAMPLE)
        sample = flat[::step][:_FINGERPRINT_SAMPLE].float().cpu().contiguous()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(sample.numpy().tobytes())
    return h.hexdigest()


_MODEL_FP: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def model_fingerprint(model: nn.Module, tokenizer: Any = None) -> str:
    """Fingerprint of a model's weights (+ tokenizer vocabulary and chat template); cached per object."""
    fp = _MODEL_FP.get(model)
    if fp is None:
        fp = _MODEL_FP[model] = tensors_fingerprint(model.state_dict().items())
    if tokenizer is not None:
        extra = f"{len(tokenizer)}|{getattr(tokenizer, 'chat_template', None)}"
        fp = hashlib.sha256((fp + extra).encode()).hexdigest()
    return fp


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name.replace("/", "--")).strip("-") or "model"
