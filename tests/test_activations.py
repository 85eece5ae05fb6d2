import json

import pytest
import torch

from reasoning_dspy.activations import ActivationCache, CacheError, extract_activations, residual_at

PROMPTS = [
    "Wait, let me think about this step by step.",
    "Hi",
    "Therefore the answer is 42, however we should check it again carefully.",
    "Alternatively, maybe we could try another approach.",
    "A short one.",
]


def _reference(tiny, prompts, layer):
    """One prompt at a time, no padding, plain full forward with output_hidden_states."""
    model, tok, _ = tiny
    out = []
    for p in prompts:
        ids = tok(p, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            hs = model(input_ids=ids, output_hidden_states=True).hidden_states
        out.append(hs[layer + 1][0])
    return out


@pytest.mark.parametrize("layer", [0, 2])
def test_extracted_equals_hidden_states(tiny, tmp_path, layer):
    cache = extract_activations(tiny.model, tiny.tokenizer, PROMPTS, layer, tmp_path, dtype="float32",
                                batch_size=3, keep_special_tokens=True, progress=False)
    data = cache.load()
    ref = _reference(tiny, PROMPTS, layer)
    assert len(data["acts"]) == sum(len(r) for r in ref) == cache.n_tokens
    for i, r in enumerate(ref):
        rows = data["seq_ids"] == i
        assert data["positions"][rows].tolist() == list(range(len(r)))
        torch.testing.assert_close(data["acts"][rows], r, atol=1e-5, rtol=1e-5)
        ids = tiny.tokenizer(PROMPTS[i])["input_ids"]
        assert data["token_ids"][rows].tolist() == ids


def test_special_tokens_dropped_and_bf16_storage(tiny, tmp_path):
    cache = extract_activations(tiny.model, tiny.tokenizer, PROMPTS, 1, tmp_path, progress=False)
    assert cache.manifest.dtype == "bfloat16"
    data = cache.load()
    assert data["acts"].dtype == torch.bfloat16
    assert tiny.tokenizer.bos_token_id not in data["token_ids"].tolist()
    assert data["positions"].min() == 1  # BOS (position 0) is not stored
    ref = _reference(tiny, PROMPTS, 1)
    for i, r in enumerate(ref):
        torch.testing.assert_close(data["acts"][data["seq_ids"] == i], r[1:].to(torch.bfloat16))


def test_residual_at_stops_after_layer(tiny):
    model, tok, spec = tiny
    before = [dict(layer._forward_hooks) for layer in spec.layers]
    calls = []
    handles = [layer.register_forward_hook(lambda m, i, o, k=k: calls.append(k)) for k, layer in enumerate(spec.layers)]
    head = model.lm_head.register_forward_hook(lambda *a: calls.append("head"))
    try:
        residual_at(model, 1, tok(["x y"], return_tensors="pt")["input_ids"])
    finally:
        for h in handles + [head]:
            h.remove()
    assert calls == [0, 1]
    assert [dict(layer._forward_hooks) for layer in spec.layers] == before  # our stop hook is gone


def _extract(tiny, prompts, out, **kw):
    return extract_activations(tiny.model, tiny.tokenizer, prompts, 2, out, dtype="float32",
                               batch_size=4, shard_tokens=40, progress=False, **kw)


def _snapshot(cache):
    m = cache.manifest.model_dump()
    return m, cache.load()


def test_interrupted_run_resumes_to_identical_cache(tiny, bundled_prompts, tmp_path):
    prompts = bundled_prompts[:30]
    clean = _snapshot(_extract(tiny, prompts, tmp_path / "clean"))
    assert len(clean[0]["shards"]) > 3

    calls = {"n": 0}

    def crash(*_):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt("simulated kill during batch 5")

    handle = tiny.model_spec.layers[0].register_forward_hook(crash)
    try:
        with pytest.raises(KeyboardInterrupt):
            _extract(tiny, prompts, tmp_path / "resumed")
    finally:
        handle.remove()
    partial = ActivationCache(tmp_path / "resumed")
    assert not partial.manifest.complete and 0 < partial.manifest.prompts_done < len(prompts)

    resumed = _snapshot(_extract(tiny, prompts, tmp_path / "resumed"))
    assert resumed[0] == clean[0]
    for k in clean[1]:
        assert torch.equal(resumed[1][k], clean[1][k]), k


def test_finished_cache_is_reused_and_mismatch_refused(tiny, tmp_path):
    first = _extract(tiny, PROMPTS, tmp_path)
    stamp = (tmp_path / "shard_00000.safetensors").stat().st_mtime_ns
    again = _extract(tiny, PROMPTS, tmp_path)
    assert again.n_tokens == first.n_tokens
    assert (tmp_path / "shard_00000.safetensors").stat().st_mtime_ns == stamp
    with pytest.raises(CacheError, match="different run.*layer: cache has 2, run asks 1"):
        extract_activations(tiny.model, tiny.tokenizer, PROMPTS, 1, tmp_path, dtype="float32",
                            batch_size=4, shard_tokens=40, progress=False)
    with pytest.raises(CacheError, match="prompts_sha256"):
        _extract(tiny, PROMPTS[:3], tmp_path)
    redone = _extract(tiny, PROMPTS[:3], tmp_path, overwrite=True)
    assert redone.manifest.n_prompts == 3


def test_truncated_shard_is_detected(tiny, tmp_path):
    _extract(tiny, PROMPTS, tmp_path)
    shard = tmp_path / "shard_00000.safetensors"
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(CacheError, match="shard_00000.safetensors is corrupt.*truncated"):
        ActivationCache(tmp_path)


def test_missing_or_invalid_cache(tmp_path):
    with pytest.raises(CacheError, match="no activation cache"):
        ActivationCache(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"model": "x"}))
    with pytest.raises(CacheError, match="not a valid cache manifest"):
        ActivationCache(tmp_path)


