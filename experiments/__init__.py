"""Optimization experiments from YAML configs: `reasoning-dspy optimize experiments/configs/<name>.yaml`.

>>> from experiments import load_experiment, run_experiment
>>> folder = run_experiment(load_experiment("experiments/configs/optimize-tiny.yaml", ["seed=1"]))
"""

from experiments.config import ExperimentConfig, ExperimentConfigError, load_experiment
from experiments.runner import run_experiment

__all__ = ["ExperimentConfig", "ExperimentConfigError", "load_experiment", "run_experiment"]
