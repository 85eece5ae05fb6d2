"""ReasonScore: vocabulary matching, windows, the streaming formula against a reference, bad input."""

from __future__ import annotations

import json
import math
import warnings
from collections import defaultdict

import numpy as np
import pytest
import torch

from reasoning_dspy.features.activation import feature_set_activation, topk_activation_mean
from reasoning_dspy.features.reasonscore import (
    FeatureScores,
    ReasonScoreAccumulator,
    VocabularyWarning,
    score_features,
    select_features,
    window_mask,
)
from reasoning_dspy.features.vocab import REASONING_WORDS, Vocabulary, token_pieces
from reasoning_dspy.sae import SAE, SAEConfig

#: The paper's `extraction/reason_tokens.json` (AIRI-Institute/SAE-Reasoning), verbatim and in order.
OFFICIAL_REASON_TOKENS = [
    "alternatively", " alternatively", "Alternatively", " Alternatively", "hmm", " hmm", "Hmm", " Hmm",
    "maybe", " maybe", "Maybe", " Maybe", "wait", " wait", "Wait", " Wait", "perhaps", " perhaps", "Perhaps",
    " Perhaps", "let me", " let me", "Let me", " Let me", "therefore", " therefore", "Therefore", " Therefore",
    "however", " however", "However", " However", "But", "Another",
]


# -- vocabulary ---------------------------------------------------------------------------------
def test_default_vocabulary_is_the_official_token_list():
    vocab = Vocabulary.default()
    assert vocab.mode == "exact"
    assert [s for forms in vocab.words.values() for s in forms] == OFFICIAL_REASON_TOKENS
    grouped: dict[str, list[str]] = {}
    for s in OFFICIAL_REASON_TOKENS:  # the official script's grouping
        grouped.setdefault(s.lstrip().lower(), []).append(s)
    assert vocab.words == grouped and vocab.groups == list(REASONING_WORDS)
    assert vocab.words["but"] == ["But"] and vocab.words["another"] == ["Another"]
    broad = Vocabulary.default(match="words")  # every case and spacing: an explicit option
    assert broad.mode == "words" and broad.groups == list(REASONING_WORDS) and broad.words["but"] == ["but"]


def test_official_json_list_means_exact_matching(tmp_path):
    official = tmp_path / "reason_tokens.json"
    official.write_text(json.dumps(OFFICIAL_REASON_TOKENS))
    assert Vocabulary.from_file(official) == Vocabulary.default()
    assert Vocabulary.from_file(official, match="words").mode == "words"
    txt = tmp_path / "words.txt"
    txt.write_text("wait\nBut\n")
    assert Vocabulary.from_file(txt).mode == "words"
    assert Vocabulary.from_file(txt, match="exact").words == {"wait": ["wait"], "but": ["But"]}
    assert Vocabulary.default().with_match("words").mode == "words"
    (tmp_path / "ids.json").write_text(json.dumps({"token_ids": {"a": [5]}}))
    with pytest.raises(ValueError, match="lists token ids"):
        Vocabulary.from_file(tmp_path / "ids.json", match="exact")
    with pytest.raises(ValueError, match="match must be 'exact'"):
        Vocabulary.default(match="fuzzy")
    with pytest.raises(ValueError, match="two groups"):
        Vocabulary.from_words({"a": ["Wait"], "b": ["Wait"]}, match="exact")


def test_words_are_grouped_by_normalised_form():
    vocab = Vocabulary.from_words(["Wait", " wait ", "Let  Me", "WAIT", "hmm"])
    assert vocab.groups == ["wait", "let me", "hmm"]


def test_vocabulary_files(tmp_path):
    txt = tmp_path / "v.txt"
    txt.write_text("# my words\nWait\n\nlet me  # a phrase\nhmm\n")
    assert Vocabulary.from_file(txt).groups == ["wait", "let me", "hmm"]
    (tmp_path / "list.json").write_text(json.dumps(["But", "however"]))
    assert Vocabulary.from_file(tmp_path / "list.json").groups == ["but", "however"]
    (tmp_path / "groups.json").write_text(json.dumps({"doubt": ["wait", "hold on"], "hmm": "hmm"}))
    assert Vocabulary.from_file(tmp_path / "groups.json").words == {"doubt": ["wait", "hold on"], "hmm": ["hmm"]}
    (tmp_path / "ids.json").write_text(json.dumps({"token_ids": {"a": [5, 6], "b": [7]}}))
    ids = Vocabulary.from_file(tmp_path / "ids.json")
    assert ids.mode == "token_ids" and ids.groups == ["a", "b"]
    # a dumped vocabulary loads back unchanged
    (tmp_path / "dump.json").write_text(Vocabulary.default().model_dump_json())
    assert Vocabulary.from_file(tmp_path / "dump.json") == Vocabulary.default()


