"""Residual-relative steering strength (`units="residual"`): each steered token moves by exactly α‖x_t‖,
next to f_max-unit rows in one batch, with the perturbation reported, serialised and validated."""

from __future__ import annotations

import json
import math

import pytest
import torch
from pydantic import ValidationError

from reasoning_dspy.activations import residual_at
from reasoning_dspy.engine import GenRow, SteeredEngine, generate_rows
from reasoning_dspy.steering import Steerer, SteeringError, SteeringSpec, as_spec, resolve, steer

LAYER = 2


def _resolve(spec, tiny, sae, fmax=None):
    return resolve(spec, d_model=tiny.model_spec.d_model, n_layers=tiny.model_spec.n_layers, sae=sae.unit_norm_view(),
                   max_activation=fmax)


def _ids(tiny, text="Wait, let me think about this. Therefore the answer is"):
    return tiny.tokenizer(text, return_tensors="pt")["input_ids"]


def _record(tiny, seen):
    return tiny.model_spec.layer(LAYER).register_forward_hook(lambda m, i, o: seen.append(o.detach().clone()))


def test_residual_units_move_every_token_by_alpha_times_its_norm(tiny, steer_sae):
    """During a KV-cached generate, at every prompt position and decode step, δ_t = α‖x_t‖·d̂ with
    d = Σ γ_i W_dec,i and α = ‖γ‖₂ — and no f_max is needed."""
    view = steer_sae.unit_norm_view()
    features = {7: 0.3, 20: -0.4}
    spec = SteeringSpec(features=features, units="residual")
    assert spec.residual_strength == pytest.approx(0.5)
    ids = _ids(tiny)
    seen: list[torch.Tensor] = []
    with steer(tiny.model, spec, sae=steer_sae) as steerer:
        handle = _record(tiny, seen)
        try:
            out = tiny.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=5, do_sample=False,
                                      pad_token_id=tiny.tokenizer.pad_token_id)
        finally:
            handle.remove()
    steered = torch.cat(seen, dim=1)[0]  # [T_prompt + 4, d]
    clean = residual_at(tiny.model, LAYER, out[:, : steered.shape[0]])[0]
    delta = steered - clean
    torch.testing.assert_close(delta.norm(dim=-1), 0.5 * clean.norm(dim=-1), atol=1e-4, rtol=1e-4)
    idx = torch.tensor(list(features))
    direction = torch.tensor(list(features.values())) @ view.W_dec.detach()[idx]
    expected = 0.5 * clean.norm(dim=-1, keepdim=True) * direction / direction.norm()
    torch.testing.assert_close(delta, expected, atol=1e-4, rtol=1e-4)
    moved = steerer.perturbations([4])[0]
    assert moved.n_tokens == 5 and moved.ratio == pytest.approx(0.5, rel=1e-4)
    assert moved.norm == pytest.approx(float(0.5 * clean[ids.shape[1] - 1 :].norm(dim=-1).mean()), rel=1e-4)


def test_one_feature_and_a_raw_vector(tiny, steer_sae):
    one = _resolve(SteeringSpec(features={3: -0.2}, units="residual"), tiny, steer_sae)
    w = steer_sae.unit_norm_view().W_dec.detach()[3]
    torch.testing.assert_close(one.add_relative, -0.2 * w)
    assert one.add is None and one.clamp_features is None
    vec = torch.zeros(64)
    vec[5] = 0.25
    raw = resolve(SteeringSpec(vector=vec.tolist(), layer=LAYER, units="residual"), d_model=64,
                  n_layers=tiny.model_spec.n_layers)
    torch.testing.assert_close(raw.add_relative, vec)  # a vector's norm is its strength


def test_mixed_units_rows_share_one_forward(tiny, steer_sae, steer_fmax):
    """f_max row, residual row and unsteered row in one batch: each gets exactly its own delta."""
    fmax_row = _resolve(SteeringSpec(features={11: 2.0}), tiny, steer_sae, steer_fmax)
    rel_row = _resolve(SteeringSpec(features={11: 0.2, 4: 0.1}, units="residual"), tiny, steer_sae)
    ids = _ids(tiny).repeat(3, 1)
    clean = residual_at(tiny.model, LAYER, ids)
    seen: list[torch.Tensor] = []
    with Steerer(tiny.model, [fmax_row, rel_row, None]) as steerer:
        handle = _record(tiny, seen)
        try:
            with torch.no_grad():
                tiny.model(input_ids=ids)
        finally:
            handle.remove()
    got = seen[0]
    assert torch.equal(got[2], clean[2])
    torch.testing.assert_close(got[0] - clean[0], fmax_row.add.expand_as(clean[0]), atol=1e-5, rtol=1e-4)
    alpha = math.sqrt(0.2**2 + 0.1**2)
    torch.testing.assert_close((got[1] - clean[1]).norm(dim=-1), alpha * clean[1].norm(dim=-1), atol=1e-4, rtol=1e-4)
    report = steerer.perturbations([0, 0, 0])
    assert report[2] is None and report[1].ratio == pytest.approx(alpha, rel=1e-4)
    assert report[0].norm == pytest.approx(float(fmax_row.add.norm()), rel=1e-4)


