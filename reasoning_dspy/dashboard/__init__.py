"""`reasoning-dspy dashboard`: a Gradio app that shows which reasoning features fire, where, and what
steering does, on any model + SAE, bound to 127.0.0.1 with analytics off. See docs/dashboard.md.

Gradio is imported only by `app` (and so only by the `dashboard` command); every page's computation
lives in its own module and runs without a browser.

| module | job |
|---|---|
| `config` | `DashboardConfig`: every setting (Python API and CLI flags) |
| `workspace` | model, SAE, f_max, ReasonScore table, labels and corpus for the pages; clear errors |
| `corpus` | the bundled traces and prompts as cached activations at the SAE's layer |
| `backend` | answers and per-token activations from the in-process engine or a running server |
| `prompt_view` | Prompt page: heatmap, top features, evidence tokens |
| `steer_view` | Steering page: baseline vs steered, strength sweep |
| `feature_view` | Feature page: contexts, density histogram, tokens, logit effects |
| `feature_map` | Feature map: cached UMAP layout, clusters and their labels, the clickable SVG |
| `experiments_view` | Experiments page: runs, trials, plots, annotations |
| `session` | `Dashboard`: the state and one method per user action |
| `tokens` | how token texts are shown |
| `app` | the Gradio layout |
| `launch` | `start`: serve it in this process |
| `browser` | headless Chromium for tests and screenshots |
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {"DashboardConfig": "config", "Dashboard": "session", "DashboardError": "workspace"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