def test_empty_or_bad_vocabulary_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="vocabulary is empty"):
        Vocabulary.from_words([])
    with pytest.raises(ValueError, match="vocabulary is empty"):
        Vocabulary.from_token_ids([])
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing here\n\n")
    with pytest.raises(ValueError, match="vocabulary is empty"):
        Vocabulary.from_file(empty)
    with pytest.raises(ValueError, match="two groups"):
        Vocabulary.from_words({"a": ["wait"], "b": ["Wait"]})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Vocabulary.from_file(tmp_path / "missing.txt")
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(ValueError, match="not valid JSON"):
        Vocabulary.from_file(tmp_path / "bad.json")


# -- matching -----------------------------------------------------------------------------------
def _cache_like(tokenizer, prompts):
    ids, seqs, pos = [], [], []
    for s, p in enumerate(prompts):
        for j, t in enumerate(tokenizer(p)["input_ids"]):
            if t not in (tokenizer.bos_token_id, tokenizer.eos_token_id):
                ids.append(t)
                seqs.append(s)
                pos.append(j)
    return np.array(ids), np.array(seqs), np.array(pos)


def _matches(tokenizer, prompts, vocab=None):
    vocab = vocab or Vocabulary.default(match="words")
    ids, seqs, _ = _cache_like(tokenizer, prompts)
    first, last, group = vocab.matcher(tokenizer).find(ids, seqs)
    return [(vocab.groups[g], ids[f : lt + 1].tolist(), int(seqs[f])) for f, lt, g in zip(first, last, group, strict=True)]


def test_leading_space_capitalised_and_multi_token_words_match_tiny_tokenizer(tiny):
    tok = tiny.tokenizer
    enc = lambda s: tok.encode(s, add_special_tokens=False)  # noqa: E731
    prompts = ["Wait, let me think. I wait but Kuwait is far; butter? HMM. Let me see",
               "So, therefore\nAnother try: perhaps."]
    found = _matches(tok, prompts)
    groups = [g for g, _, _ in found]
    assert groups == ["wait", "let me", "wait", "but", "hmm", "let me", "therefore", "another", "perhaps"]
    by = {(g, s): ids for g, ids, s in found}
    # the exact token-id sequence of each spelling, as the tokenizer produces it
    assert found[0][1] == enc("Wait")  # sentence start, no leading space
    assert found[1][1] == enc(" let me") and len(found[1][1]) == 2  # multi-token phrase
    assert found[2][1] == enc(" wait")  # leading-space variant
    assert found[5][1] == enc(" Let me")  # capitalised multi-token phrase
    assert by[("another", 1)] == enc("Another")  # after a newline, capitalised
    # whole words only, and never across two prompts
    assert "Kuwait" in prompts[0] and groups.count("wait") == 2
    assert "butter" in prompts[0] and groups.count("but") == 1
    cross = _matches(tok, ["this ends with let", "me start"])
    assert cross == []


