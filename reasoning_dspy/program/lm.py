"""The `dspy.LM` face of a `SteeredEngine`: `SteeredLM(...)`, `engine_of(lm)`, and the engine's
reports read back inside DSPy programs.

Everything here goes through DSPy's public extension points: the engine contract
(`dspy.LM(..., engine=...)`) and the callback API (`dspy.utils.callback.BaseCallback`). A callback on
every `SteeredLM` re-fingerprints the weights before each call, so the model name DSPy caches under
follows a model fine-tuned in place; `collect_reports()` records the calls made inside a block
with a callback too, so reports work with DSPy's history switched off and for cached answers.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from dspy.utils.callback import BaseCallback
from torch import nn

from reasoning_dspy.engine import calls
from reasoning_dspy.engine.async_engine import AsyncSteeredEngine
from reasoning_dspy.engine.state import EngineSources
from reasoning_dspy.engine.steered_engine import SteeredEngine
from reasoning_dspy.features.activation import ActivationReport
from reasoning_dspy.models import LoadedModel, model_spec
from reasoning_dspy.sae import SAE
from reasoning_dspy.steering import SteeringSpec


def SteeredLM(  # noqa: N802 - a factory that reads like the class it returns
    model: str | LoadedModel | nn.Module | tuple | SteeredEngine = "tiny-random",
    tokenizer: Any = None,
    *,
    sae: str | SAE | None = None,
    max_activation: Any = None,
    steering: SteeringSpec | dict | None = None,
    capture: bool | None = None,
    reasoning_features: Sequence[int] | None = None,
    dtype: str | None = None,
    device: str = "cpu",
    seed: int = 0,
    max_tokens: int | None = None,
    temperature: float | None = None,
    cache: bool = True,
    max_batch_size: int | None = None,
    max_wait_ms: float | None = None,
    prefix_cache_size: int | None = None,
    truncate_prompt: bool | None = None,
    name: str | None = None,
    **lm_kwargs: Any,
):
    """A ready `dspy.LM` backed by a `SteeredEngine`.

    `model` is a name/path for `load_model`, a `LoadedModel`, a `(model, tokenizer)` pair, a model with
    `tokenizer=`, or a `SteeredEngine`. `sae` is an SAE or its folder; `max_activation` its per-feature
    f_max (a `[d_sae]` tensor, a ReasonScore result or folder). `steering` is the default spec;
    per call, pass `config={"metadata": {"steering": {...}}}` to a DSPy module (or `None` to switch
    it off). Greedy (`temperature=0`) by default, so answers are reproducible. `truncate_prompt=True`
    keeps the end of prompts longer than the model's context (optimizers' long meta-prompts on small
    models) instead of raising `ContextLengthError`. `prefix_cache_size` prefilled prompt prefixes
    (the system prompt, per steering) are kept and reused by later calls; 0 turns that off.

    A setting left at None takes the engine's default (`SteeredEngine`: 256 tokens, greedy, no
    steering, ...). Given a `SteeredEngine`, the settings that are passed make a sibling engine on
    the same model (`SteeredEngine.derive`), whose model id, and so DSPy cache key, is its own.
    """
    settings = {key: value for key, value in dict(
        steering=steering, capture=capture, reasoning_features=reasoning_features, max_tokens=max_tokens,
        temperature=temperature, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms,
        prefix_cache_size=prefix_cache_size, truncate_prompt=truncate_prompt, name=name).items() if value is not None}
    if isinstance(model, SteeredEngine):
        engine = _from_engine(model, settings, sae=sae, max_activation=max_activation, tokenizer=tokenizer,
                              dtype=dtype)
    elif isinstance(model, str):
        engine = SteeredEngine.from_pretrained(model, dtype=dtype, device=device, seed=seed, sae=sae,
                                               max_activation=max_activation, **settings)
    else:
        if isinstance(model, LoadedModel):
            model, tokenizer = model.model, model.tokenizer
        elif isinstance(model, tuple):
            model, tokenizer = model
        if tokenizer is None:
            raise TypeError("pass the tokenizer too: SteeredLM(model, tokenizer, ...) or SteeredLM(load_model(...))")
        sae_path, sae = _sae_source(sae, str(next(model.parameters()).device))
        sources = EngineSources(model=model_spec(model).name,
                                dtype=str(next(model.parameters()).dtype).removeprefix("torch."),
                                device=str(next(model.parameters()).device), seed=seed, sae=sae_path,
                                max_activation=_path_or_none(max_activation))
        engine = SteeredEngine(model, tokenizer, sae=sae, max_activation=max_activation, sources=sources, **settings)
    lm_kwargs.setdefault("max_tokens", settings.get("max_tokens", engine.max_tokens))
    lm_kwargs.setdefault("temperature", settings.get("temperature", engine.temperature))
    return lm_for_engine(engine, cache=cache, **lm_kwargs)


def _path_or_none(value: Any) -> str | None:
    return str(value) if isinstance(value, str) or hasattr(value, "__fspath__") else None


def _sae_source(sae: Any, device: str) -> tuple[str | None, SAE | None]:
    """`(folder or None, SAE)`: an SAE folder is loaded, and its path kept so the engine can be rebuilt."""
    if isinstance(sae, str) or hasattr(sae, "__fspath__"):
        from reasoning_dspy.sae import load_sae

        return str(sae), load_sae(sae, device=device)
    return None, sae


def _from_engine(engine: SteeredEngine, settings: dict[str, Any], *, sae: Any, max_activation: Any,
                 tokenizer: Any, dtype: str | None) -> SteeredEngine:
    """`engine` itself, or a sibling with the settings (and SAE, f_max) that were passed."""
    if tokenizer is not None or dtype is not None:
        raise TypeError("SteeredLM(<a SteeredEngine>, ...) uses the engine's model and tokenizer as loaded: "
                        "drop tokenizer= and dtype=, or pass the model itself to load it otherwise")
    # max_tokens and temperature reach the engine with every call (the LM's kwargs): no sibling needed
    changes = {key: value for key, value in settings.items() if key not in ("max_tokens", "temperature")}
    sources: dict[str, Any] = {}
    if sae is not None:
        sources["sae"], changes["sae"] = _sae_source(sae, str(next(engine.model.parameters()).device))
    if max_activation is not None:
        changes["max_activation"] = max_activation
        sources["max_activation"] = _path_or_none(max_activation)
    if not changes:
        return engine
    derived = engine.derive(**changes)
    if sources:
        derived.sources = derived.sources.model_copy(update=sources)
    return derived


def lm_for_engine(engine: SteeredEngine, *, cache: bool = True, callbacks: Sequence[BaseCallback] = (),
                  **lm_kwargs: Any) -> Any:
    """A `dspy.LM` named after `engine`'s fingerprint and driven by it (sync and async calls alike).

    The LM carries a callback that re-fingerprints the weights before every call, so DSPy's
    cache never answers for weights that have changed since."""
    import dspy

    return dspy.LM(f"local/{engine.model_id}", engine=engine, async_engine=AsyncSteeredEngine(engine), cache=cache,
                   num_retries=0, callbacks=[*callbacks, FollowWeights(), AnnounceCandidates()], **lm_kwargs)


def derived_lm(lm: Any, engine: SteeredEngine) -> Any:
    """A copy of the `SteeredLM` `lm` (its call settings, cache flag and callbacks) driven by `engine`."""
    callbacks = [c for c in lm.callbacks if not isinstance(c, (FollowWeights, AnnounceCandidates))]
    return lm_for_engine(engine, cache=lm.cache, callbacks=callbacks, **lm.kwargs)


class FollowWeights(BaseCallback):
    """Renames a `SteeredLM` to its engine's current model id before each call.

    The weights fingerprint is part of the name, and the name is part of DSPy's cache key: after
    fine-tuning the model in place, calls miss the cache instead of returning the old model's answers.
    """

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        engine = _engine_or_none(instance)
        if engine is not None:
            instance.model = f"local/{engine.refresh_fingerprint()}"


class AnnounceCandidates(BaseCallback):
    """Tells the engine how many candidates (`n`) the call about to run asks for, so it decodes them
    in one batch: DSPy itself asks the engine for them one at a time (`engine/calls.py`)."""

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        engine = _engine_or_none(instance)
        if engine is not None:
            n = (inputs.get("kwargs") or {}).get("n", (getattr(instance, "kwargs", None) or {}).get("n"))
            calls.announce(engine, n if isinstance(n, int) and not isinstance(n, bool) else 1)

    def on_lm_end(self, call_id: str, outputs: Any | None, exception: Exception | None = None) -> None:
        calls.finish()


def engine_of(lm: Any) -> SteeredEngine:
    """The `SteeredEngine` behind a `dspy.LM`, with a clear error for any other LM."""
    engine = _engine_or_none(lm)
    if engine is None:
        raise TypeError(
            f"expected a SteeredLM (a dspy.LM with a SteeredEngine), got {type(lm).__name__} "
            f"{getattr(lm, 'model', '')!r}; build one with reasoning_dspy.SteeredLM(...)"
        )
    return engine


# -- reading the reports back inside DSPy programs ------------------------------------------

def _engine_or_none(lm: Any) -> SteeredEngine | None:
    engine = getattr(lm, "engine", None)
    if isinstance(engine, AsyncSteeredEngine):
        engine = engine.engine
    return engine if isinstance(engine, SteeredEngine) else None


@dataclass
class CallReport:
    """What the engine reports for one LM call: the steering applied, the reasoning activation of
    the answer (None without an SAE), and the answer's text."""

    steering: SteeringSpec | None
    activation: ActivationReport | None
    text: str | None


