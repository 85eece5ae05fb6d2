"""ReasonScore end to end on synthetic caches with planted features (real tokenizer, real SAE code).

Helpers here (`synthetic_prompts`, `write_cache`, `planted_cache`, `planted_sae`) are reused by
tests/test_analysis.py.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from reasoning_dspy.activations import ActivationCache, CacheManifest, ShardInfo
from reasoning_dspy.features.reasonscore import FeatureScores, score_features
from reasoning_dspy.features.vocab import REASONING_WORDS, Vocabulary
from reasoning_dspy.sae import SAE, SAEConfig

FILLER = "the cat sat on a mat we add two numbers and get ten so it is done here now".split()
D_IN = 16
WINDOW, WAIT_ONLY, EVERYWHERE = 0, 1, 2  # planted feature indices


def synthetic_prompts(n: int, seed: int = 0) -> list[str]:
    """Filler text with reasoning words sprinkled in, in several spellings; "but" and "another" also
    start lines, where the official list's "But" and "Another" (no leading space) occur."""
    rng = random.Random(seed)
    prompts = []
    for _ in range(n):
        words = []
        for _ in range(rng.randint(12, 24)):
            if rng.random() < 0.15:
                w = rng.choice(REASONING_WORDS)
                spellings = [w, w.capitalize(), w.upper() if " " not in w else w]
                words.append(rng.choice(spellings + ["\n" + w.capitalize()] * (w in ("but", "another"))))
            else:
                words.append(rng.choice(FILLER))
        text = " ".join(words)
        prompts.append(text[0].upper() + text[1:] + ".")
    return prompts


def write_cache(path: Path, acts: torch.Tensor, token_ids, seq_ids, positions, *, prompts_per_shard: int,
                prompts: list[str], model: str = "tiny-random", layer: int = 2,
                token_cuts: list[int] | None = None) -> ActivationCache:
    """Write tensors as an `ActivationCache` folder: shards cut every `prompts_per_shard` prompts
    (as extraction does), or at the token indices `token_cuts` (to build a broken cache)."""
    from safetensors.torch import save

    path.mkdir(parents=True, exist_ok=True)
    n_prompts = int(seq_ids.max()) + 1
    if token_cuts is None:
        starts = range(0, n_prompts, prompts_per_shard)
        token_cuts = [int((seq_ids < s).sum()) for s in starts][1:]
    bounds = [0, *token_cuts, len(seq_ids)]
    shards = []
    for k, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        data = save({"acts": acts[lo:hi].contiguous(), "token_ids": token_ids[lo:hi].to(torch.int32),
                     "seq_ids": seq_ids[lo:hi].to(torch.int64), "positions": positions[lo:hi].to(torch.int32)})
        name = f"shard_{k:05d}.safetensors"
        (path / name).write_bytes(data)
        shards.append(ShardInfo(file=name, n_tokens=hi - lo, prompt_start=int(seq_ids[lo]),
                                prompt_end=int(seq_ids[hi - 1]) + 1, n_bytes=len(data)))
    manifest = CacheManifest(model=model, layer=layer, d_model=acts.shape[1], dtype="float32", max_length=256,
                             batch_size=16, keep_special_tokens=False, n_prompts=n_prompts,
                             prompts_sha256="synthetic", shards=shards, complete=True)
    (path / "manifest.json").write_text(manifest.model_dump_json())
    (path / "prompts.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    return ActivationCache(path)


def tokenize_like_cache(tokenizer, prompts: list[str]):
    """Token ids, seq ids and positions as the cache stores them (BOS dropped, positions from 1)."""
    ids, seqs, pos = [], [], []
    for s, p in enumerate(prompts):
        row = tokenizer(p)["input_ids"]
        for j, t in enumerate(row):
            if t != tokenizer.bos_token_id:
                ids.append(t)
                seqs.append(s)
                pos.append(j)
    return torch.tensor(ids), torch.tensor(seqs), torch.tensor(pos)


def planted_cache(path: Path, tokenizer, *, n_prompts: int = 48, prompts_per_shard: int = 5) -> ActivationCache:
    """Noise activations plus a direction per planted feature: e0 on every reasoning-word window,
    e1 (strongly) on `wait` windows only, e2 on every token."""
    from reasoning_dspy.features.reasonscore import shard_windows

    prompts = synthetic_prompts(n_prompts)
    ids, seqs, pos = tokenize_like_cache(tokenizer, prompts)
    vocab = Vocabulary.default()
    window = shard_windows(vocab.matcher(tokenizer), {"token_ids": ids, "seq_ids": seqs, "positions": pos}, 1, 2)
    g = torch.Generator().manual_seed(0)
    acts = 0.1 * torch.randn(len(ids), D_IN, generator=g)
    acts[:, WINDOW] += 2.0 * window.any(dim=1)
    acts[:, WAIT_ONLY] += 2.0 * window[:, vocab.groups.index("wait")]
    acts[:, EVERYWHERE] += 2.0
    return write_cache(path, acts, ids, seqs, pos, prompts_per_shard=prompts_per_shard, prompts=prompts)


def planted_sae(d_sae: int = D_IN) -> SAE:
    """A ReLU SAE reading the planted directions: latent i = relu(x_i − 0.5)."""
    sae = SAE.from_config(SAEConfig(architecture="relu", d_in=D_IN, d_sae=d_sae, model_name="tiny-random",
                                    hook_layer=2))
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(D_IN, d_sae))
        sae.W_dec.copy_(torch.eye(d_sae, D_IN))
        sae.b_enc.fill_(-0.5)
    return sae