def test_matching_a_sentencepiece_tokenizer():
    """'▁' marks a leading space in SentencePiece tokenizers (TinyLlama/Llama): words must still match."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from reasoning_dspy.models.tiny import corpus_text

    raw = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    raw.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    raw.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    raw.train_from_iterator(corpus_text().splitlines()[:300],
                            trainers.BpeTrainer(vocab_size=600, special_tokens=["<unk>", "<s>", "</s>"],
                                                show_progress=False))
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    assert any(p.startswith("▁") for p in tok.convert_ids_to_tokens(tok.encode(" wait but", add_special_tokens=False)))
    pieces = token_pieces(tok)
    assert pieces[tok.convert_tokens_to_ids("▁the")].startswith(" ")  # the leading space survives
    found = _matches(tok, ["Wait, let me see. I wait but Kuwait, hmm."])
    assert [g for g, _, _ in found] == ["wait", "let me", "wait", "but", "hmm"]


def test_default_matches_only_the_official_spellings(tiny):
    tok = tiny.tokenizer
    enc = lambda s: tok.encode(s, add_special_tokens=False)  # noqa: E731
    prompts = ["Wait, I wait but WAIT.\nBut let me see another way.\nAnother way, however."]
    found = _matches(tok, prompts, Vocabulary.default())
    assert [(g, ids) for g, ids, _ in found] == [
        ("wait", enc("Wait")), ("wait", enc(" wait")), ("but", enc("But")), ("let me", enc(" let me")),
        ("another", enc("Another")), ("however", enc(" however"))]
    # mid-sentence " but"/" another" and "WAIT" are not official spellings; the broad mode finds them
    broad = [g for g, _, _ in _matches(tok, prompts, Vocabulary.default(match="words"))]
    assert (broad.count("wait"), broad.count("but"), broad.count("another")) == (3, 2, 2)
    # a spelling's tokens are matched within one prompt only
    let_me = enc(" let me")
    assert len(let_me) == 2
    matcher = Vocabulary.default().matcher(tok)
    first, last, group = matcher.find(np.array(let_me + let_me), np.array([0, 0, 1, 2]))
    assert (first.tolist(), last.tolist(), group.tolist()) == ([0], [1], [REASONING_WORDS.index("let me")])


def test_token_id_mode(tiny):
    tok = tiny.tokenizer
    wait = tok.encode(" wait", add_special_tokens=False)
    assert len(wait) == 1
    vocab = Vocabulary.from_token_ids({"wait": wait})
    found = _matches(tok, ["I wait and wait."], vocab)
    assert [(g, ids) for g, ids, _ in found] == [("wait", wait), ("wait", wait)]


# -- windows ------------------------------------------------------------------------------------
def test_window_is_one_before_two_after_within_the_prompt():
    # two prompts; stored positions start at 1 (BOS dropped); prompt 1 has a gap (a dropped EOS)
    seq = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
    pos = np.array([1, 2, 3, 4, 5, 1, 2, 4, 5, 6])
    # occurrence A: token 4 (last of prompt 0, group 0); B: tokens 5..6 (a 2-token word, group 1)
    m = window_mask(np.array([4, 5]), np.array([4, 6]), np.array([0, 1]), seq, pos, 2, left=1, right=2)
    assert m[:, 0].nonzero().flatten().tolist() == [3, 4]  # never spills into prompt 1
    assert m[:, 1].nonzero().flatten().tolist() == [5, 6, 7]  # positions 1..2+2=4; position 3 is absent
    wide = window_mask(np.array([2]), np.array([2]), np.array([0]), seq, pos, 1, left=5, right=0)
    assert wide[:, 0].nonzero().flatten().tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="not ordered"):
        window_mask(np.array([0]), np.array([0]), np.array([0]), seq[::-1].copy(), pos, 1)


# -- the formula --------------------------------------------------------------------------------
def reference_reason_score(latents, first, last, group, seq, pos, n_groups, left, right, alpha):
    """The paper's formula written out plainly, token by token."""
    latents = latents.double()
    n, d_sae = latents.shape
    in_group = [[False] * n_groups for _ in range(n)]
    for f, lt, g in zip(first, last, group, strict=True):
        for t in range(n):
            if seq[t] == seq[f] and pos[f] - left <= pos[t] <= pos[lt] + right:
                in_group[t][g] = True
    in_any = [any(row) for row in in_group]
    mu_group = torch.zeros(d_sae, n_groups, dtype=torch.float64)
    for g in range(n_groups):
        rows = [t for t in range(n) if in_group[t][g]]
        mu_group[:, g] = latents[rows].mean(dim=0)
    mu_pos = latents[[t for t in range(n) if in_any[t]]].mean(dim=0)
    mu_neg = latents[[t for t in range(n) if not in_any[t]]].mean(dim=0)
    scores = torch.zeros(d_sae, dtype=torch.float64)
    for i in range(d_sae):
        p = mu_group[i] / mu_group[i].sum()
        entropy = -sum(float(q) * math.log(float(q)) for q in p if q > 0) / math.log(n_groups)
        scores[i] = mu_pos[i] / mu_pos.sum() * entropy**alpha - mu_neg[i] / mu_neg.sum()
    return scores, mu_group


