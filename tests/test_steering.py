"""Steering: specs, exact deltas on prompt and KV-cached decode positions, per-row batches, hook hygiene."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch

from reasoning_dspy.activations import extract_activations, residual_at
from reasoning_dspy.engine import GenRow, generate_rows
from reasoning_dspy.features.activation import summarize_latents
from reasoning_dspy.steering import (
    CaptureConfig,
    Steerer,
    SteeringError,
    SteeringSpec,
    as_spec,
    compute_max_activation,
    estimate_max_activation,
    load_max_activation,
    resolve,
    steer,
)

LAYER = 2


def _resolve(spec, tiny, sae, fmax):
    return resolve(spec, d_model=tiny.model_spec.d_model, n_layers=tiny.model_spec.n_layers, sae=sae.unit_norm_view(),
                   max_activation=fmax)


def _ids(tiny, text="Wait, let me think about this. Therefore the answer is"):
    return tiny.tokenizer(text, return_tensors="pt")["input_ids"]


@contextmanager
def _layer_outputs(tiny, layer=LAYER):
    """Record the output of `layer` in every forward inside the block. Entered inside a steerer, its
    hook comes after the steerer's, so it sees the steered output."""
    seen = []
    handle = tiny.model_spec.layer(layer).register_forward_hook(lambda m, i, o: seen.append(o.detach().clone()))
    try:
        yield seen
    finally:
        handle.remove()


def _steered_forward(tiny, ids):
    """Layer outputs of one plain forward over `ids` (inside whatever steerer is active)."""
    with _layer_outputs(tiny) as seen, torch.no_grad():
        tiny.model(input_ids=ids)
    return seen


# -- specs ------------------------------------------------------------------------------------

def test_spec_validation_and_coercion():
    spec = SteeringSpec.from_features([5, 3], strength=2.5)
    assert spec.features == {3: 2.5, 5: 2.5} and spec.mode == "add"
    assert as_spec(spec.model_dump(mode="json")) == spec  # JSON keys are strings, coerced back
    assert as_spec(None) is None and as_spec({}) is None and as_spec("off") is None
    assert spec.fingerprint() != SteeringSpec.from_features([5, 3], strength=2.0).fingerprint()
    with pytest.raises(Exception, match="clamp"):
        SteeringSpec(vector=[0.0] * 4, mode="clamp")
    with pytest.raises(Exception, match=">= 0"):
        SteeringSpec(features={-1: 1.0})
    with pytest.raises(SteeringError, match="invalid steering spec"):
        as_spec({"features": {1: 1.0}, "strength": 3})
    with pytest.raises(SteeringError, match="must be a SteeringSpec"):
        as_spec(3.0)


def test_resolve_errors_are_specific(tiny, steer_sae, steer_fmax):
    with pytest.raises(SteeringError, match="out of range for an SAE with d_sae=128"):
        _resolve(SteeringSpec(features={500: 1.0}), tiny, steer_sae, steer_fmax)
    with pytest.raises(SteeringError, match="max activation"):
        _resolve(SteeringSpec(features={1: 1.0}), tiny, steer_sae, None)
    with pytest.raises(SteeringError, match="d_model is 64"):
        _resolve(SteeringSpec(vector=[1.0] * 3), tiny, steer_sae, steer_fmax)
    with pytest.raises(SteeringError, match="reads layer 2"):
        _resolve(SteeringSpec(features={1: 1.0}, layer=1), tiny, steer_sae, steer_fmax)
    with pytest.raises(SteeringError, match="needs an SAE"):
        resolve(SteeringSpec(features={1: 1.0}, layer=2), d_model=64, n_layers=4)
    with pytest.raises(SteeringError, match="d_sae=128"):
        load_max_activation(torch.ones(7), d_sae=128)


def test_several_features_add_up(tiny, steer_sae, steer_fmax):
    view = steer_sae.unit_norm_view()
    row = _resolve(SteeringSpec(features={4: 2.0, 9: -1.0}), tiny, steer_sae, steer_fmax)
    expected = 2.0 * steer_fmax[4] * view.W_dec[4] - 1.0 * steer_fmax[9] * view.W_dec[9]
    torch.testing.assert_close(row.add, expected.detach())
    vec = torch.randn(64)
    both = _resolve(SteeringSpec(features={4: 2.0, 9: -1.0}, vector=vec.tolist()), tiny, steer_sae, steer_fmax)
    torch.testing.assert_close(both.add, expected.detach() + vec)


