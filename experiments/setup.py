"""What an experiment works with: the model, SAE, scores, candidate features and examples its
config names, loaded and checked before anything is written."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments.config import WORD_PROBLEMS, ExperimentConfig, ExperimentConfigError


@dataclass
class Setup:
    """What a run works with, all resolved and checked."""

    cfg: ExperimentConfig
    loaded: Any
    sae: Any
    scores: Any
    features: list[int]  # candidate steering features, best first
    reasoning_features: list[int]
    train: list[Any]
    test: list[Any]

    def lm(self, **kwargs: Any) -> Any:
        from reasoning_dspy.program.lm import SteeredLM

        max_activation = self.scores.max_activation if self.scores is not None else None
        return SteeredLM(self.loaded, sae=self.sae, max_activation=max_activation, cache=False,
                         reasoning_features=self.reasoning_features, max_tokens=self.cfg.max_tokens,
                         max_batch_size=self.cfg.batch_size, **kwargs)

    def program(self) -> Any:
        import dspy

        cfg = self.cfg.program
        signature = dspy.Signature(cfg.signature, cfg.instruction) if cfg.instruction else dspy.Signature(cfg.signature)
        return dspy.ChainOfThought(signature) if cfg.module == "cot" else dspy.Predict(signature)


def prepare(cfg: ExperimentConfig) -> Setup:
    """Load and check everything the config names; raises `ExperimentConfigError` naming the field."""
    from reasoning_dspy.features.reasonscore import FeatureScores
    from reasoning_dspy.models import load_model
    from reasoning_dspy.sae import load_sae
    from reasoning_dspy.sae import planted as planted_sae
    from reasoning_dspy.sae.io import SHIPPED_SAES, shipped_sae_folder

    train, test = _examples(cfg)
    loaded = load_model(cfg.model, dtype=cfg.dtype, device=cfg.device)
    sae_name = cfg.sae or (cfg.model if cfg.model in SHIPPED_SAES else None)
    if sae_name is None:
        raise ExperimentConfigError(f"sae: {cfg.model!r} has no shipped SAE; name an SAE folder (sae=PATH)")
    scores = None
    if sae_name == planted_sae.NAME:
        sae = planted_sae.planted_sae(loaded.model, loaded.tokenizer)
        default_features, reasoning = planted_sae.CANDIDATES, planted_sae.REASONING
    else:
        try:
            sae = load_sae(sae_name, device=cfg.device)
        except Exception as err:  # noqa: BLE001 - any load problem is a config problem here
            raise ExperimentConfigError(f"sae: cannot load {sae_name!r}: {err}") from None
        folder = Path(cfg.scores) if cfg.scores else (
            shipped_sae_folder(sae_name) if sae_name in SHIPPED_SAES else Path(sae_name)) / "scores"
        try:
            scores = FeatureScores.load(folder)
        except FileNotFoundError as err:
            raise ExperimentConfigError(f"scores: {err}") from None
        if scores.d_sae != sae.d_sae:
            raise ExperimentConfigError(f"scores: {folder} covers {scores.d_sae} features but the SAE has "
                                        f"d_sae={sae.d_sae}")
        default_features = scores.top(cfg.steering.top_features)
        reasoning = scores.top(cfg.metric.reasoning_features)
    if cfg.layer is not None and cfg.layer != sae.cfg.hook_layer:
        raise ExperimentConfigError(f"layer: {cfg.layer} but the SAE reads layer {sae.cfg.hook_layer}; steering "
                                    "and measuring happen at the SAE's layer (leave layer unset)")
    if sae.d_in != loaded.model_spec.d_model:
        raise ExperimentConfigError(f"sae: d_in={sae.d_in} does not fit {cfg.model} (d_model "
                                    f"{loaded.model_spec.d_model})")
    features = cfg.steering.features if cfg.steering.features is not None else list(default_features)
    bad = [f for f in features if not 0 <= f < sae.d_sae]
    if bad:
        raise ExperimentConfigError(f"steering.features: {bad} are outside the SAE (d_sae={sae.d_sae}: valid "
                                    f"0..{sae.d_sae - 1})")
    if max(cfg.steering.n_features) > len(features):
        raise ExperimentConfigError(f"steering.n_features: {max(cfg.steering.n_features)} exceeds the "
                                    f"{len(features)} candidate features")
    return Setup(cfg, loaded, sae, scores, [int(f) for f in features], [int(f) for f in reasoning], train, test)


def _examples(cfg: ExperimentConfig) -> tuple[list[Any], list[Any]]:
    from reasoning_dspy.problems import as_dspy_examples, make_problems

    d = cfg.dataset
    if d.name == WORD_PROBLEMS:
        return (as_dspy_examples(make_problems(d.n_train, split=d.train_split, seed=cfg.seed, difficulty=d.difficulty,
                                               families=d.families)),
                as_dspy_examples(make_problems(d.n_test, split=d.test_split, seed=cfg.seed, difficulty=d.difficulty,
                                               families=d.families)))
    import dspy

    rows = []
    for i, line in enumerate(Path(d.name).read_text().splitlines(), start=1):
        if line.strip():
            try:
                row = json.loads(line)
                rows.append((row.get("split"), dspy.Example(question=row["question"], answer=str(row["answer"]))
                             .with_inputs("question")))
            except (ValueError, KeyError, TypeError, AttributeError) as err:
                raise ExperimentConfigError(f"dataset.name: {d.name}:{i} is not a question/answer row: {err}") from None
    train = [ex for split, ex in rows if split == d.train_split][: d.n_train]
    test = [ex for split, ex in rows if split == d.test_split][: d.n_test]
    if not train or not test:
        raise ExperimentConfigError(f"dataset.name: {d.name} has {len(train)} {d.train_split!r} and {len(test)} "
                                    f"{d.test_split!r} rows; both splits need rows (a 'split' field on each row)")
    return train, test
