"""What the server serves: a model, its SAE, f_max, the ReasonScore table and feature labels.

`load_served_model` turns the `--model` / `--sae` / `--scores` choice into a `ServedModel`:

- `--model tiny-random --sae tiny-planted` (tests): the planted SAE of `sae/planted.py`, with f_max,
  top words and the feature analysis measured on the shipped reasoning traces in a few hundred
  milliseconds. Its ReasonScore is degenerate (the detector is the SAE's only live latent, so its
  shares are all 1 and its score is negative), so `top` steering follows the planted candidate list
  (`planted.CANDIDATES`, the push feature second) and the reasoning feature is the planted detector.
- `--model smollm2-reasoner`: the shipped SAE and its ReasonScore table and analysis, by default.
- any model with `--sae FOLDER` (and `--scores FOLDER`, default `FOLDER/scores`).

Loaded models are kept per process (`load_served_model` returns the same object for the same
arguments), so tests and benchmarks that start several servers load each model once.
"""

from __future__ import annotations

import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from torch import Tensor

from reasoning_dspy.features.analysis import FeatureReport
from reasoning_dspy.features.reasonscore import FeatureScores
from reasoning_dspy.models import LoadedModel
from reasoning_dspy.sae import SAE
from reasoning_dspy.serve.labels import FeatureLabels


class ServeSetupError(ValueError):
    """The model, SAE or scores named on the command line cannot be served together."""


@dataclass
class ServedModel:
    """Everything the server needs about the one model it serves."""

    name: str  # the model id clients send
    loaded: LoadedModel
    sae: SAE | None = None
    sae_name: str | None = None
    max_activation: Tensor | None = None  # [d_sae] f_max, unit-norm-decoder units
    scores: FeatureScores | None = None
    analysis: list[FeatureReport] = field(default_factory=list)
    ranking: list[int] = field(default_factory=list)  # what `{"top": N}` steering takes, best first
    ranking_source: str = "none"  # "reasonscore", "planted candidates" or "none"
    reasoning_features: list[int] = field(default_factory=list)  # whose activation explain reports

    def __post_init__(self) -> None:
        self.labels = FeatureLabels(self.scores, self.analysis)

    @property
    def d_sae(self) -> int | None:
        return self.sae.d_sae if self.sae is not None else None

    @property
    def context_length(self) -> int | None:
        return getattr(self.loaded.model.config, "max_position_embeddings", None)


_CACHE: dict[tuple, ServedModel] = {}
_CACHE_LOCK = threading.Lock()


def load_served_model(model: str = "tiny-random", sae: str | None = None, scores: str | None = None, *,
                      name: str | None = None, dtype: str | None = None, device: str = "cpu", seed: int = 0,
                      reasoning_features: int = 10) -> ServedModel:
    """Load (or reuse) the model, SAE and ReasonScore table to serve; see the module docstring."""
    key = (model, sae, scores, name, dtype, device, seed, reasoning_features)
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = _load(model, sae, scores, name=name or model, dtype=dtype, device=device, seed=seed,
                                n_reasoning=reasoning_features)
        return _CACHE[key]


def _load(model: str, sae_name: str | None, scores_dir: str | None, *, name: str, dtype: str | None, device: str,
          seed: int, n_reasoning: int) -> ServedModel:
    from reasoning_dspy.features.analysis import load_analysis
    from reasoning_dspy.models import load_model
    from reasoning_dspy.sae import load_sae, planted
    from reasoning_dspy.sae.io import SHIPPED_SAES, shipped_sae_folder

    loaded = load_model(model, dtype=dtype, device=device, seed=seed)
    if sae_name is None and model in SHIPPED_SAES:
        sae_name = model
    if sae_name is None:
        return ServedModel(name, loaded)
    if sae_name == planted.NAME:
        if loaded.model_spec.d_model != 64 or loaded.model_spec.name != "tiny-random":
            raise ServeSetupError(f"--sae {planted.NAME} is built for --model tiny-random, not {model!r}")
        sae = planted.planted_sae(loaded.model, loaded.tokenizer)
        scores, analysis = planted_reference(loaded, sae)
        ranking = list(planted.CANDIDATES) + [f for f in scores.ranking.tolist() if f not in planted.CANDIDATES]
        return ServedModel(name, loaded, sae, sae_name, scores.max_activation, scores, analysis, ranking,
                           "planted candidates", list(planted.REASONING))
    sae = load_sae(sae_name, device=device)
    if sae.d_in != loaded.model_spec.d_model:
        raise ServeSetupError(f"the SAE {sae_name!r} expects d_in={sae.d_in} but {model} has "
                              f"d_model={loaded.model_spec.d_model}; serve it with the model it was trained on")
    folder = Path(scores_dir) if scores_dir else (
        shipped_sae_folder(sae_name) if sae_name in SHIPPED_SAES and not Path(sae_name).exists() else Path(sae_name)
    ) / "scores"
    if not (folder / "scores.safetensors").is_file():
        if scores_dir:
            raise ServeSetupError(f"--scores {scores_dir!r} holds no ReasonScore table (scores.safetensors); "
                                  "write one with `reasoning-dspy score`")
        from reasoning_dspy.steering import estimate_max_activation

        fmax = estimate_max_activation(loaded.model, loaded.tokenizer, sae)
        return ServedModel(name, loaded, sae, sae_name, fmax)
    scores = FeatureScores.load(folder)
    if scores.d_sae != sae.d_sae:
        raise ServeSetupError(f"the scores in {folder} cover {scores.d_sae} features but the SAE has "
                              f"d_sae={sae.d_sae}; pass the --scores written for this SAE")
    analysis = load_analysis(folder) if (folder / "analysis.json").is_file() else []
    return ServedModel(name, loaded, sae, sae_name, scores.max_activation, scores, analysis,
                       scores.ranking.tolist(), "reasonscore", scores.top(n_reasoning))


def planted_reference(loaded: LoadedModel, sae: SAE, n_texts: int = 48) -> tuple[FeatureScores, list[FeatureReport]]:
    """ReasonScore statistics (f_max, top words) and the analysis of the planted SAE's live features,
    measured on the first `n_texts` shipped reasoning traces."""
    from reasoning_dspy.activations import extract_activations
    from reasoning_dspy.features.analysis import analyze_features
    from reasoning_dspy.features.reasonscore import score_features
    from reasoning_dspy.prompts import bundled_traces

    with tempfile.TemporaryDirectory(prefix="reasoning-dspy-serve-") as tmp:
        cache = extract_activations(loaded.model, loaded.tokenizer, bundled_traces()[:n_texts], sae.cfg.hook_layer,
                                    tmp, model_name=loaded.model_spec.name, dtype="float32", batch_size=16,
                                    progress=False)
        scores = score_features(cache, sae, tokenizer=loaded.tokenizer, top_n=4, progress=False)
        live = [int(f) for f in (scores.max_activation > 0).nonzero().flatten().tolist()]
        analysis = analyze_features(cache, sae, scores, tokenizer=loaded.tokenizer, features=live,
                                    progress=False) if live else []
    return scores, analysis
