"""Experiment configs (YAML) and the runner that executes them."""
