"""ReasonScore (Galichin et al. 2025): rank SAE features by how specifically they fire around
reasoning words, streaming over an activation cache.

For feature i, with R the vocabulary's word groups (`reasoning_dspy.features.vocab`; by default the paper's
official spellings, matched as exact token-id sequences) and each occurrence of a word widened to
the window of tokens `[p − left, p + right]` of its prompt:

- `μ⁺_i(r_j)`: mean activation over the window tokens of group j; `μ⁺_i`: over all window tokens;
  `μ⁻_i`: over every other token (BOS/EOS/pad are not in the cache, so excluded from both);
- `p_i(r_j) = μ⁺_i(r_j) / Σ_j μ⁺_i(r_j)`, `H_i = −Σ_j p_i(r_j) log p_i(r_j) / log|R|`, where |R| is
  every listed group (`entropy_norm="all"`, the paper's script: a group absent from the data adds
  p = 0) or only the groups found in the data (`entropy_norm="seen"`);
- `ReasonScore_i = μ⁺_i / Σ_k μ⁺_k · H_i^α − μ⁻_i / Σ_k μ⁻_k` (α = 0.7);
- selection: features at or above the 0.997 quantile of the scores, or the top N.

Activations are the SAE's as trained, read with unit-norm decoder rows (`SAE.unit_norm_view()`:
each latent times ‖W_dec,i‖), so magnitudes compare across features and TopK keeps the latents it
was trained to pick. Only per-feature, per-group sums and counts are kept: memory is O(d_sae · |R|)
whatever the number of tokens. Groups that never occur in the data are reported with a warning.

Saved format (`FeatureScores.save(folder)`, read back with `FeatureScores.load(folder)`):

- `scores.safetensors`: float32 vectors over all features — `reason_score [d_sae]`,
  `mu_pos [d_sae]`, `mu_neg [d_sae]`, `mu_pos_by_group [d_sae, |R|]`, `entropy [d_sae]`,
  `max_activation [d_sae]` (largest activation over the whole cache, in unit-norm-decoder units:
  the steering `f_max`, to be used with the unit-norm decoder rows), `density [d_sae]`
  (fraction of cached tokens where the feature is > 0); int64 `selected [n_selected]` (feature
  indices, best first), `ranking [d_sae]` (all features, best first), `group_token_counts [|R|]`.
- `features.json`: `settings` (alpha, left, right, quantile, top_n, threshold, `match` (exact,
  words or token_ids), `entropy_norm` (all or seen) and `entropy_groups` (the |R| it divided by),
  `unit_norm_decoder`, model, layer, sae, cache, token counts, ...), `groups` (column names of
  `mu_pos_by_group`), the `vocabulary`, and `features`: one entry per selected feature (at least
  the top 10) with `index`, `rank` (1 = best), `score`, `selected`, `max_activation`, `density`,
  `mu_pos`, `mu_neg`, `entropy` and `top_words` (`[{word, mean_activation}]`, the groups with the
  largest `μ⁺_i(r_j)`).
- `features.csv`: the same rows as `features.json["features"]`, one line per feature.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from reasoning_dspy.features.scores import FeatureScores
from reasoning_dspy.features.vocab import VocabMatcher, Vocabulary


class VocabularyWarning(UserWarning):
    """Some (or all) vocabulary words never occur in the scored data."""


#: The entropy normaliser log|R|: "all" listed groups (the paper's script) or only the groups
#: "seen" in the data.
EntropyNorm = Literal["all", "seen"]
ENTROPY_NORMS: tuple[str, ...] = ("all", "seen")


def check_entropy_norm(entropy_norm: str) -> str:
    """Refuse an unknown normaliser before a pass over the cache, not after it."""
    if entropy_norm not in ENTROPY_NORMS:
        raise ValueError(f"entropy_norm must be 'all' (log|R| over every listed group, the paper's) or "
                         f"'seen' (only groups found in the data), got {entropy_norm!r}")
    return entropy_norm


# -- windows --------------------------------------------------------------------------------------
def window_mask(
    first: np.ndarray,
    last: np.ndarray,
    group: np.ndarray,
    seq_ids: np.ndarray,
    positions: np.ndarray,
    n_groups: int,
    left: int = 1,
    right: int = 2,
) -> Tensor:
    """Which tokens lie in a window of each group: `[n_tokens, n_groups]` bool.

    Occurrence k spans token indices `first[k]..last[k]`; its window is every token of the same
    prompt whose position is in `[pos(first) − left, pos(last) + right]`. Tokens must be ordered by
    (prompt, position) — the cache's shard order — which makes each window a contiguous slice.
    """
    seq_ids = np.asarray(seq_ids, dtype=np.int64)
    positions = np.asarray(positions, dtype=np.int64)
    n = len(seq_ids)
    mask = np.zeros((n + 1, n_groups), dtype=np.int64)
    if n == 0 or len(group) == 0:
        return torch.zeros(n, n_groups, dtype=torch.bool)
    span = int(positions.max()) + right + 2
    key = seq_ids * span + positions
    if np.any(np.diff(key) <= 0):
        raise ValueError("tokens are not ordered by (prompt, position): windows need the cache's shard order")
    lo_key = seq_ids[first] * span + np.maximum(positions[first] - left, 0)
    hi_key = seq_ids[last] * span + positions[last] + right
    lo = np.searchsorted(key, lo_key, side="left")
    hi = np.searchsorted(key, hi_key, side="right")
    np.add.at(mask, (lo, group), 1)
    np.add.at(mask, (hi, group), -1)
    return torch.from_numpy(np.cumsum(mask[:-1], axis=0) > 0)


# -- streaming accumulation -----------------------------------------------------------------------
class ReasonScoreAccumulator:
    """Running per-feature sums for ReasonScore: feed `(latents, window)` batches in any split.

    State is `O(d_sae · n_groups)` float64, independent of the number of tokens seen.
    """

    def __init__(self, d_sae: int, n_groups: int):
        if n_groups < 1:
            raise ValueError("ReasonScore needs at least one word group")
        f64 = torch.float64
        self.d_sae, self.n_groups = d_sae, n_groups
        self.sum_by_group = torch.zeros(n_groups, d_sae, dtype=f64)  # Σ f over window tokens of group j
        self.count_by_group = torch.zeros(n_groups, dtype=torch.long)
        self.sum_pos = torch.zeros(d_sae, dtype=f64)  # Σ f over tokens in any window
        self.sum_neg = torch.zeros(d_sae, dtype=f64)  # Σ f over all other tokens
        self.n_pos = 0
        self.n_neg = 0
        self.max_activation = torch.full((d_sae,), -math.inf, dtype=torch.float32)
        self.n_fired = torch.zeros(d_sae, dtype=torch.long)

    @torch.no_grad()
    def update(self, latents: Tensor, window: Tensor) -> None:
        """`latents [n, d_sae]`, `window [n, n_groups]` bool (token n is in a window of group j)."""
        if latents.shape[-1] != self.d_sae or window.shape != (latents.shape[0], self.n_groups):
            raise ValueError(f"expected latents [n, {self.d_sae}] and window [n, {self.n_groups}], got "
                             f"{tuple(latents.shape)} and {tuple(window.shape)}")
        if latents.shape[0] == 0:
            return
        lat = latents.detach()
        if not lat.is_floating_point() or lat.dtype in (torch.float16, torch.bfloat16):
            lat = lat.float()
        window = window.to(lat.device)
        pos = window.any(dim=1)
        # One matmul gives every group's sum and the pooled window and non-window sums (never
        # total − window: that cancels badly for features nearly silent outside the windows).
        cols = torch.cat([window, pos[:, None], ~pos[:, None]], dim=1).to(lat.dtype)  # [n, G + 2]
        sums = (cols.T @ lat).to("cpu", torch.float64)  # [G + 2, d_sae]
        self.sum_by_group += sums[:-2]
        self.sum_pos += sums[-2]
        self.sum_neg += sums[-1]
        self.count_by_group += window.sum(dim=0).cpu()
        n_pos = int(pos.sum())
        self.n_pos += n_pos
        self.n_neg += len(pos) - n_pos
        self.max_activation = torch.maximum(self.max_activation, lat.amax(dim=0).float().cpu())
        # SAE latents are >= 0, so "fires" is "non-zero" (count_nonzero avoids an [n, d_sae] mask)
        self.n_fired += torch.count_nonzero(lat.clamp_min(0) if lat.min() < 0 else lat, dim=0).cpu()

    @property
    def n_tokens(self) -> int:
        return self.n_pos + self.n_neg

    def result(
        self,
        groups: Sequence[str],
        *,
        alpha: float = 0.7,
        quantile: float | None = 0.997,
        top_n: int | None = None,
        settings: dict[str, Any] | None = None,
        entropy_norm: EntropyNorm = "all",
    ) -> FeatureScores:
        """Scores from the sums so far; `entropy_norm` picks |R| in `log|R|` (see the module docstring)."""
        if self.n_tokens == 0:
            raise ValueError("no tokens were scored: the activation cache is empty")
        check_entropy_norm(entropy_norm)
        groups = list(groups)
        counts = self.count_by_group.to(torch.float64)
        present = counts > 0 if entropy_norm == "seen" else None
        n_entropy = len(groups) if present is None else int(present.sum())
        _warn_absent(groups, self.count_by_group.tolist(), entropy_norm, n_entropy)
        mu_by_group = (self.sum_by_group / counts.clamp_min(1)[:, None]).T  # [d_sae, G], 0 for absent groups
        mu_pos = self.sum_pos / max(self.n_pos, 1)
        mu_neg = self.sum_neg / max(self.n_neg, 1)
        score, entropy = reason_score(mu_by_group, mu_pos, mu_neg, alpha=alpha, present=present)
        selected, threshold = select_features(score, quantile=quantile, top_n=top_n)
        max_act = torch.where(torch.isfinite(self.max_activation), self.max_activation,
                              torch.zeros_like(self.max_activation))
        return FeatureScores(
            reason_score=score.float(), mu_pos_by_group=mu_by_group.float(), mu_pos=mu_pos.float(),
            mu_neg=mu_neg.float(), entropy=entropy.float(), max_activation=max_act,
            density=(self.n_fired.to(torch.float64) / self.n_tokens).float(), selected=selected,
            threshold=threshold, groups=groups, group_token_counts=self.count_by_group.clone(),
            n_pos_tokens=self.n_pos, n_neg_tokens=self.n_neg,
            settings={"alpha": alpha, "quantile": None if top_n else quantile, "top_n": top_n,
                      "entropy_norm": entropy_norm, "entropy_groups": n_entropy, **(settings or {})},
        )


def _warn_absent(groups: list[str], counts: list[int], entropy_norm: str, n_entropy: int) -> None:
    """Say which groups never occur, and what that does to the entropy term."""
    absent = [g for g, c in zip(groups, counts, strict=True) if c == 0]
    if len(absent) == len(groups):
        warnings.warn(
            "no vocabulary word occurs in the data, so every feature's positive term is 0 and scores only "
            "rank features by how little they fire; check the vocabulary and that the cache was made "
            "with this tokenizer", VocabularyWarning, stacklevel=4)
    elif absent and entropy_norm == "seen":
        warnings.warn(
            f"vocabulary words never found in the data: {absent}; they are left out of the entropy term "
            f"(|R| = {n_entropy} groups)", VocabularyWarning, stacklevel=4)
    elif absent:
        warnings.warn(
            f"vocabulary words never found in the data: {absent}; they count with p = 0 in the entropy term, "
            f"which is still normalised by log|R| over all {n_entropy} listed groups (entropy_norm='seen' "
            "normalises by the groups found)", VocabularyWarning, stacklevel=4)


def reason_score(
    mu_by_group: Tensor, mu_pos: Tensor, mu_neg: Tensor, *, alpha: float = 0.7, present: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """ReasonScore from the means: `mu_by_group [d_sae, G]`, `mu_pos`, `mu_neg [d_sae]`.

    Returns `(score, entropy)`, both `[d_sae]`. The entropy is normalised by `log G` over every
    group (the paper's script); `present [G]`, if given, keeps only those groups (e.g. the ones seen
    in the data). 0/0 (a feature silent on every window, or everywhere) counts as 0.
    """
    if present is None:
        present = torch.ones(mu_by_group.shape[1], dtype=torch.bool)
    mu = mu_by_group[:, present].to(torch.float64)
    n_groups = mu.shape[1]
    total = mu.sum(dim=1, keepdim=True)
    p = torch.where(total > 0, mu / total.clamp_min(1e-300), torch.zeros_like(mu))
    if n_groups > 1:
        entropy = -torch.xlogy(p, p).sum(dim=1) / math.log(n_groups)
    else:  # one group: nothing to spread over, the entropy term is neutral
        entropy = (total.squeeze(1) > 0).to(torch.float64)
    entropy = entropy.clamp(0.0, 1.0)

    def share(x: Tensor) -> Tensor:
        s = x.to(torch.float64).sum()
        return x.to(torch.float64) / s if s != 0 else torch.zeros_like(x, dtype=torch.float64)

    score = share(mu_pos) * entropy.pow(alpha) - share(mu_neg)
    return score, entropy


def select_features(score: Tensor, *, quantile: float | None = 0.997, top_n: int | None = None) -> tuple[Tensor, float]:
    """Feature indices to keep, best first, and the score threshold they pass.

    `top_n` wins over `quantile`; the quantile rule keeps features scoring `>=` the quantile
    (so at least one feature is always kept).
    """
    order = torch.argsort(score, descending=True, stable=True)
    if top_n is not None:
        if top_n < 1:
            raise ValueError(f"top_n must be at least 1, got {top_n}")
        chosen = order[: min(top_n, len(order))]
        return chosen, float(score[chosen[-1]])
    if quantile is None or not 0.0 < quantile <= 1.0:
        raise ValueError(f"quantile must be in (0, 1], got {quantile}; or give top_n")
    threshold = float(torch.quantile(score.to(torch.float64), quantile))
    keep = score[order] >= threshold
    return order[keep], threshold


# -- the cache pass -------------------------------------------------------------------------------
def check_compatible(cache, sae) -> None:
    """Raise a clear error when the SAE cannot read the cache's activations (width or layer differ)."""
    if sae.cfg.d_in != cache.d_model:
        raise ValueError(
            f"the SAE expects d_in={sae.cfg.d_in} but the cache at {cache.path} holds {cache.d_model}-dim "
            f"activations ({cache.model_name}, layer {cache.layer}); use an SAE trained on this model and layer"
        )
    if sae.cfg.hook_layer is not None and sae.cfg.hook_layer != cache.layer:
        raise ValueError(
            f"the SAE was trained on layer {sae.cfg.hook_layer} but the cache at {cache.path} holds layer "
            f"{cache.layer}; use an SAE trained on layer {cache.layer}, or extract layer {sae.cfg.hook_layer}"
        )