def test_iter_batches_streams_every_token_once(tiny_cache):
    full = tiny_cache.load()
    n = tiny_cache.n_tokens
    plain = list(tiny_cache.iter_batches(100, fields=("acts", "seq_ids")))
    assert [len(b["acts"]) for b in plain[:-1]] == [100] * (len(plain) - 1)
    assert torch.equal(torch.cat([b["acts"] for b in plain]), full["acts"])

    shuffled = list(tiny_cache.iter_batches(100, shuffle=True, seed=3, fields=("acts", "seq_ids", "positions")))
    key = lambda b: (b["seq_ids"] * 10_000 + b["positions"]).tolist()  # noqa: E731
    keys = sum((key(b) for b in shuffled), [])
    assert len(keys) == n and sorted(keys) == sorted(key(full))
    assert keys != key(full)  # actually shuffled
    again = list(tiny_cache.iter_batches(100, shuffle=True, seed=3))
    assert torch.equal(torch.cat([b["acts"] for b in again]), torch.cat([b["acts"] for b in shuffled]))
    dropped = list(tiny_cache.iter_batches(100, drop_last=True))
    assert sum(len(b["acts"]) for b in dropped) == n - n % 100


def test_bad_arguments(tiny, tmp_path):
    with pytest.raises(ValueError, match="no prompts"):
        extract_activations(tiny.model, tiny.tokenizer, [], 1, tmp_path)
    with pytest.raises(IndexError, match="layer 9 is out of range"):
        extract_activations(tiny.model, tiny.tokenizer, PROMPTS, 9, tmp_path)


def test_attention_sinks_are_tokens_far_above_the_batch_median_norm():
    from reasoning_dspy.activations import SINK_NORM_RATIO, attention_sinks

    acts = torch.randn(2, 6, 8)
    acts[0, 0] *= 50  # a first-token sink
    acts[1, 2] *= 40  # a sink a few tokens in
    keep = torch.ones(2, 6, dtype=torch.bool)
    keep[1, 5] = False  # a pad: never counts toward the median
    acts[1, 5] *= 1000
    sinks = attention_sinks(acts, keep)
    assert sinks[0, 0] and sinks[1, 2] and int(sinks[keep].sum()) == 2
    assert SINK_NORM_RATIO == 10.0
    assert not attention_sinks(torch.zeros(1, 3, 4), torch.zeros(1, 3, dtype=torch.bool)).any()
