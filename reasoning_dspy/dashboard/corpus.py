"""The reference text the Feature page and the map labels read: the bundled reasoning traces and
prompts, as residual activations at the SAE's layer, cached on disk.

Extraction runs one batch at a time under the model's lock (`engine.model_lock`), so an engine
serving other users on the same model waits at most one batch. The cache is keyed by a fingerprint
of the model's weights and tokenizer, the layer and the texts, and written atomically (safetensors
+ JSON). Feature statistics are computed from it on demand with the SAE's unit-norm view, in the
units of f_max and of every other activation the dashboard shows.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from reasoning_dspy._io import atomic_write_bytes, atomic_write_json

CORPUS_FILE, META_FILE = "corpus.safetensors", "corpus.json"
Progress = Callable[[float, str], None]


def corpus_texts(limit: int | None = None) -> list[str]:
    """The bundled reasoning traces, then the bundled prompts (the first `limit` of them all)."""
    from reasoning_dspy.prompts import load_prompts

    texts = load_prompts("bundled-traces") + load_prompts("bundled")
    return texts[:limit] if limit else texts


@dataclass
class Corpus:
    """Cached activations of the corpus texts: `acts [n_tokens, d_model]`, one row per kept token
    (BOS/EOS/pad and attention sinks dropped, as in every activation cache), in (text, position) order."""

    acts: Tensor  # [n, d_model] bfloat16
    token_ids: Tensor  # [n] int64
    seq_ids: np.ndarray  # [n] text index
    positions: np.ndarray  # [n] position in its text
    texts: list[str]
    layer: int
    model: str
    folder: Path | None = None
    _columns: OrderedDict = field(default_factory=OrderedDict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def n_tokens(self) -> int:
        return int(self.acts.shape[0])

    @property
    def d_model(self) -> int:
        return int(self.acts.shape[1])

    # -- building ------------------------------------------------------------------------------
    @classmethod
    def ensure(cls, model: torch.nn.Module, tokenizer: Any, layer: int, cache_dir: str | Path, *,
               model_name: str, texts: list[str] | None = None, batch_size: int = 8, max_length: int = 256,
               progress: Progress | None = None) -> Corpus:
        """Load the cached corpus for this model, layer and texts, extracting it first if missing."""
        from reasoning_dspy.engine.fingerprint import model_fingerprint

        texts = corpus_texts() if texts is None else list(texts)
        if not texts:
            raise ValueError("the dashboard corpus needs at least one text")
        key = hashlib.sha256(json.dumps([model_fingerprint(model, tokenizer), layer, max_length, texts]).encode()
                             ).hexdigest()[:16]
        folder = Path(cache_dir) / "corpus" / f"{_safe(model_name)}-L{layer}-{key}"
        if (folder / META_FILE).is_file() and (folder / CORPUS_FILE).is_file():
            try:
                return cls.load(folder)
            except (OSError, ValueError, KeyError):
                pass  # a damaged cache is rebuilt below
        corpus = cls.extract(model, tokenizer, layer, texts, model_name=model_name, batch_size=batch_size,
                             max_length=max_length, progress=progress)
        corpus.save(folder)
        return corpus

    @classmethod
    def extract(cls, model: torch.nn.Module, tokenizer: Any, layer: int, texts: list[str], *, model_name: str,
                batch_size: int = 8, max_length: int = 256, progress: Progress | None = None) -> Corpus:
        """Residual activations of `texts` after decoder layer `layer`, one batch per model-lock hold."""
        from reasoning_dspy.activations import iter_residuals
        from reasoning_dspy.engine.microbatcher import model_lock
        from reasoning_dspy.models import model_spec

        spec = model_spec(model)
        layer = spec.check_layer(layer)
        batches = iter_residuals(model, tokenizer, texts, layer, batch_size=batch_size, max_length=max_length,
                                 model_spec=spec)
        parts: list[dict[str, Tensor]] = []
        while True:
            with model_lock(model):
                item = next(batches, None)
            if item is None:
                break
            _, end, tokens = item
            parts.append({k: (v.to("cpu", torch.bfloat16) if k == "acts" else v.cpu()) for k, v in tokens.items()})
            if progress is not None:
                progress(end / len(texts), f"corpus activations at layer {layer}: {end}/{len(texts)} texts")
        cat = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        return cls(cat["acts"], cat["token_ids"].long(), cat["seq_ids"].numpy(), cat["positions"].numpy().astype(np.int64),
                   texts, layer, model_name)

    def save(self, folder: str | Path) -> None:
        from safetensors.torch import save

        folder = Path(folder)
        atomic_write_bytes(folder / CORPUS_FILE, save({
            "acts": self.acts.contiguous(), "token_ids": self.token_ids.contiguous(),
            "seq_ids": torch.from_numpy(np.ascontiguousarray(self.seq_ids)),
            "positions": torch.from_numpy(np.ascontiguousarray(self.positions))}))
        atomic_write_json(folder / META_FILE, {"format_version": 1, "model": self.model, "layer": self.layer,
                                               "n_tokens": self.n_tokens, "d_model": self.d_model, "texts": self.texts})
        self.folder = folder

    @classmethod
    def load(cls, folder: str | Path) -> Corpus:
        from safetensors.torch import load_file

        folder = Path(folder)
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        t = load_file(folder / CORPUS_FILE)
        if int(t["acts"].shape[0]) != int(meta["n_tokens"]):
            raise ValueError(f"{folder} is damaged: {t['acts'].shape[0]} rows for {meta['n_tokens']} tokens")
        return cls(t["acts"], t["token_ids"].long(), t["seq_ids"].numpy(), t["positions"].numpy(), list(meta["texts"]),
                   int(meta["layer"]), str(meta["model"]), folder)

    # -- reading with an SAE -------------------------------------------------------------------
    def encoded(self, sae: Any, *, batch_size: int = 4096, progress: Progress | None = None):
        """Yield `(start, latents [b, d_sae])` over every corpus token (`sae`: the unit-norm view)."""
        for s in range(0, self.n_tokens, batch_size):
            with torch.inference_mode():
                yield s, sae.encode(self.acts[s : s + batch_size].to(sae.W_enc.dtype))
            if progress is not None:
                progress(min(1.0, (s + batch_size) / self.n_tokens), "encoding the corpus with the SAE")

    def column(self, sae: Any, feature: int, *, key: str = "", progress: Progress | None = None) -> Tensor:
        """The feature's activation on every corpus token: `[n_tokens]` float32 (kept for the last 32
        features asked for; `key` names the SAE so two SAEs never share an entry)."""
        cache_key = (key, int(feature))
        with self._lock:
            if cache_key in self._columns:
                self._columns.move_to_end(cache_key)
                return self._columns[cache_key]
        out = torch.empty(self.n_tokens)
        for s, lat in self.encoded(sae, progress=progress):
            out[s : s + len(lat)] = lat[:, feature].float()
        with self._lock:
            self._columns[cache_key] = out
            while len(self._columns) > 32:
                self._columns.popitem(last=False)
        return out

    def max_activation(self, sae: Any, *, progress: Progress | None = None) -> Tensor:
        """Each feature's largest activation over the corpus: `[d_sae]` (an f_max when no ReasonScore table is at hand)."""
        best = torch.zeros(sae.d_sae)
        for _, lat in self.encoded(sae, progress=progress):
            best = torch.maximum(best, lat.float().amax(0))
        return best

    def group_token_mass(self, sae: Any, groups: np.ndarray, n_groups: int, vocab_size: int, *,
                         progress: Progress | None = None) -> Tensor:
        """`[n_groups, vocab]`: Σ over corpus tokens with that id of the summed activation of each group's
        features (`groups [d_sae]` gives each feature's group): what a cluster of features fires on."""
        onehot = torch.zeros(sae.d_sae, n_groups)
        onehot[torch.arange(sae.d_sae), torch.as_tensor(groups, dtype=torch.long)] = 1.0
        mass = torch.zeros(n_groups, vocab_size, dtype=torch.float64)
        for s, lat in self.encoded(sae, progress=progress):
            per_group = lat.float() @ onehot  # [b, n_groups]
            mass.index_add_(1, self.token_ids[s : s + len(lat)], per_group.T.double())
        return mass

    def subset(self, max_tokens: int) -> Corpus:
        """At most about `max_tokens` tokens as whole texts spread evenly over the corpus (every k-th
        text); the corpus itself when it is that small."""
        if self.n_tokens <= max_tokens:
            return self
        stride = -(-self.n_tokens // max_tokens)  # ceil
        keep = torch.from_numpy(self.seq_ids % stride == 0)
        return Corpus(self.acts[keep], self.token_ids[keep], self.seq_ids[keep.numpy()],
                      self.positions[keep.numpy()], self.texts, self.layer, self.model, self.folder)

    def token_counts(self, vocab_size: int) -> Tensor:
        """How often each token id occurs in the corpus: `[vocab]`."""
        return torch.bincount(self.token_ids, minlength=vocab_size)[:vocab_size].double()


def _safe(name: str) -> str:
    from reasoning_dspy.engine.fingerprint import slug

    return slug(name)


class PendingCorpus:
    """A corpus being loaded or extracted on a background thread, so the app answers meanwhile.

    `wait(progress)` blocks until it is ready, reporting the extraction's progress; an extraction that
    failed raises its error there, once per caller, with the reason."""

    def __init__(self, build: Callable[[Progress], Corpus], progress: Progress | None = None):
        self.fraction, self.message = 0.0, "loading the corpus"
        self._outer = progress
        self._corpus: Corpus | None = None
        self._error: BaseException | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(build,), name="dashboard-corpus", daemon=True)
        self._thread.start()

    @classmethod
    def ready_with(cls, corpus: Corpus) -> PendingCorpus:
        return cls(lambda _progress: corpus)

    def _report(self, fraction: float, message: str) -> None:
        self.fraction, self.message = fraction, message
        if self._outer is not None:
            self._outer(fraction, message)

    def _run(self, build: Callable[[Progress], Corpus]) -> None:
        try:
            self._corpus = build(self._report)
        except BaseException as err:  # noqa: BLE001 - handed to whoever waits
            self._error = err
        finally:
            self._done.set()

    @property
    def ready(self) -> bool:
        return self._done.is_set()

    def wait(self, progress: Progress | None = None, timeout_s: float | None = None) -> Corpus:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not self._done.wait(0.25):
            if progress is not None:
                progress(self.fraction, self.message)
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"the corpus is not ready after {timeout_s:g} s ({self.message})")
        if self._error is not None:
            raise RuntimeError(f"the corpus could not be built: {type(self._error).__name__}: {self._error}")
        assert self._corpus is not None
        return self._corpus