def iter_encoded_shards(cache, sae, *, batch_size: int = 4096, device: str | torch.device = "cpu",
                        progress: bool = False, desc: str = "encode") -> Iterable[tuple[dict[str, Tensor], Iterable]]:
    """Yield `(shard, batches)` per shard, where `batches` yields `(start, latents [b, d_sae])`.

    Checks the invariant windows rely on: a prompt never spans two shards.
    """
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    bar = tqdm(total=cache.n_tokens, desc=desc, unit="tok", disable=not progress)
    last_seq = -1
    for shard in cache.iter_shards(("acts", "token_ids", "seq_ids", "positions")):
        seq = shard["seq_ids"]
        if len(seq):
            if int(seq[0]) <= last_seq:
                raise ValueError(f"prompt {int(seq[0])} is split across shards of {cache.path}: "
                                 "the cache is not in prompt order; extract it again")
            last_seq = int(seq[-1])

        def batches(acts: Tensor = shard["acts"]):
            for s in range(0, len(acts), batch_size):
                with torch.inference_mode():
                    latents = sae.encode(acts[s : s + batch_size].to(device=device, dtype=sae.W_enc.dtype))
                yield s, latents
                bar.update(len(latents))

        yield shard, batches()
    bar.close()


def score_features(
    cache,
    sae,
    vocab: Vocabulary | None = None,
    *,
    tokenizer=None,
    alpha: float = 0.7,
    left: int = 1,
    right: int = 2,
    quantile: float | None = 0.997,
    top_n: int | None = None,
    batch_size: int = 4096,
    device: str | torch.device = "cpu",
    unit_norm_decoder: bool = True,
    progress: bool = True,
    entropy_norm: EntropyNorm = "all",
) -> FeatureScores:
    """ReasonScore of every SAE feature over an `ActivationCache`, in one streaming pass.

    `vocab` defaults to the paper's official spellings (`Vocabulary.default()`); `tokenizer` to the
    tokenizer of the model named in the cache. `entropy_norm="all"` divides the entropy by log|R|
    over every listed group (the paper's), `"seen"` over the groups found in the data. `unit_norm_decoder=True`
    reads latents in unit-norm-decoder units (`SAE.unit_norm_view()`: the trained latents times
    ‖W_dec,i‖, TopK's choice unchanged); `unit_norm_decoder=False` reads the SAE's raw latents.
    """
    if not math.isfinite(alpha) or alpha < 0:
        raise ValueError(f"alpha must be a finite number >= 0, got {alpha}")
    if left < 0 or right < 0:
        raise ValueError(f"window sides must be >= 0, got left={left}, right={right}")
    if top_n is None and (quantile is None or not 0.0 < quantile <= 1.0):
        raise ValueError(f"quantile must be in (0, 1], got {quantile}; or give top_n")
    check_entropy_norm(entropy_norm)
    check_compatible(cache, sae)
    vocab = vocab or Vocabulary.default()
    if tokenizer is None and vocab.mode != "token_ids":
        tokenizer = cache.load_tokenizer()
    matcher = VocabMatcher(vocab, tokenizer)
    enc = (sae.unit_norm_view() if unit_norm_decoder else sae).to(device).eval()
    acc = ReasonScoreAccumulator(sae.cfg.d_sae, len(matcher.groups))
    for shard, batches in iter_encoded_shards(cache, enc, batch_size=batch_size, device=device,
                                              progress=progress, desc="ReasonScore"):
        window = shard_windows(matcher, shard, left, right)
        for s, latents in batches:
            acc.update(latents, window[s : s + len(latents)])
    settings = {
        "left": left, "right": right, "unit_norm_decoder": unit_norm_decoder, "vocabulary": vocab.model_dump(),
        "match": vocab.mode, "model": cache.model_name, "layer": cache.layer,
        "cache": str(cache.path), "sae": sae.cfg.model_dump(),
    }
    return acc.result(matcher.groups, alpha=alpha, quantile=quantile, top_n=top_n, settings=settings,
                      entropy_norm=entropy_norm)


def shard_windows(matcher: VocabMatcher, shard: dict[str, Tensor], left: int, right: int) -> Tensor:
    """Window mask `[n_tokens, n_groups]` of one shard (whole prompts, in (prompt, position) order)."""
    ids, seq, pos = (shard[k].numpy() for k in ("token_ids", "seq_ids", "positions"))
    first, last, group = matcher.find(ids, seq)
    return window_mask(first, last, group, seq, pos, len(matcher.groups), left, right)