def test_compute_max_activation_matches_encode(steer_sae):
    acts = torch.randn(50, 64)
    expected = steer_sae.unit_norm_view().encode(acts).amax(0)
    torch.testing.assert_close(compute_max_activation(steer_sae, acts, batch_size=16), expected.detach())


# -- exact deltas -------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["add", "clamp"])
def test_delta_is_exact_on_prompt_and_decode_positions(tiny, steer_sae, steer_fmax, mode):
    """During a KV-cached generate, the layer-L output differs from the unsteered residual of the same
    tokens by exactly the expected delta, at every prompt position and every decode step."""
    view = steer_sae.unit_norm_view()
    features = {7: 3.0, 20: 1.5}
    spec = SteeringSpec(features=features, mode=mode)
    ids = _ids(tiny)
    with steer(tiny.model, spec, sae=steer_sae, max_activation=steer_fmax) as steerer:
        with _layer_outputs(tiny) as seen:
            out = tiny.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False,
                                      pad_token_id=tiny.tokenizer.pad_token_id)
    assert not steerer.active
    assert len(seen) == 6 and seen[0].shape[1] == ids.shape[1] and all(s.shape[1] == 1 for s in seen[1:])
    steered = torch.cat(seen, dim=1)[0]  # [T_prompt + 5, d]: prompt forward, then one per decode step
    full = out[:, : steered.shape[0]]
    clean = residual_at(tiny.model, LAYER, full)[0]  # no cache, no steering: the same tokens
    idx = torch.tensor(list(features))
    target = torch.tensor(list(features.values())) * steer_fmax[idx]
    w = view.W_dec.detach()[idx]
    if mode == "add":
        expected = (target @ w).expand_as(clean)
    else:
        f = view.encode(clean).detach()[:, idx]
        expected = (target - f) @ w
    torch.testing.assert_close(steered - clean, expected, atol=2e-5, rtol=1e-4)
    assert (steered - clean).abs().sum() > 0


def test_per_row_specs_share_one_forward(tiny, steer_sae, steer_fmax):
    """Row 0 steered, row 1 not: row 1 is bit-for-bit the unsteered forward, row 0 moves by its delta."""
    row = _resolve(SteeringSpec(features={11: 4.0}), tiny, steer_sae, steer_fmax)
    ids = _ids(tiny).repeat(2, 1)
    clean = residual_at(tiny.model, LAYER, ids)
    with Steerer(tiny.model, [row, None]):
        seen = _steered_forward(tiny, ids)
    assert torch.equal(seen[0][1], clean[1])
    torch.testing.assert_close(seen[0][0] - clean[0], row.add.expand_as(clean[0]), atol=1e-5, rtol=1e-4)


def test_batched_rows_generate_like_single_rows(tiny, steer_sae, steer_fmax):
    """A steered and an unsteered row of different lengths in one left-padded generate give the
    tokens each gives alone."""
    view = steer_sae.unit_norm_view()
    row = _resolve(SteeringSpec(features={11: 6.0}), tiny, steer_sae, steer_fmax)
    a = GenRow(_ids(tiny)[0].tolist(), max_new_tokens=8, steering=row)
    b = GenRow(_ids(tiny, "Hmm")[0].tolist(), max_new_tokens=5)
    both = generate_rows(tiny.model, tiny.tokenizer, [a, b], sae=view)
    alone = [generate_rows(tiny.model, tiny.tokenizer, [r], sae=view)[0] for r in (a, b)]
    assert [r.token_ids for r in both] == [r.token_ids for r in alone]
    assert len(both[1].token_ids) <= 5
    unsteered = generate_rows(tiny.model, tiny.tokenizer, [GenRow(a.prompt_ids, 8)])[0]
    assert unsteered.token_ids != both[0].token_ids  # the steering did something


# -- hook hygiene -------------------------------------------------------------------------------

def test_hooks_removed_on_exit_and_on_exception(tiny, steer_sae, steer_fmax):
    layer = tiny.model_spec.layer(LAYER)
    before = len(layer._forward_hooks)
    spec = SteeringSpec(features={3: 1.0})
    with steer(tiny.model, spec, sae=steer_sae, max_activation=steer_fmax) as s:
        assert s.active and len(layer._forward_hooks) == before + 1
    assert len(layer._forward_hooks) == before
    with pytest.raises(RuntimeError, match="boom"):
        with steer(tiny.model, spec, sae=steer_sae, max_activation=steer_fmax):
            raise RuntimeError("boom")
    assert len(layer._forward_hooks) == before
    # an error raised inside the hook itself (wrong batch size) also leaves no hook behind
    with pytest.raises(SteeringError, match="batch of 1 rows"):
        with steer(tiny.model, spec, sae=steer_sae, max_activation=steer_fmax):
            tiny.model(input_ids=_ids(tiny).repeat(2, 1))
    assert len(layer._forward_hooks) == before