@pytest.fixture(scope="module")
def cache(tiny, tmp_path_factory):
    return planted_cache(tmp_path_factory.mktemp("planted"), tiny.tokenizer)


def test_planted_window_feature_ranks_first_and_everywhere_feature_is_negative(cache, tiny):
    scores = score_features(cache, planted_sae(), tokenizer=tiny.tokenizer, progress=False)
    assert scores.top(1) == [WINDOW]
    assert scores.selected[0] == WINDOW
    assert scores.reason_score[EVERYWHERE] < 0
    assert scores.reason_score[WINDOW] > scores.reason_score[WAIT_ONLY]
    # (windows of neighbouring words overlap, so the wait-only feature still leaks into other groups)
    assert scores.entropy[WINDOW] > 0.95 and scores.entropy[WAIT_ONLY] < 0.6
    assert scores.top_words(WAIT_ONLY, 1)[0][0] == "wait"
    assert scores.density[EVERYWHERE] == 1.0
    # every group of the default vocabulary occurs in the synthetic text
    assert (scores.group_token_counts > 0).all()


def test_result_does_not_depend_on_batch_size_or_shard_cut(cache, tiny, tmp_path):
    sae = planted_sae()
    a = score_features(cache, sae, tokenizer=tiny.tokenizer, batch_size=7, progress=False)
    b = score_features(cache, sae, tokenizer=tiny.tokenizer, batch_size=100_000, progress=False)
    data = cache.load()
    one_shard = write_cache(tmp_path / "one", data["acts"], data["token_ids"], data["seq_ids"], data["positions"],
                            prompts_per_shard=10_000, prompts=cache.prompts())
    assert len(one_shard.manifest.shards) == 1 < len(cache.manifest.shards)
    c = score_features(one_shard, sae, tokenizer=tiny.tokenizer, progress=False)
    for other in (b, c):
        torch.testing.assert_close(a.reason_score, other.reason_score, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(a.mu_pos_by_group, other.mu_pos_by_group, rtol=1e-5, atol=1e-7)
        assert torch.equal(a.max_activation, other.max_activation)
        assert torch.equal(a.group_token_counts, other.group_token_counts)


def test_prompt_split_across_shards_is_refused(cache, tiny, tmp_path):
    data = cache.load()
    middle_of_prompt_0 = int((data["seq_ids"] == 0).sum()) // 2
    broken = write_cache(tmp_path / "broken", data["acts"], data["token_ids"], data["seq_ids"], data["positions"],
                         prompts_per_shard=0, prompts=cache.prompts(), token_cuts=[middle_of_prompt_0])
    with pytest.raises(ValueError, match="prompt 0 is split across shards"):
        score_features(broken, planted_sae(), tokenizer=tiny.tokenizer, progress=False)


def test_save_load_roundtrip_and_formats(cache, tiny, tmp_path):
    scores = score_features(cache, planted_sae(), tokenizer=tiny.tokenizer, top_n=3, progress=False)
    scores.save(tmp_path / "s")
    back = FeatureScores.load(tmp_path / "s")
    for name in ("reason_score", "mu_pos_by_group", "max_activation", "density", "selected", "entropy"):
        assert torch.equal(getattr(scores, name), getattr(back, name)), name
    assert back.groups == scores.groups and back.threshold == scores.threshold
    assert back.settings["alpha"] == 0.7 and back.settings["top_n"] == 3
    meta = json.loads((tmp_path / "s" / "features.json").read_text())
    first = meta["features"][0]
    assert first["index"] == WINDOW and first["rank"] == 1 and first["selected"]
    assert len(meta["features"]) == 10 and sum(f["selected"] for f in meta["features"]) == 3
    assert first["max_activation"] == pytest.approx(float(scores.max_activation[WINDOW]))
    lines = (tmp_path / "s" / "features.csv").read_text().splitlines()
    assert lines[0].startswith("rank,index,score") and lines[1].startswith(f"1,{WINDOW},")
    with pytest.raises(FileNotFoundError, match="scores.safetensors"):
        FeatureScores.load(tmp_path / "nothing")
