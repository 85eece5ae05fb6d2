"""The `dspy.LM` face of a `SteeredEngine`: `SteeredLM(...)`, `engine_of(lm)`, and reading engine
reports back inside DSPy programs."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from torch import nn

from reasoning_dspy.engine.steered_engine import (
    PROVIDER_KEY,
    AsyncSteeredEngine,
    EngineSources,
    SteeredEngine,
)
from reasoning_dspy.models import LoadedModel, model_spec
from reasoning_dspy.sae import SAE
from reasoning_dspy.steering import ActivationReport, SteeringSpec


def SteeredLM(  # noqa: N802 - a factory that reads like the class it returns
    model: str | LoadedModel | nn.Module | tuple = "tiny-random",
    tokenizer: Any = None,
    *,
    sae: str | SAE | None = None,
    max_activation: Any = None,
    steering: SteeringSpec | dict | None = None,
    capture: bool = False,
    reasoning_features: Sequence[int] = (),
    dtype: str | None = None,
    device: str = "cpu",
    seed: int = 0,
    max_tokens: int = 256,
    temperature: float = 0.0,
    cache: bool = True,
    max_batch_size: int = 16,
    max_wait_ms: float = 5.0,
    prefix_cache_size: int = 4,
    truncate_prompt: bool = False,
    name: str | None = None,
    **lm_kwargs: Any,
):
    """A ready `dspy.LM` backed by a `SteeredEngine`.

    `model` is a name/path for `load_model`, a `LoadedModel`, a `(model, tokenizer)` pair, or a
    model with `tokenizer=`. `sae` is an SAE or its folder; `max_activation` its per-feature f_max
    (a `[d_sae]` tensor, a ReasonScore result or folder). `steering` is the default spec;
    per call, pass `config={"metadata": {"steering": {...}}}` to a DSPy module (or `None` to switch
    it off). Greedy (`temperature=0`) by default, so answers are reproducible. `truncate_prompt=True`
    keeps the end of prompts longer than the model's context (optimizers' long meta-prompts on small
    models) instead of raising `ContextLengthError`. `prefix_cache_size` prefilled prompt prefixes
    (the system prompt, per steering) are kept and reused by later calls; 0 turns that off.
    """
    import dspy

    common = dict(steering=steering, capture=capture, reasoning_features=reasoning_features, max_tokens=max_tokens,
                  temperature=temperature, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms,
                  prefix_cache_size=prefix_cache_size,
                  truncate_prompt=truncate_prompt, name=name)
    if isinstance(model, SteeredEngine):
        engine = model
    elif isinstance(model, str):
        engine = SteeredEngine.from_pretrained(model, dtype=dtype, device=device, seed=seed, sae=sae,
                                               max_activation=max_activation, **common)
    else:
        if isinstance(model, LoadedModel):
            model, tokenizer = model.model, model.tokenizer
        elif isinstance(model, tuple):
            model, tokenizer = model
        if tokenizer is None:
            raise TypeError("pass the tokenizer too: SteeredLM(model, tokenizer, ...) or SteeredLM(load_model(...))")
        if isinstance(sae, str) or hasattr(sae, "__fspath__"):
            from reasoning_dspy.sae import load_sae

            sae_path, sae = str(sae), load_sae(sae, device=str(next(model.parameters()).device))
        else:
            sae_path = None
        sources = EngineSources(model=model_spec(model).name,
                                dtype=str(next(model.parameters()).dtype).removeprefix("torch."),
                                device=str(next(model.parameters()).device), seed=seed, sae=sae_path,
                                max_activation=str(max_activation) if isinstance(max_activation, str) else None)
        engine = SteeredEngine(model, tokenizer, sae=sae, max_activation=max_activation, sources=sources, **common)
    return dspy.LM(f"local/{engine.model_id}", engine=engine, async_engine=AsyncSteeredEngine(engine),
                   max_tokens=engine.max_tokens, temperature=engine.temperature, cache=cache,
                   num_retries=0, **lm_kwargs)


def engine_of(lm: Any) -> SteeredEngine:
    """The `SteeredEngine` behind a `dspy.LM`, with a clear error for any other LM."""
    engine = getattr(lm, "engine", None)
    if isinstance(engine, AsyncSteeredEngine):
        engine = engine.engine
    if not isinstance(engine, SteeredEngine):
        raise TypeError(
            f"expected a SteeredLM (a dspy.LM with a SteeredEngine), got {type(lm).__name__} "
            f"{getattr(lm, 'model', '')!r}; build one with reasoning_dspy.SteeredLM(...)"
        )
    return engine


# -- reading the reports back inside DSPy programs ------------------------------------------

class _Collector:
    """Stands in DSPy's `caller_modules` so every LM call made inside records its history entry here."""

    def __init__(self) -> None:
        self.history: list[dict] = []


@dataclass
class CallReport:
    """What the engine reported for one LM call: the steering applied and the reasoning activation."""

    steering: SteeringSpec | None
    activation: ActivationReport | None
    text: str | None


class ReportCollector:
    def __init__(self, collector: _Collector):
        self._collector = collector

    def reports(self) -> list[CallReport]:
        """Reports of the calls made so far (cache hits included), in call order."""
        from dspy.lm15 import Response

        out: list[CallReport] = []
        for entry in self._collector.history:
            responses = entry.get("response")
            responses = responses if isinstance(responses, (list, tuple)) else [responses]
            for r in responses:
                if not isinstance(r, Response):
                    continue
                data = (r.provider_data or {}).get(PROVIDER_KEY) or {}
                spec = data.get("steering")
                act = data.get("activation")
                out.append(CallReport(SteeringSpec.model_validate(spec) if spec else None,
                                      ActivationReport.from_dict(act) if act else None, r.text))
        return out


@contextmanager
def collect_reports() -> Iterator[ReportCollector]:
    """Collect the engine reports of every LM call made inside the block, on this thread only.

    Uses DSPy's own history plumbing (`settings.caller_modules`), so cached answers report too.
    """
    import dspy

    collector = _Collector()
    callers = [*(dspy.settings.caller_modules or []), collector]
    with dspy.settings.context(caller_modules=callers):
        yield ReportCollector(collector)
