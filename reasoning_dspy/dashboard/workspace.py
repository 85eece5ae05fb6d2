"""What every page reads: the model, its SAE with f_max, ReasonScore table, analysis and labels (a
`serve.catalog.ServedModel`, as the server holds it), and the corpus at the SAE's layer (loaded, or
extracted on a model's first start, on a background thread while the other pages already answer).

`open_workspace` builds it for the command line; `with_sae` swaps the SAE on the same loaded model
(the SAE box of the app). An SAE that cannot read this model, a missing folder or a scores table
written for another SAE raise `DashboardError` with a message the app shows as is.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from reasoning_dspy.dashboard.corpus import Corpus, PendingCorpus, corpus_texts
from reasoning_dspy.models import LoadedModel
from reasoning_dspy.serve.catalog import ServedModel

Progress = Callable[[float, str], None]


class DashboardError(ValueError):
    """Input the dashboard cannot use; the message says what was wrong and what is expected."""


@dataclass
class Workspace:
    """One model + SAE, ready for every page. `served` is what the server would serve."""

    served: ServedModel
    pending: PendingCorpus  # the corpus, loading or extracting in the background
    recommended: Any = None  # the SAE folder's recommended SteeringSpec, if it has one
    sae_key: str = ""  # fingerprint of the SAE's weights (keys cached columns and map layouts)
    _pieces: list[str] | None = field(default=None, repr=False)
    _view: Any = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def corpus(self) -> Corpus:
        """The corpus (waits while it is being extracted; see `wait_corpus` for progress)."""
        return self.pending.wait()

    def wait_corpus(self, progress: Progress | None = None) -> Corpus:
        """The corpus, reporting extraction progress while it is not ready; `DashboardError` if it failed."""
        try:
            return self.pending.wait(progress)
        except RuntimeError as err:
            raise DashboardError(str(err)) from None

    @property
    def loaded(self) -> LoadedModel:
        return self.served.loaded

    @property
    def tokenizer(self) -> Any:
        return self.served.loaded.tokenizer

    @property
    def sae(self) -> Any:
        return self.served.sae

    @property
    def view(self) -> Any:
        """The SAE with unit-norm decoder rows: activations in f_max units, as everywhere else."""
        with self._lock:
            if self._view is None:
                self._view = self.served.sae.unit_norm_view().eval()
            return self._view

    @property
    def scores(self) -> Any:
        return self.served.scores

    @property
    def d_sae(self) -> int:
        return int(self.served.sae.d_sae)

    @property
    def layer(self) -> int:
        return int(self.served.sae.cfg.hook_layer)

    @property
    def pieces(self) -> list[str]:
        """Every token id's text, leading space included (`features.vocab.token_pieces`)."""
        with self._lock:
            if self._pieces is None:
                from reasoning_dspy.features.vocab import token_pieces

                self._pieces = token_pieces(self.tokenizer)
            return self._pieces

    def check_feature(self, value: Any) -> int:
        """A feature index from the UI, or a `DashboardError` saying the valid range."""
        try:
            feature = int(str(value).strip()) if not isinstance(value, (int, float)) else int(value)
            if isinstance(value, float) and value != int(value):
                raise ValueError
        except (TypeError, ValueError):
            raise DashboardError(f"feature index must be a whole number from 0 to {self.d_sae - 1}, got {value!r}") from None
        if not 0 <= feature < self.d_sae:
            raise DashboardError(f"feature {feature} is out of range: the SAE {self.served.sae_name!r} has {self.d_sae} "
                                 f"features (valid 0..{self.d_sae - 1})")
        return feature

    def parse_features(self, text: str) -> list[int]:
        """`"3, 17 42"` -> `[3, 17, 42]`, each checked; empty text -> []."""
        parts = [p for p in str(text or "").replace(",", " ").split() if p]
        out: list[int] = []
        for p in parts:
            f = self.check_feature(p)
            if f not in out:
                out.append(f)
        return out

    def describe(self, feature: int) -> dict[str, Any]:
        """`{index, label, top_words, kind, rank, score, max_activation}` (`serve.labels.FeatureLabels`)."""
        info = dict(self.served.labels.describe(feature))
        if info["max_activation"] is None and self.served.max_activation is not None:
            info["max_activation"] = float(self.served.max_activation[feature])
        return info


def open_workspace(model: str, sae: str | None = None, scores: str | None = None, *, cache_dir: str | Path,
                   dtype: str | None = None, device: str = "cpu", seed: int = 0, corpus_limit: int | None = None,
                   progress: Progress | None = None) -> Workspace:
    """Load the model, then its SAE (default: the model's shipped SAE) and the corpus."""
    from reasoning_dspy.models import ModelLoadError, load_model

    try:
        loaded = load_model(model, dtype=dtype, device=device, seed=seed)
    except (ModelLoadError, OSError, ValueError) as err:
        raise DashboardError(str(err)) from None
    return with_sae(loaded, sae, scores, name=model, cache_dir=cache_dir, corpus_limit=corpus_limit,
                    progress=progress)