# -- capture ------------------------------------------------------------------------------------

def test_capture_matches_a_second_pass(tiny, steer_sae):
    """Latents recorded during generation equal those of a separate forward over the positions that
    predicted each generated token."""
    view = steer_sae.unit_norm_view()
    cfg = CaptureConfig(view, LAYER, k=5, top=128)
    prompt = _ids(tiny)[0].tolist()
    feats = (3, 17, 40)
    res = generate_rows(tiny.model, tiny.tokenizer, [GenRow(prompt, 7, capture=True, capture_features=feats)],
                        sae=view, capture=cfg)[0]
    n = len(res.token_ids)
    full = torch.tensor([prompt + res.token_ids])
    acts = residual_at(tiny.model, LAYER, full)[0]
    latents = view.encode(acts[len(prompt) - 1 : len(prompt) - 1 + n]).detach()
    ref = summarize_latents(latents, cfg.k, feats)
    assert res.report.n_tokens == n == 7
    assert res.report.topk_mean == pytest.approx(ref.topk_mean, rel=1e-4)
    assert res.report.features_mean == pytest.approx(ref.features_mean, rel=1e-4, abs=1e-6)
    assert [i for i, _ in res.report.top_features] == [i for i, _ in ref.top_features]


def test_shared_prefix_batch_matches_single_rows(tiny, steer_sae, steer_fmax, bundled_prompts):
    """Rows sharing a long prompt prefix (DSPy's system prompt) reuse one prefix forward per distinct
    steering; every row still gets exactly the tokens it gets alone."""
    from reasoning_dspy.engine.generate import _shared_prefix_len

    view = steer_sae.unit_norm_view()
    system = " ".join(bundled_prompts[:3])
    add = _resolve(SteeringSpec(features={11: 6.0}), tiny, steer_sae, steer_fmax)
    clamp = _resolve(SteeringSpec(features={3: 5.0}, mode="clamp"), tiny, steer_sae, steer_fmax)
    early = _resolve(SteeringSpec(features={11: 6.0}, tokens=2), tiny, steer_sae, steer_fmax)  # plain prefix
    late = _resolve(SteeringSpec(features={11: 6.0}, skip_tokens=2), tiny, steer_sae, steer_fmax)  # plain prefix
    lines = _resolve(SteeringSpec(features={11: 6.0}, skip_lines=1), tiny, steer_sae, steer_fmax)  # plain prefix
    rows = [GenRow(_ids(tiny, system + q)[0].tolist(), 6, steering=s)
            for q, s in [(" Why?", add), (" Is it so?", None), (" Why?", clamp), (" How come?", add),
                         (" Why not?", early), (" Why so?", late), (" And?", lines)]]
    assert _shared_prefix_len(rows) >= 32
    shared = generate_rows(tiny.model, tiny.tokenizer, rows, sae=view)
    unshared = generate_rows(tiny.model, tiny.tokenizer, rows, sae=view, share_prefix=False)
    alone = [generate_rows(tiny.model, tiny.tokenizer, [r], sae=view)[0] for r in rows]
    assert [r.token_ids for r in shared] == [r.token_ids for r in alone] == [r.token_ids for r in unshared]
    assert shared[0].token_ids != shared[1].token_ids  # steering and prompts really differ


