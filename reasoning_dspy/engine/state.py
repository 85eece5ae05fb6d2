"""Saving a `SteeredEngine` with a DSPy program (`program.save`) and rebuilding it (`program.load`).

The state is plain JSON: where the model, SAE and f_max came from (`EngineSources`), the engine's
settings, and its fingerprint, which the rebuilt engine must reproduce. A live engine with the same
fingerprint lends its model and SAE instead of loading them again.
"""

from __future__ import annotations

import weakref
from typing import Any

from pydantic import BaseModel, Field

#: fingerprint -> the most recent live engine with it (weakly held)
LIVE_ENGINES: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


class EngineSources(BaseModel):
    """Where the engine's parts came from, so `load_state` can rebuild it in another process."""

    model: str | None = Field(None, description="model id, local folder or offline name passed to load_model")
    dtype: str | None = Field(None, description="model dtype")
    device: str = Field("cpu", description="device the model runs on")
    seed: int = Field(0, description="seed of offline random models")
    sae: str | None = Field(None, description="SAE folder (cfg.json + sae_weights.safetensors)")
    max_activation: str | None = Field(None, description="file or ReasonScore folder holding max_activation")


def dump_engine_state(engine: Any) -> dict:
    """JSON state of `engine` for `program.save`."""
    settings = engine._settings()
    steering = settings.pop("steering")
    state = {
        "fingerprint": engine.fingerprint, "sources": engine.sources.model_dump(),
        "steering": steering.model_dump(mode="json") if steering is not None else None,
        **{k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()},
    }
    if engine.max_activation is not None and engine.sources.max_activation is None:
        state["max_activation_values"] = engine.max_activation.tolist()
    return state


def unrebuildable(engine: Any) -> str | None:
    """Why `engine` cannot be rebuilt from its recorded sources in another process (None when it can)."""
    if engine.sources.model is None:
        return "it records no model source"
    if engine.sae is not None and engine.sources.sae is None:
        return "its SAE was passed in memory (save it with reasoning_dspy.save_sae(sae, folder) and pass the folder)"
    return None


def load_engine_state(cls: type, state: dict) -> Any:
    """Rebuild the engine saved in `state`: the saved settings always apply, the model and SAE come
    from a live engine with the same fingerprint or are loaded from the recorded sources."""
    saved = dict(steering=state.get("steering"), capture=state.get("capture", False),
                 reasoning_features=state.get("reasoning_features", ()), capture_k=state.get("capture_k", 10),
                 max_tokens=state.get("max_tokens", 256), temperature=state.get("temperature", 0.0),
                 max_batch_size=state.get("max_batch_size", 16), max_wait_ms=state.get("max_wait_ms", 5.0),
                 prefix_cache_size=state.get("prefix_cache_size", 4),
                 truncate_prompt=state.get("truncate_prompt", False), name=state.get("name"))
    live = LIVE_ENGINES.get(state.get("fingerprint", ""))
    if live is not None:
        return live.derive(**saved)
    sources = EngineSources.model_validate(state.get("sources") or {})
    if sources.model is None:
        raise ValueError("this saved engine records no model source; pass the LM again after loading")
    needs_sae = state.get("capture") or (state.get("steering") or {}).get("features")
    if needs_sae and sources.sae is None:
        raise ValueError(
            "the saved engine used an SAE that was passed in memory, so it cannot be reloaded here: "
            "save it with reasoning_dspy.save_sae(sae, folder) and build the LM with SteeredLM(..., sae=folder)"
        )
    engine = cls.from_pretrained(
        sources.model, dtype=sources.dtype, device=sources.device, seed=sources.seed, sae=sources.sae,
        max_activation=sources.max_activation or state.get("max_activation_values"), **saved)
    if state.get("fingerprint") and engine.fingerprint != state["fingerprint"]:
        raise ValueError(
            f"the saved program was built with engine {state.get('name')}-{state['fingerprint']}, but "
            f"reloading {sources.model!r} gives {engine.model_id}: the weights, SAE or f_max changed"
        )
    return engine