def with_sae(loaded: LoadedModel, sae: str | None, scores: str | None = None, *, name: str, cache_dir: str | Path,
             corpus_limit: int | None = None, progress: Progress | None = None) -> Workspace:
    """A workspace for `sae` on an already loaded model (nothing is reloaded but the SAE)."""
    from reasoning_dspy.sae.io import SHIPPED_SAES

    if sae is None or not str(sae).strip():
        if name not in SHIPPED_SAES:
            raise DashboardError(f"{name} ships no SAE: pass an SAE folder (--sae), or tiny-planted with tiny-random")
        sae = name
    sae = str(sae).strip()
    served, recommended = _served(loaded, sae, scores, name=name)
    texts = corpus_texts(corpus_limit)

    def build(report: Progress) -> Corpus:
        return Corpus.ensure(loaded.model, loaded.tokenizer, int(served.sae.cfg.hook_layer), cache_dir,
                             model_name=loaded.model_spec.name, texts=texts, progress=report)

    if served.max_activation is None:  # no ReasonScore table: f_max over the corpus, which is needed now
        pending = PendingCorpus.ready_with(build(progress or (lambda f, m: None)))
    else:  # the pages that need no corpus work while it is extracted, one batch per model-lock hold
        pending = PendingCorpus(build, progress)
    ws = Workspace(served, pending, recommended, decoder_fingerprint(served.sae.W_dec))
    if served.max_activation is None:
        served.max_activation = ws.corpus.max_activation(ws.view, progress=progress)
    return ws


def _served(loaded: LoadedModel, sae_name: str, scores_dir: str | None, *, name: str) -> tuple[ServedModel, Any]:
    """The SAE side of `serve.catalog.load_served_model`, on a model already in memory."""
    from reasoning_dspy.engine.microbatcher import model_lock
    from reasoning_dspy.features.analysis import load_analysis
    from reasoning_dspy.features.reasonscore import FeatureScores
    from reasoning_dspy.sae import load_sae, planted
    from reasoning_dspy.sae.io import SHIPPED_SAES, SAEFileError, shipped_sae_folder
    from reasoning_dspy.serve.catalog import planted_reference
    from reasoning_dspy.steering import SteeringError, recommended_steering

    spec = loaded.model_spec
    if sae_name == planted.NAME:
        if spec.name != "tiny-random" or spec.d_model != 64:
            raise DashboardError(f"the SAE {planted.NAME} is built for tiny-random (d_model 64), not {spec.name} "
                                 f"(d_model {spec.d_model})")
        with model_lock(loaded.model):  # a few hundred ms of forwards on the shipped traces
            sae = planted.planted_sae(loaded.model, loaded.tokenizer)
            table, analysis = planted_reference(loaded, sae)
        ranking = list(planted.CANDIDATES) + [f for f in table.ranking.tolist() if f not in planted.CANDIDATES]
        return ServedModel(name, loaded, sae, sae_name, table.max_activation, table, analysis, ranking,
                           "planted candidates", list(planted.REASONING)), None
    folder = shipped_sae_folder(sae_name) if sae_name in SHIPPED_SAES and not Path(sae_name).exists() else Path(sae_name)
    try:
        sae = load_sae(folder)
    except (SAEFileError, FileNotFoundError, OSError, ValueError) as err:
        raise DashboardError(f"cannot load the SAE {sae_name!r}: {err}") from None
    if sae.d_in != spec.d_model:
        raise DashboardError(f"the SAE {sae_name!r} expects d_in={sae.d_in}, but {spec.name} has d_model={spec.d_model}: "
                             "it was trained on another model; choose an SAE trained on this one")
    layer = sae.cfg.hook_layer
    if layer is None or not 0 <= layer < spec.n_layers:
        raise DashboardError(f"the SAE {sae_name!r} reads layer {layer}, but {spec.name} has layers 0..{spec.n_layers - 1}"
                             if layer is not None else f"the SAE {sae_name!r} records no hook_layer; set it in cfg.json")
    table_dir = Path(scores_dir) if scores_dir else folder / "scores"
    table = analysis = None
    if (table_dir / "scores.safetensors").is_file():
        table = FeatureScores.load(table_dir)
        if table.d_sae != sae.d_sae:
            raise DashboardError(f"the scores in {table_dir} cover {table.d_sae} features but the SAE has "
                                 f"d_sae={sae.d_sae}; give the scores written for this SAE")
        analysis = load_analysis(table_dir) if (table_dir / "analysis.json").is_file() else []
    elif scores_dir:
        raise DashboardError(f"{scores_dir!r} holds no ReasonScore table (scores.safetensors); write one with "
                             "`reasoning-dspy score`")
    try:
        recommended = recommended_steering(folder)
    except SteeringError:
        recommended = None
    if table is None:
        return ServedModel(name, loaded, sae, sae_name), recommended
    return ServedModel(name, loaded, sae, sae_name, table.max_activation, table, analysis or [],
                       table.ranking.tolist(), "reasonscore", table.top(10)), recommended


def decoder_fingerprint(w_dec: torch.Tensor) -> str:
    """sha256 (16 hex digits) of every byte of decoder weights `[d_sae, d_in]`: a changed SAE never reuses a
    cached column or map layout."""
    w = w_dec.detach().float().cpu().contiguous().numpy()
    return hashlib.sha256(w.tobytes() + str(w.shape).encode()).hexdigest()[:16]