def test_batched_generate_and_engine_report_the_perturbation(tiny, steer_sae, steer_fmax, bundled_prompts):
    """Residual rows generate in a batch (shared prefix, prefix cache) as they do alone, and the
    engine reports ‖δ‖/‖x‖ = α for them, None for unsteered answers."""
    from reasoning_dspy.engine.prefix_cache import PrefixCache

    view = steer_sae.unit_norm_view()
    system = " ".join(bundled_prompts[:3])
    rel = _resolve(SteeringSpec(features={11: 0.8}, units="residual"), tiny, steer_sae)
    fmax = _resolve(SteeringSpec(features={11: 0.8}), tiny, steer_sae, steer_fmax)
    rows = [GenRow(_ids(tiny, system + q)[0].tolist(), 6, steering=s)
            for q, s in [(" Why?", rel), (" Why?", fmax), (" Why?", None)]]
    cache = PrefixCache(4)
    both = generate_rows(tiny.model, tiny.tokenizer, rows, sae=view, prefix_cache=cache)
    again = generate_rows(tiny.model, tiny.tokenizer, rows, sae=view, prefix_cache=cache)
    alone = [generate_rows(tiny.model, tiny.tokenizer, [r], sae=view)[0] for r in rows]
    assert [r.token_ids for r in both] == [r.token_ids for r in again] == [r.token_ids for r in alone]
    assert cache.hits > 0 and both[0].token_ids != both[2].token_ids != both[1].token_ids
    assert both[0].perturbation.ratio == pytest.approx(0.8, rel=1e-4) and both[2].perturbation is None

    engine = SteeredEngine(tiny.model, tiny.tokenizer, sae=steer_sae, max_tokens=4)
    try:
        steered, plain = engine.generate(["Why?"], steering={"features": {"11": 0.3}, "units": "residual"}), \
            engine.generate(["Why?"], steering=None)
    finally:
        engine.close()
    assert steered[0].perturbation.ratio == pytest.approx(0.3, rel=1e-4) and plain[0].perturbation is None


def test_serialisation_round_trip_and_stable_fingerprints():
    spec = SteeringSpec.from_features([5, 3], 0.2, units="residual")
    data = json.loads(json.dumps(spec.model_dump(mode="json")))
    assert data["units"] == "residual" and as_spec(data) == spec
    assert spec.fingerprint() != SteeringSpec.from_features([5, 3], 0.2).fingerprint()
    paper = SteeringSpec.from_features([5, 3], 2.0)
    assert paper.units == "fmax" and as_spec(paper.model_dump(mode="json")) == paper
    # default units are left out: the dump (DSPy's cache key) and the hash are as before units existed
    assert "units" not in paper.model_dump() and "units" not in paper.model_dump(mode="json")
    legacy = {"features": {"3": 2.0, "5": 2.0}, "layer": None, "mode": "add", "vector": None}
    import hashlib

    assert paper.fingerprint() == hashlib.sha256(json.dumps(legacy, sort_keys=True).encode()).hexdigest()[:12]


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"features": {1: 0.1}, "units": "bogus"}, "'fmax' or 'residual'"),
    ({"features": {1: 0.1}, "units": "residual", "mode": "clamp"}, "clamp sets a feature's activation"),
    ({"features": {1: 11.0}, "units": "residual"}, r"\|γ\| must be at most 10 \(γ is in multiples of the residual"),
    ({"features": {1: 8.0, 2: 8.0}, "units": "residual"}, "total strength α = ‖γ‖₂ = 11.3137 is out of range"),
    ({"features": {1: 2000.0}}, r"\|γ\| must be at most 1000"),
])
def test_bad_units_and_strengths_are_refused(kwargs, match):
    with pytest.raises(ValidationError, match=match):
        SteeringSpec(**kwargs)
    with pytest.raises(SteeringError, match="invalid steering spec"):
        as_spec({str(k): v for k, v in kwargs.items()})


def test_cancelling_directions_are_refused(tiny, steer_sae):
    with pytest.raises(SteeringError, match="cancel out"):
        _resolve(SteeringSpec(features={3: 0.2}, vector=(-0.2 * steer_sae.unit_norm_view().W_dec[3]).tolist(),
                              units="residual"), tiny, steer_sae)