def test_prefix_cache_reuses_the_shared_prefix_across_batches(tiny, steer_sae, steer_fmax, bundled_prompts):
    """A prefix kept from one batch serves the next batch and single requests (hits counted), per
    steering: another steering misses; tokens and logits equal those computed without the cache."""
    from reasoning_dspy.engine.prefix_cache import PrefixCache, _steering_key

    view = steer_sae.unit_norm_view()
    system = " ".join(bundled_prompts[:3])
    add = _resolve(SteeringSpec(features={11: 6.0}), tiny, steer_sae, steer_fmax)
    clamp = _resolve(SteeringSpec(features={3: 5.0}, mode="clamp"), tiny, steer_sae, steer_fmax)

    def rows(questions, steering):
        return [GenRow(_ids(tiny, system + q)[0].tolist(), 6, steering=s) for q, s in zip(questions, steering, strict=True)]

    def run(batch, cache):
        out = generate_rows(tiny.model, tiny.tokenizer, batch, sae=view, prefix_cache=cache, output_logits=True)
        return [r.token_ids for r in out], [torch.stack(r.extras["logits"]) for r in out]

    def check(batch, cache):
        """Same tokens and logits with `cache` as without one; returns the tokens."""
        (tokens, scores), (ref_tokens, ref_scores) = run(batch, cache), run(batch, None)
        assert tokens == ref_tokens
        for got, ref in zip(scores, ref_scores, strict=True):
            torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)
        return tokens

    cache = PrefixCache(size=4)
    first = rows([" Why?", " Is it so?"], [add, None])
    check(first, cache)
    assert (cache.hits, cache.misses, len(cache)) == (0, 2, 2)  # one prefill per steering, both kept
    second = rows([" How come?", " What now?", " Really?"], [None, add, None])
    assert check(second, cache) == [run([r], None)[0][0] for r in second]
    assert (cache.hits, cache.misses) == (2, 2)
    check(rows([" And then?"], [add]), cache)  # a single request reuses the batch's prefix too
    assert cache.hits == 3
    check(rows([" Why?"], [clamp]), cache)  # same prompt, other steering: its KV differs, so no reuse
    assert (cache.hits, cache.misses) == (3, 3)
    check(rows([" How come?"], [clamp]), cache)  # reuses only the system-prompt part of the " Why" entry
    assert cache.hits == 4
    assert run(first, None)[0] != run(rows([" Why?", " Is it so?"], [clamp, None]), None)[0]  # steering matters
    # bounded: the least recently used entries go; a prompt sharing only its first token is prefilled afresh
    for q in (" A?", " B?", " C?", " D?"):
        check(rows([q], [None]), cache)
    assert len(cache) == 4 and all(key != _steering_key(clamp) for key, _ in cache._entries)
    misses = cache.misses
    check([GenRow(_ids(tiny, "Completely different " * 8)[0].tolist(), 4)], cache)
    assert cache.misses == misses + 1
    other_sae = steer_sae.unit_norm_view()  # entries belong to one SAE (clamp encodes with it)
    generate_rows(tiny.model, tiny.tokenizer, first[:1], sae=other_sae, prefix_cache=cache)
    assert len(cache) == 1 and cache.misses == misses + 2
    off = PrefixCache(size=0)  # keeps nothing
    check(first, off)
    assert len(off) == 0 and off.hits == 0


def test_estimated_fmax_reads_the_same_tokens_as_the_cache(tiny, steer_sae, bundled_prompts, tmp_path):
    prompts = bundled_prompts[:12]
    cache = extract_activations(tiny.model, tiny.tokenizer, prompts, 2, tmp_path, dtype="float32",
                                batch_size=5, progress=False)
    expected = compute_max_activation(steer_sae, cache.load(("acts",))["acts"])
    got = estimate_max_activation(tiny.model, tiny.tokenizer, steer_sae, prompts, batch_size=5)
    torch.testing.assert_close(got, expected)
    assert (got > 0).any()


def test_topk_sae_steers_with_its_trained_latents_in_unit_norm_units(tiny):
    """A TopK SAE whose decoder rows have different norms: f_max and clamp steering read the k latents
    it was trained to pick, times ‖W_dec,i‖, and move the residual along unit-norm decoder rows."""
    from reasoning_dspy.sae import SAE, SAEConfig

    torch.manual_seed(0)
    sae = SAE.from_config(SAEConfig(architecture="topk", k=8, d_in=64, d_sae=128, hook_layer=LAYER,
                                    model_name="tiny-random"))
    with torch.no_grad():
        sae.W_dec.mul_(torch.empty(128, 1).uniform_(0.1, 5.0))
    norms = sae.W_dec.detach().norm(dim=1)
    ids = _ids(tiny)
    clean = residual_at(tiny.model, LAYER, ids)[0]  # [T, d]
    with torch.no_grad():
        trained = sae.encode(clean)
    fmax = compute_max_activation(sae, clean, batch_size=5)
    torch.testing.assert_close(fmax, (trained * norms).amax(0))
    features = {int(i): 2.0 for i in trained.sum(0).topk(2).indices}  # two features that fire here
    with steer(tiny.model, SteeringSpec(features=features, mode="clamp"), sae=sae, max_activation=fmax):
        seen = _steered_forward(tiny, ids)
    idx = torch.tensor(list(features))
    unit_rows = sae.W_dec.detach()[idx] / norms[idx, None]
    expected = (2.0 * fmax[idx] - trained[:, idx] * norms[idx]) @ unit_rows
    torch.testing.assert_close(seen[0][0] - clean, expected, atol=2e-5, rtol=1e-4)
    add = resolve(SteeringSpec(features=features), d_model=64, n_layers=tiny.model_spec.n_layers,
                  sae=sae.unit_norm_view(), max_activation=fmax)
    torch.testing.assert_close(add.add, 2.0 * fmax[idx] @ unit_rows)


