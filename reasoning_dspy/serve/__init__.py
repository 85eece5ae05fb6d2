"""`reasoning-dspy serve`: a steered model behind an OpenAI-compatible HTTP API (FastAPI + uvicorn).

Requests queue on one micro-batched `SteeredEngine`, each with its own steering
(`extra_body={"steering": {...}}`); `/v1/explain` says which SAE features fired on which tokens.
See docs/serve.md. The app needs `fastapi` and `uvicorn` (dependencies of reasoning-dspy).

| module | job |
|---|---|
| `config` | `ServeConfig`: every setting (Python API, CLI flags, /health) |
| `catalog` | what is served: model, SAE, f_max, ReasonScore table, labels |
| `labels` | feature labels from the ReasonScore table and analysis |
| `bridge` | the only code that touches the engine's insides |
| `steering_field` | the `steering` request field → `SteeringSpec` + echo |
| `schemas` | request bodies and their validation |
| `state` | what the routes share; model-id and API-key checks |
| `completions` | the chat/completions route bodies: JSON or SSE answers |
| `generation` | limits, admission, queueing rows, disconnects |
| `admission` | the bounded queue (503 + Retry-After when full) |
| `explain` | `/v1/explain`: per-token features, reasoning activation, evidence |
| `openai_format` | response bodies and SSE chunks |
| `store` | recent completions for explain-by-id |
| `metrics`, `logs`, `middleware` | /metrics, JSON logs, request ids and body limit |
| `app`, `run` | the FastAPI app; uvicorn (blocking) or `ServerThread` (in process) |
"""

from __future__ import annotations

from typing import Any

#: public name -> module that defines it (imported on first use, so `serve.config` stays light for the CLI)
_EXPORTS = {
    "create_app": "app", "ServedModel": "catalog", "ServeSetupError": "catalog", "load_served_model": "catalog",
    "API_KEY_ENV": "config", "ServeConfig": "config", "ServerThread": "run", "serve": "run",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
