"""Every generate path of the engine runs without transformers' deprecation warnings about the KV
cache keyword (`past_key_values` is deprecated in favour of `cache`)."""

from __future__ import annotations

import warnings

from reasoning_dspy.engine import GenRow, SteeredEngine, generate_rows
from reasoning_dspy.engine.jobs import MeasureJob, measure_response
from reasoning_dspy.engine.prefix_cache import PrefixCache
from reasoning_dspy.steering import CaptureConfig, SteeringSpec, resolve


def _cache_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [f"{w.category.__name__}: {w.message}" for w in caught
            if issubclass(w.category, (FutureWarning, DeprecationWarning)) and "past_key_values" in str(w.message)]


def test_generate_paths_raise_no_kv_cache_deprecation(tiny, steer_sae, steer_fmax, bundled_prompts):
    view = steer_sae.unit_norm_view()
    ids = lambda text: tiny.tokenizer(text)["input_ids"]  # noqa: E731
    system = " ".join(bundled_prompts[:3])
    add = resolve(SteeringSpec(features={11: 2.0}), d_model=64, n_layers=tiny.model_spec.n_layers, sae=view,
                  max_activation=steer_fmax)
    clamp = resolve(SteeringSpec(features={3: 2.0}, mode="clamp"), d_model=64, n_layers=tiny.model_spec.n_layers,
                    sae=view, max_activation=steer_fmax)
    capture = CaptureConfig(view, 2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        generate_rows(tiny.model, tiny.tokenizer, [GenRow(ids("Why?"), 4)])  # plain
        rows = [GenRow(ids(system + q), 4, steering=s, capture=True) for q, s in
                [(" Why?", add), (" How?", None), (" Really?", clamp)]]
        cache = PrefixCache(4)
        for _ in range(2):  # batched, shared prefix, steered, captured; the second time from the prefix cache
            generate_rows(tiny.model, tiny.tokenizer, rows, sae=view, capture=capture, prefix_cache=cache)
        assert cache.hits > 0
        measure_response(tiny.model, tiny.model_spec, capture,
                         MeasureJob.for_response(ids("Why?"), ids(" Because"), add, (3,)))
        engine = SteeredEngine(tiny.model, tiny.tokenizer, sae=steer_sae, max_activation=steer_fmax, capture=True,
                               max_tokens=4)
        try:
            engine.generate([system + " Why?", system + " How?"], steering=SteeringSpec(features={5: 1.0}))
            engine.generate([system + " Why?"], steering=None)
        finally:
            engine.close()
    assert not _cache_warnings(caught), _cache_warnings(caught)