@pytest.mark.parametrize(("skip", "tokens"), [(0, 3), (2, 3), (2, None)])
def test_a_token_window_steers_the_positions_of_its_generated_tokens_only(tiny, steer_sae, steer_fmax, skip, tokens):
    """With `tokens=3` (after `skip_tokens` unsteered ones), the layer output moves by the steering
    delta at the positions that predict generated tokens skip .. skip + 2, and by nothing before (the
    prompt, the skipped tokens) or after them; with no `tokens`, at every position from `skip` on."""
    view = steer_sae.unit_norm_view()
    spec = SteeringSpec(features={7: 3.0}, tokens=tokens, skip_tokens=skip)
    ids = _ids(tiny)
    with steer(tiny.model, spec, sae=steer_sae, max_activation=steer_fmax), _layer_outputs(tiny) as seen:
        out = tiny.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False,
                                  pad_token_id=tiny.tokenizer.pad_token_id)
    steered = torch.cat(seen, dim=1)[0]
    clean = residual_at(tiny.model, LAYER, out[:, : steered.shape[0]])[0]
    delta = (3.0 * steer_fmax[7]) * view.W_dec.detach()[7]
    start = ids.shape[1] - 1 + skip  # the prompt's last position predicts generated token 0
    end = start + 3 if tokens else steered.shape[0]
    torch.testing.assert_close(steered[:start], clean[:start], atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(steered[start:end] - clean[start:end], delta.expand(end - start, -1), atol=2e-5,
                               rtol=1e-4)
    torch.testing.assert_close(steered[end:], clean[end:], atol=2e-5, rtol=1e-4)


def test_a_window_after_the_first_lines_opens_where_the_model_ends_them(tiny, steer_sae, steer_fmax):
    """`skip_lines=1, tokens=2`: generation leaves every position unsteered until the model has
    written its first line end (here at generated token 1), steers the two positions after it, and a
    teacher-forced measure of the answer opens the same window."""
    from reasoning_dspy.engine.generate import RowWatch
    from reasoning_dspy.engine.jobs import MeasureJob, measure_response
    from reasoning_dspy.steering.lines import line_ends

    view = steer_sae.unit_norm_view()
    newline = tiny.tokenizer("\n", add_special_tokens=False).input_ids[-1]
    assert line_ends(tiny.tokenizer)[newline] == 1
    prompt = _ids(tiny)[0].tolist()
    first = generate_rows(tiny.model, tiny.tokenizer, [GenRow(prompt, 1)])[0].token_ids[0]
    assert newline not in (first, *prompt)
    row = _resolve(SteeringSpec(features={7: 3.0}, tokens=2, skip_lines=1), tiny, steer_sae, steer_fmax)
    cfg = CaptureConfig(view, LAYER, k=5, top=128)
    seen = []  # the next layer's input: this layer's output, after the steerer's hook
    handle = tiny.model_spec.layer(LAYER + 1).register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))
    try:
        gen = GenRow(prompt, 6, steering=row, capture=True, capture_features=(3, 17),
                     watch=RowWatch(sent=[first, newline]))  # the model "writes" a first line, one token long
        out = generate_rows(tiny.model, tiny.tokenizer, [gen], sae=view, capture=cfg)[0]
    finally:
        handle.remove()
    assert out.token_ids[:2] == [first, newline] and len(out.token_ids) == 6
    steered = torch.cat(seen, dim=1)[0]
    clean = residual_at(tiny.model, LAYER, torch.tensor([prompt + out.token_ids[:5]]))[0]
    delta = (3.0 * steer_fmax[7]) * view.W_dec.detach()[7]
    start = len(prompt) - 1 + 2  # the position that predicts generated token 2: the line end's own
    torch.testing.assert_close(steered[:start], clean[:start], atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(steered[start:start + 2] - clean[start:start + 2], delta.expand(2, -1), atol=2e-5,
                               rtol=1e-4)
    torch.testing.assert_close(steered[start + 2:], clean[start + 2:], atol=2e-5, rtol=1e-4)
    job = MeasureJob.for_response(prompt, out.token_ids, row, (3, 17))
    again = measure_response(tiny.model, tiny.model_spec, cfg, job, tiny.tokenizer)
    assert again.features_mean == pytest.approx(out.report.features_mean, rel=1e-4, abs=1e-6)
    with pytest.raises(SteeringError, match="skip_lines"):  # it cannot find the lines without the tokenizer
        measure_response(tiny.model, tiny.model_spec, cfg, job)
    with pytest.raises(SteeringError, match="skip_lines"):  # nor can a steerer around a plain model.generate
        steer(tiny.model, SteeringSpec(features={7: 3.0}, skip_lines=1), sae=steer_sae, max_activation=steer_fmax)


def test_a_windowed_row_keeps_its_first_tokens_and_its_measure_matches_generation(tiny, steer_sae, steer_fmax):
    from reasoning_dspy.engine.jobs import MeasureJob, measure_response

    view = steer_sae.unit_norm_view()
    prompt = _ids(tiny)[0].tolist()
    windowed = _resolve(SteeringSpec(features={11: 6.0}, tokens=2), tiny, steer_sae, steer_fmax)
    throughout = _resolve(SteeringSpec(features={11: 6.0}, tokens=8), tiny, steer_sae, steer_fmax)  # every token
    assert windowed.tokens == 2 and torch.equal(windowed.add, throughout.add)
    cfg = CaptureConfig(view, LAYER, k=5, top=128)
    rows = [GenRow(prompt, 8, steering=s, capture=True, capture_features=(3, 17)) for s in (throughout, windowed, None)]
    steered, early, plain = (generate_rows(tiny.model, tiny.tokenizer, [r], sae=view, capture=cfg)[0] for r in rows)
    assert early.token_ids[:2] == steered.token_ids[:2]  # the same steered positions chose them
    assert steered.token_ids != plain.token_ids and early.token_ids != steered.token_ids  # steering did something
    # a teacher-forced forward with the window applied as in generation gives generation's report
    again = measure_response(tiny.model, tiny.model_spec, cfg,
                             MeasureJob.for_response(prompt, early.token_ids, windowed, (3, 17)))
    assert again.features_mean == pytest.approx(early.report.features_mean, rel=1e-4, abs=1e-6)
    assert again.topk_mean == pytest.approx(early.report.topk_mean, rel=1e-4)


def test_a_token_window_is_checked_and_keys_the_spec_only_when_set():
    plain = SteeringSpec(features={3: 1.0})
    assert "tokens" not in plain.model_dump() and SteeringSpec(features={3: 1.0}, tokens=None) == plain
    windowed = SteeringSpec(features={3: 1.0}, tokens=32)
    assert windowed.model_dump()["tokens"] == 32 and windowed.fingerprint() != plain.fingerprint()
    assert as_spec(windowed.model_dump(mode="json")) == windowed  # it travels in DSPy metadata
    with pytest.raises(SteeringError, match="tokens"):
        as_spec({"features": {3: 1.0}, "tokens": 0})
    assert "skip_tokens" not in windowed.model_dump() and windowed.steers_prompt is False
    late = SteeringSpec(features={3: 1.0}, tokens=32, skip_tokens=9)
    assert late.model_dump()["skip_tokens"] == 9 and late.fingerprint() != windowed.fingerprint()
    assert as_spec(late.model_dump(mode="json")) == late and plain.steers_prompt
    with pytest.raises(SteeringError, match="skip_tokens"):
        as_spec({"features": {3: 1.0}, "skip_tokens": -1})
    lines = SteeringSpec(features={3: 1.0}, tokens=8, skip_lines=2)
    assert lines.model_dump()["skip_lines"] == 2 and "skip_lines" not in late.model_dump()
    assert as_spec(lines.model_dump(mode="json")) == lines and not lines.steers_prompt
    with pytest.raises(SteeringError, match="not both"):
        as_spec({"features": {3: 1.0}, "skip_tokens": 2, "skip_lines": 1})