def _random_data(seed=0, n_prompts=30, d_sae=24, n_groups=4):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(5, 20, (n_prompts,), generator=g)
    seq = np.repeat(np.arange(n_prompts), lengths.numpy())
    pos = np.concatenate([np.arange(1, int(k) + 1) for k in lengths])
    n = len(seq)
    latents = torch.relu(torch.randn(n, d_sae, generator=g) - 0.3)
    starts = torch.randperm(n, generator=g)[: n // 6].sort().values.numpy()
    lens = torch.randint(0, 2, (len(starts),), generator=g).numpy()
    last = np.minimum(starts + lens, n - 1)
    last = np.where(seq[last] == seq[starts], last, starts)  # a word never spans two prompts
    group = np.arange(len(starts)) % n_groups
    return latents, starts, last, group, seq, pos


@pytest.mark.parametrize("alpha,left,right", [(0.7, 1, 2), (1.0, 0, 0), (0.3, 3, 1)])
def test_streaming_matches_reference_and_ignores_batch_size(alpha, left, right):
    latents, first, last, group, seq, pos = _random_data()
    expected, expected_mu = reference_reason_score(latents, first, last, group, seq, pos, 4, left, right, alpha)
    window = window_mask(first, last, group, seq, pos, 4, left, right)
    results = []
    for batch in (1, 7, 64, len(seq)):
        acc = ReasonScoreAccumulator(latents.shape[1], 4)
        for s in range(0, len(seq), batch):
            acc.update(latents[s : s + batch], window[s : s + batch])
        results.append(acc.result(list("abcd"), alpha=alpha))
    for r in results:
        torch.testing.assert_close(r.reason_score.double(), expected, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(r.mu_pos_by_group.double(), expected_mu, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(r.reason_score, results[0].reason_score, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(results[0].max_activation, latents.max(dim=0).values)
    torch.testing.assert_close(results[0].density, (latents > 0).float().mean(dim=0))


def test_entropy_term_prefers_features_spread_over_all_words():
    """Same pooled window mean, but one fires on a single word: it must score lower (α > 0)."""
    latents, first, last, group, seq, pos = _random_data(n_groups=4)
    window = window_mask(first, last, group, seq, pos, 4, 1, 2)
    only_a = window[:, 0]
    anywhere = window.any(dim=1)
    lat = torch.zeros(len(seq), 3)
    lat[:, 0] = anywhere.float()  # fires on every word's windows
    lat[:, 1] = only_a.float() * (anywhere.sum() / only_a.sum())  # same μ⁺, one word only
    lat[:, 2] = 0.01  # keeps Σμ⁻ non-zero
    acc = ReasonScoreAccumulator(3, 4)
    acc.update(lat, window)
    flat = acc.result(list("abcd"), alpha=0.0).reason_score
    torch.testing.assert_close(flat[0], flat[1])  # without the entropy term they tie
    scored = acc.result(list("abcd"), alpha=0.7)
    assert scored.reason_score[1] < scored.reason_score[0]
    assert scored.entropy[0] > scored.entropy[1]


def test_selection_by_quantile_and_top_n():
    score = torch.arange(1000, dtype=torch.float32)
    chosen, threshold = select_features(score, quantile=0.997)
    assert chosen.tolist() == [999, 998, 997] and threshold == pytest.approx(996.003)
    top, t = select_features(score, top_n=5)
    assert top.tolist() == [999, 998, 997, 996, 995] and t == 995
    assert len(select_features(torch.zeros(10), quantile=0.997)[0]) == 10  # ties all pass
    with pytest.raises(ValueError, match="quantile"):
        select_features(score, quantile=1.5)
    with pytest.raises(ValueError, match="top_n"):
        select_features(score, top_n=0)


# -- on a real cache + SAE -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def sae():
    torch.manual_seed(0)
    return SAE.from_config(SAEConfig(architecture="topk", k=8, d_in=64, d_sae=128, model_name="tiny-random",
                                     hook_layer=2))


@pytest.fixture(scope="module")
def traces_cache(tiny, tmp_path_factory):
    """Layer-2 fp32 activations of 8 bundled prompts and 24 bundled reasoning traces (≈ 4,500 tokens),
    in which every group of the official list occurs."""
    from reasoning_dspy.activations import extract_activations
    from reasoning_dspy.prompts import load_prompts

    texts = load_prompts("bundled", limit=8) + load_prompts("bundled-traces", limit=24)
    return extract_activations(tiny.model, tiny.tokenizer, texts, 2, tmp_path_factory.mktemp("traces"),
                               dtype="float32", batch_size=16, shard_tokens=1024, progress=False)


def _uneven_decoder(sae: SAE, low: float = 0.2, high: float = 4.0) -> torch.Tensor:
    """Scale the decoder rows by different factors in place (as an SAE trained without renormalising
    ends up); returns the new row norms `[d_sae]`."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        sae.W_dec.mul_(torch.empty(sae.d_sae, 1).uniform_(low, high, generator=g))
    return sae.W_dec.detach().norm(dim=1)


def test_scores_on_tiny_cache(traces_cache, sae, tiny):
    scores = score_features(traces_cache, sae, tokenizer=tiny.tokenizer, progress=False)
    again = score_features(traces_cache, sae, tokenizer=tiny.tokenizer, batch_size=33, progress=False)
    assert scores.reason_score.shape == (128,) and scores.mu_pos_by_group.shape == (128, 10)
    assert torch.isfinite(scores.reason_score).all() and torch.isfinite(scores.entropy).all()
    assert scores.n_pos_tokens + scores.n_neg_tokens == traces_cache.n_tokens
    assert (scores.group_token_counts > 0).all()
    ranked = scores.reason_score[scores.selected]
    assert (ranked[:-1] >= ranked[1:]).all() and (ranked >= scores.threshold).all()
    torch.testing.assert_close(scores.reason_score, again.reason_score, rtol=1e-5, atol=1e-8)
    latents = sae.unit_norm_view().encode(traces_cache.load(("acts",))["acts"]).detach()
    torch.testing.assert_close(scores.max_activation, latents.max(dim=0).values)
    torch.testing.assert_close(scores.density, (latents > 0).float().mean(dim=0))
    assert scores.settings["match"] == "exact" and scores.settings["unit_norm_decoder"] is True


def test_topk_scores_read_the_latents_the_sae_was_trained_to_pick(traces_cache, tiny):
    """TopK with decoder rows of different norms: ReasonScore sees the trained k latents of each token,
    times their decoder norms (folding the norms into the encoder would pick other latents)."""
    torch.manual_seed(0)
    topk = SAE.from_config(SAEConfig(architecture="topk", k=8, d_in=64, d_sae=96, model_name="tiny-random",
                                     hook_layer=2))
    norms = _uneven_decoder(topk)
    scores = score_features(traces_cache, topk, tokenizer=tiny.tokenizer, progress=False)
    with torch.no_grad():
        trained = topk.encode(traces_cache.load(("acts",))["acts"])
    torch.testing.assert_close(scores.density, (trained > 0).float().mean(dim=0))
    torch.testing.assert_close(scores.max_activation, (trained * norms).amax(dim=0))


def test_decoder_norms_are_folded(tiny_cache, sae, tiny):
    scaled = SAE.from_config(sae.cfg)
    scaled.load_state_dict(sae.state_dict())
    with torch.no_grad():  # same features, decoder rows 3x longer, encoder 3x weaker
        scaled.W_dec *= 3.0
        scaled.W_enc /= 3.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VocabularyWarning)
        a = score_features(tiny_cache, sae, tokenizer=tiny.tokenizer, progress=False)
        b = score_features(tiny_cache, scaled, tokenizer=tiny.tokenizer, progress=False)
    torch.testing.assert_close(a.max_activation, b.max_activation, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(a.reason_score, b.reason_score, rtol=1e-4, atol=1e-7)


def test_sae_cache_width_mismatch_is_a_clear_error(tiny_cache, tiny):
    wrong = SAE.from_config(SAEConfig(architecture="relu", d_in=32, d_sae=64))
    with pytest.raises(ValueError, match=r"SAE expects d_in=32 but the cache .* holds 64-dim"):
        score_features(tiny_cache, wrong, tokenizer=tiny.tokenizer, progress=False)


def test_absent_words_warn_and_never_give_nan(tiny_cache, sae, tiny):
    vocab = Vocabulary.from_words(["zyzzyva", "but", "qwxv"])
    with pytest.warns(VocabularyWarning, match=r"never found in the data: \['zyzzyva', 'qwxv'\]"):
        scores = score_features(tiny_cache, sae, vocab, tokenizer=tiny.tokenizer, progress=False)
    assert torch.isfinite(scores.reason_score).all() and torch.isfinite(scores.mu_pos_by_group).all()
    assert scores.group_token_counts.tolist()[0] == 0 and scores.group_token_counts.tolist()[1] > 0
    with pytest.warns(VocabularyWarning, match="no vocabulary word occurs"):
        none = score_features(tiny_cache, sae, Vocabulary.from_words(["zyzzyva"]), tokenizer=tiny.tokenizer,
                              progress=False)
    assert torch.isfinite(none.reason_score).all() and (none.reason_score <= 0).all()


def test_bad_settings_are_refused(tiny_cache, sae, tiny):
    for kwargs, match in [({"alpha": -1}, "alpha"), ({"left": -1}, "window"), ({"quantile": 0}, "quantile"),
                          ({"batch_size": 0}, "batch_size")]:
        with pytest.raises(ValueError, match=match):
            score_features(tiny_cache, sae, tokenizer=tiny.tokenizer, progress=False, **kwargs)


# -- parity with the paper's script (extraction/compute_score.py) ---------------------------------
class OfficialRollingMean:
    """`RollingMean` of the paper's `extraction/compute_score.py`, ported as is (no ignore tokens:
    the cache holds no BOS/EOS/pad)."""

    def __init__(self, tokens_of_interest: list[list[torch.Tensor]], expand_range=None):
        self.tokens_of_interest = tokens_of_interest
        self.expand_range = expand_range if expand_range is not None else (0, 0)
        self._means = None
        self._counts = [0] * len(self.tokens_of_interest)
        self._mean_pos, self._count_pos = None, 0
        self._mean_neg, self._count_neg = None, 0

    def _compute_single_mask(self, tokens, ids_of_interest):
        seq_len = tokens.size(1)
        ids_len = len(ids_of_interest)
        mask = torch.zeros_like(tokens, dtype=torch.bool)
        if ids_len > seq_len:
            return mask
        ids_of_interest = ids_of_interest.view(1, 1, -1)
        windows = tokens.unfold(1, ids_len, 1)
        matches = (windows == ids_of_interest).all(dim=2)
        batch_indices, window_indices = torch.nonzero(matches, as_tuple=True)
        if len(batch_indices) == 0:
            return mask
        offsets = torch.arange(ids_len)
        spans = window_indices.unsqueeze(1) + offsets.unsqueeze(0)
        batch_expanded = batch_indices.unsqueeze(1).expand(-1, ids_len).reshape(-1)
        mask[batch_expanded, spans.reshape(-1)] = True
        left, right = self.expand_range
        if left != 0 or right != 0:
            batch_indices, pos_indices = torch.nonzero(mask, as_tuple=True)
            if len(pos_indices) > 0:
                starts = torch.clamp(pos_indices - left, min=0)
                ends = torch.clamp(pos_indices + right, max=tokens.size(1) - 1)
                delta = torch.zeros(tokens.size(0), tokens.size(1) + 1, dtype=torch.int32)
                delta[batch_indices, starts] += 1
                delta[batch_indices, ends + 1] -= 1
                mask = delta.cumsum(dim=1)[:, :-1] > 0
        return mask

    @staticmethod
    def _compute_update(tokens, feature_acts, mask, acc_mean, acc_count):
        tokens, feature_acts = tokens[mask], feature_acts[mask]
        if tokens.numel() == 0:
            return acc_mean, acc_count
        mean, count = feature_acts.mean(dim=0), feature_acts.size(0)
        upd_count = acc_count + count
        return acc_mean + (count / upd_count) * (mean - acc_mean), upd_count

    def update(self, tokens, feature_acts):
        n = feature_acts.size(-1)
        if self._means is None:
            self._means = [torch.zeros(n, dtype=feature_acts.dtype) for _ in self.tokens_of_interest]
            self._mean_pos = torch.zeros(n, dtype=feature_acts.dtype)
            self._mean_neg = torch.zeros(n, dtype=feature_acts.dtype)
        mask_combined = torch.zeros_like(tokens, dtype=torch.bool)
        for i, seq_group in enumerate(self.tokens_of_interest):
            group_mask = torch.zeros_like(tokens, dtype=torch.bool)
            for seq in seq_group:
                group_mask |= self._compute_single_mask(tokens, seq)
            self._means[i], self._counts[i] = self._compute_update(
                tokens, feature_acts, group_mask, self._means[i], self._counts[i])
            mask_combined |= group_mask
        self._mean_pos, self._count_pos = self._compute_update(
            tokens, feature_acts, mask_combined, self._mean_pos, self._count_pos)
        self._mean_neg, self._count_neg = self._compute_update(
            tokens, feature_acts, ~mask_combined, self._mean_neg, self._count_neg)

    def stats(self):
        return torch.stack([self._mean_pos, self._mean_neg], dim=1), torch.stack(self._means, dim=1)


def official_reason_tokens(tokenizer, tokens_str: list[str]) -> list[list[torch.Tensor]]:
    """`compute_score`'s grouping: spellings grouped by `s.lstrip().lower()`, each encoded as is."""
    grouped = defaultdict(list)
    for str_token in tokens_str:
        token_ids = tokenizer.encode(str_token, add_special_tokens=False)
        grouped[str_token.lstrip().lower()].append(torch.tensor(token_ids, dtype=torch.long))
    return list(grouped.values())


def official_scores(means, single_means, alpha, epsilon=1e-12):
    """The score of `SaeSelectionRunner.run`: entropy over all listed groups, normalised by log|R|."""
    probs = single_means / (single_means.sum(dim=1, keepdim=True) + epsilon)
    log_probs = torch.where(probs > 0, torch.log(probs), 0)
    h = -(probs * log_probs).sum(dim=1)
    h_norm = h / math.log(probs.size(1)) if probs.size(1) > 1 else torch.ones_like(h)
    sum_pos = means[:, 0].sum(dim=0, keepdim=True) + epsilon
    sum_neg = means[:, 1].sum(dim=0, keepdim=True) + epsilon
    return (means[:, 0] / sum_pos) * h_norm**alpha - (means[:, 1] / sum_neg)


def official_latents(sae: SAE, acts: torch.Tensor) -> torch.Tensor:
    """What the script encodes with: SAELens' `fold_W_dec_norm()` on a standard (ReLU) SAE, then `encode`."""
    norms = sae.W_dec.norm(dim=-1).clamp(min=1e-8)
    return torch.relu((acts - sae.b_dec) @ (sae.W_enc * norms) + sae.b_enc * norms)


@pytest.fixture(scope="module")
def relu_sae():
    torch.manual_seed(0)
    relu = SAE.from_config(SAEConfig(architecture="relu", d_in=64, d_sae=96, model_name="tiny-random",
                                     hook_layer=2))
    _uneven_decoder(relu)
    return relu


@pytest.mark.parametrize("extra,left,right,alpha", [
    ((), 1, 2, 0.7),  # the paper's settings
    ((), 0, 0, 1.0),  # the script's own defaults
    ((" zyzzyva",), 1, 2, 0.7),  # a listed group that never occurs still counts in log|R|
])
def test_default_scores_match_the_papers_script(traces_cache, relu_sae, tiny, extra, left, right, alpha):
    spellings = OFFICIAL_REASON_TOKENS + list(extra)
    vocab = Vocabulary.from_words(spellings, match="exact") if extra else None  # None: the default
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VocabularyWarning)
        ours = score_features(traces_cache, relu_sae, vocab, tokenizer=tiny.tokenizer, alpha=alpha, left=left,
                              right=right, progress=False)
    data = traces_cache.load()
    ids, seq = data["token_ids"].long(), data["seq_ids"]
    with torch.no_grad():
        latents = official_latents(relu_sae, data["acts"])
    reference = OfficialRollingMean(official_reason_tokens(tiny.tokenizer, spellings), (left, right))
    for s in torch.unique(seq):  # one prompt per row, so no window crosses two prompts
        rows = seq == s
        reference.update(ids[rows][None], latents[rows][None])
    means, single_means = reference.stats()
    expected = official_scores(means.double(), single_means.double(), alpha)
    assert ours.groups == list(dict.fromkeys(s.lstrip().lower() for s in spellings))
    torch.testing.assert_close(ours.mu_pos_by_group, single_means, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(ours.mu_pos, means[:, 0], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(ours.mu_neg, means[:, 1], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(ours.reason_score.double(), expected, rtol=1e-4, atol=1e-7)
    assert torch.equal(ours.ranking[:10], torch.argsort(expected, descending=True, stable=True)[:10])
    assert (single_means[:, -1] == 0).all() == bool(extra)  # the extra group never occurs
    assert (ours.settings["match"], ours.settings["entropy_groups"]) == ("exact", len(ours.groups))


def test_a_group_absent_from_the_data_still_counts_in_log_r():
    """The script divides the entropy by log|R| over every listed group, seen in the data or not."""
    latents, first, last, group, seq, pos = _random_data(n_groups=4)
    seen = group != 3  # group "d" never occurs
    window = window_mask(first[seen], last[seen], group[seen], seq, pos, 4, 1, 2)
    acc = ReasonScoreAccumulator(latents.shape[1], 4)
    acc.update(latents, window)
    with pytest.warns(VocabularyWarning, match=r"never found in the data: \['d'\]"):
        scores = acc.result(list("abcd"), alpha=0.7)
    means = torch.stack([scores.mu_pos, scores.mu_neg], dim=1).double()
    expected = official_scores(means, scores.mu_pos_by_group.double(), 0.7)
    torch.testing.assert_close(scores.reason_score.double(), expected, rtol=1e-5, atol=1e-8)


def test_entropy_normaliser_over_listed_or_seen_groups(traces_cache, relu_sae, tiny, tmp_path):
    vocab = Vocabulary.from_words([*OFFICIAL_REASON_TOKENS, " zyzzyva"], match="exact")  # 11 groups, 10 occur
    absent = r"never found in the data: \['zyzzyva'\].*all 11 listed groups"
    with pytest.warns(VocabularyWarning, match=absent):
        listed = score_features(traces_cache, relu_sae, vocab, tokenizer=tiny.tokenizer, progress=False)
    with pytest.warns(VocabularyWarning, match=r"left out of the entropy term \(\|R\| = 10 groups\)"):
        seen = score_features(traces_cache, relu_sae, vocab, tokenizer=tiny.tokenizer, entropy_norm="seen",
                              progress=False)
    assert (listed.settings["entropy_norm"], listed.settings["entropy_groups"]) == ("all", 11)
    assert (seen.settings["entropy_norm"], seen.settings["entropy_groups"]) == ("seen", 10)
    torch.testing.assert_close(listed.entropy.double() * math.log(11), seen.entropy.double() * math.log(10),
                               rtol=1e-5, atol=1e-7)
    assert listed.entropy.max() <= math.log(10) / math.log(11) + 1e-6 < seen.entropy.max()
    listed.save(tmp_path / "s")
    saved = json.loads((tmp_path / "s" / "features.json").read_text())["settings"]
    assert (saved["match"], saved["entropy_norm"], saved["entropy_groups"]) == ("exact", "all", 11)
    assert FeatureScores.load(tmp_path / "s").settings["entropy_norm"] == "all"
    with pytest.raises(ValueError, match="entropy_norm must be 'all'"):
        score_features(traces_cache, relu_sae, vocab, tokenizer=tiny.tokenizer, entropy_norm="present",
                       progress=False)


# -- prompt-level activation (features/activation.py) ---------------------------------------------------------------------------
def test_prompt_level_scores():
    lat = torch.tensor([[0.0, -3.0, 1.0], [2.0, 0.5, 0.0]])
    assert topk_activation_mean(lat, k=2) == pytest.approx(2.5)  # |−3| and 2
    assert topk_activation_mean(torch.zeros(0, 3)) == 0.0
    assert feature_set_activation(lat, [0, 2]) == pytest.approx(0.75)
    assert feature_set_activation(lat, []) == 0.0