@dataclass
class _Call:
    lm: Any
    messages: list[dict]
    kwargs: dict[str, Any]
    outputs: list[Any] | None = None


class _CallRecorder(BaseCallback):
    """Records each LM call made while it is active: the LM, its messages and kwargs, its outputs."""

    def __init__(self) -> None:
        self.calls: dict[str, _Call] = {}
        self._lock = threading.Lock()

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        messages = inputs.get("messages") or [{"role": "user", "content": inputs.get("prompt") or ""}]
        kwargs = {**(getattr(instance, "kwargs", None) or {}), **(inputs.get("kwargs") or {})}
        with self._lock:
            self.calls[call_id] = _Call(instance, list(messages), kwargs)

    def on_lm_end(self, call_id: str, outputs: Any | None, exception: Exception | None = None) -> None:
        with self._lock:
            call = self.calls.get(call_id)
            if call is not None and exception is None:
                call.outputs = list(outputs or [])


class ReportCollector:
    """Reads the engine reports of the calls recorded by `collect_reports`."""

    def __init__(self, recorder: _CallRecorder):
        self._recorder = recorder

    def reports(self) -> list[CallReport]:
        """One report per answer of every finished `SteeredLM` call so far (cache hits included), in call order."""
        with self._recorder._lock:
            calls = [c for c in self._recorder.calls.values() if c.outputs is not None]
        out: list[CallReport] = []
        for call in calls:
            engine = _engine_or_none(call.lm)
            if engine is None:
                continue
            steering, _ = engine.call_steering(call.kwargs.get("metadata"))
            for output in call.outputs:
                text = output.get("text") if isinstance(output, dict) else output
                activation = engine.report_for_call(call.messages, call.kwargs, text or "")
                out.append(CallReport(steering, activation, text))
        return out


@contextmanager
def collect_reports() -> Iterator[ReportCollector]:
    """Collect the engine reports of every `SteeredLM` call made inside the block (on this thread).

    Uses DSPy's callback API, so it works with history disabled and for answers DSPy serves from
    its cache: the engine keeps the reports of recent generations and measures a missing one again
    exactly (one teacher-forced forward).
    """
    import dspy

    recorder = _CallRecorder()
    with dspy.context(callbacks=[*(dspy.settings.get("callbacks") or []), recorder]):
        yield ReportCollector(recorder)
