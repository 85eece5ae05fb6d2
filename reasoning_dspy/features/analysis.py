"""Feature analysis: the evidence a researcher reads before trusting a ReasonScore ranking.

For each top feature, one more streaming pass over the cache collects its max-activating contexts
(the N prompts where it fires hardest, each as a window of tokens with the activation on every
token), the tokens carrying most of its activation, its density and its max activation.
`write_analysis` saves `analysis.json`, `contexts.csv`, `top_tokens.csv` and two PNG plots
(`score_distribution.png`: all scores with the selection threshold; `top_features.png`: the top
features' scores split by the share of each reasoning word).
"""

from __future__ import annotations

import csv
import heapq
import io
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reasoning_dspy._io import atomic_write_figure, atomic_write_json, atomic_write_text
from reasoning_dspy.features.reasonscore import FeatureScores, check_compatible, iter_encoded_shards
from reasoning_dspy.features.vocab import token_pieces


@dataclass
class Context:
    """A window of one prompt around the token where a feature fired hardest."""

    prompt: int  # seq id of the prompt in the cache
    position: int  # position of the max-activating token in its prompt
    activation: float
    tokens: list[str]  # decoded pieces, leading spaces included
    activations: list[float]  # the feature's activation on each token of `tokens`
    center: int  # index of the max-activating token in `tokens`

    @property
    def text(self) -> str:
        """The window as text with the max-activating token in [[double brackets]]."""
        return "".join(f"[[{t}]]" if i == self.center else t for i, t in enumerate(self.tokens))


@dataclass
class FeatureReport:
    index: int
    rank: int
    score: float
    max_activation: float
    density: float
    top_words: list[tuple[str, float]]  # vocabulary groups by mean window activation
    top_tokens: list[dict[str, Any]] = field(default_factory=list)  # {token, total, mean, count}
    contexts: list[Context] = field(default_factory=list)


def analyze_features(
    cache,
    sae,
    scores: FeatureScores,
    *,
    tokenizer=None,
    features: list[int] | None = None,
    n_features: int = 10,
    n_contexts: int = 5,
    context_left: int = 8,
    context_right: int = 4,
    n_tokens: int = 5,
    batch_size: int = 4096,
    device: str = "cpu",
    progress: bool = True,
) -> list[FeatureReport]:
    """Reports for `features` (default: the `n_features` best by ReasonScore) from one cache pass.

    The SAE is read like in `score_features` (its unit-norm view, when the scores used one), so the
    activations shown are on the same scale as `scores.max_activation`.
    """
    check_compatible(cache, sae)
    if sae.cfg.d_sae != scores.d_sae:
        raise ValueError(f"the scores cover {scores.d_sae} features but the SAE has d_sae={sae.cfg.d_sae}: "
                         "analyze with the SAE the scores were computed with")
    features = list(features) if features is not None else scores.top(n_features)
    tokenizer = tokenizer if tokenizer is not None else cache.load_tokenizer()
    pieces = token_pieces(tokenizer)
    settings = scores.settings
    unit_norm = settings.get("unit_norm_decoder", settings.get("fold_decoder_norms", True))
    enc = sae.unit_norm_view() if unit_norm else sae
    enc = enc.to(device).eval()
    idx = torch.tensor(features, dtype=torch.long)
    n_vocab = len(pieces)
    token_total = torch.zeros(len(features), n_vocab, dtype=torch.float64)  # Σ activation per token id
    token_count = torch.zeros(n_vocab, dtype=torch.float64)
    best: list[list[tuple[float, int, Context]]] = [[] for _ in features]  # min-heaps of size n_contexts
    tiebreak = 0
    for shard, batches in iter_encoded_shards(cache, enc, batch_size=batch_size, device=device,
                                              progress=progress, desc="analyze"):
        acts = torch.cat([lat[:, idx.to(lat.device)].float().cpu() for _, lat in batches]) if len(
            shard["token_ids"]) else torch.zeros(0, len(features))  # [n, F]
        ids = shard["token_ids"].long()
        token_total.index_add_(1, ids, acts.T.to(torch.float64))
        token_count.index_add_(0, ids, torch.ones(len(ids), dtype=torch.float64))
        seq, pos = shard["seq_ids"].numpy(), shard["positions"].numpy()
        for f in range(len(features)):
            for rank_val, i in _top_per_prompt(acts[:, f], seq, n_contexts):
                heap = best[f]
                if len(heap) == n_contexts and rank_val <= heap[0][0]:
                    continue
                ctx = _context(i, acts[:, f], ids, seq, pos, pieces, context_left, context_right)
                tiebreak += 1
                (heapq.heapreplace if len(heap) == n_contexts else heapq.heappush)(heap, (rank_val, tiebreak, ctx))
    rank_of = {f: r for r, f in enumerate(scores.ranking.tolist(), start=1)}
    reports = []
    for j, f in enumerate(features):
        mean = token_total[j] / token_count.clamp_min(1)
        top = torch.argsort(token_total[j], descending=True)[:n_tokens].tolist()
        reports.append(FeatureReport(
            index=f, rank=rank_of[f], score=float(scores.reason_score[f]),
            max_activation=float(scores.max_activation[f]), density=float(scores.density[f]),
            top_words=scores.top_words(f, 5),
            top_tokens=[{"token": pieces[t], "total": float(token_total[j, t]), "mean": float(mean[t]),
                         "count": int(token_count[t])} for t in top if token_total[j, t] > 0],
            contexts=[c for _, _, c in sorted(best[j], key=lambda e: -e[0])],
        ))
    return reports


def top_contexts(values: torch.Tensor, token_ids: torch.Tensor, seq_ids: np.ndarray, positions: np.ndarray,
                 pieces: list[str], *, n: int = 5, left: int = 8, right: int = 4) -> list[Context]:
    """The `n` max-activating contexts of one feature, at most one per prompt, hardest first, from its
    activation on every token (`values [n_tokens]`, tokens in (prompt, position) order), as
    `analyze_features` collects them."""
    return [_context(i, values, token_ids, seq_ids, positions, pieces, left, right)
            for _, i in _top_per_prompt(values, seq_ids, n)]


def _top_per_prompt(values: torch.Tensor, seq: np.ndarray, n: int) -> list[tuple[float, int]]:
    """The `n` prompts with the largest max of `values`, as `(max, token index)`; at most one per prompt."""
    if len(values) == 0:
        return []
    k = min(len(values), n * 8)
    vals, order = values.topk(k)
    out, seen = [], set()
    for v, i in zip(vals.tolist(), order.tolist(), strict=True):
        if v <= 0 or seq[i] in seen:
            continue
        seen.add(seq[i])
        out.append((v, i))
        if len(out) == n:
            break
    return out


def _context(i: int, values, ids, seq, pos, pieces, left: int, right: int) -> Context:
    lo = i
    while lo > 0 and seq[lo - 1] == seq[i] and pos[lo - 1] >= pos[i] - left:
        lo -= 1
    hi = i
    while hi + 1 < len(seq) and seq[hi + 1] == seq[i] and pos[hi + 1] <= pos[i] + right:
        hi += 1
    return Context(prompt=int(seq[i]), position=int(pos[i]), activation=float(values[i]),
                   tokens=[pieces[t] for t in ids[lo : hi + 1].tolist()],
                   activations=[round(float(v), 6) for v in values[lo : hi + 1]], center=i - lo)


# -- outputs --------------------------------------------------------------------------------------
def write_analysis(folder: str | os.PathLike, scores: FeatureScores, reports: list[FeatureReport]) -> dict[str, Path]:
    """Write `analysis.json`, `contexts.csv`, `top_tokens.csv` and the two PNG plots into `folder`."""
    folder = Path(folder)
    atomic_write_json(folder / "analysis.json", {
        "settings": {k: v for k, v in scores.settings.items() if k not in ("vocabulary", "sae")},
        "threshold": scores.threshold,
        "features": [{**asdict(r), "top_words": [{"word": w, "mean_activation": a} for w, a in r.top_words],
                      "contexts": [{**asdict(c), "text": c.text} for c in r.contexts]} for r in reports],
    })
    atomic_write_text(folder / "contexts.csv", _csv(
        ["feature", "rank", "context", "prompt", "position", "activation", "text"],
        ([r.index, r.rank, k, c.prompt, c.position, f"{c.activation:.6g}", c.text]
         for r in reports for k, c in enumerate(r.contexts, start=1))))
    atomic_write_text(folder / "top_tokens.csv", _csv(
        ["feature", "rank", "token", "total", "mean", "count"],
        ([r.index, r.rank, t["token"], f"{t['total']:.6g}", f"{t['mean']:.6g}", t["count"]]
         for r in reports for t in r.top_tokens)))
    paths = {name: folder / name for name in ("analysis.json", "contexts.csv", "top_tokens.csv")}
    paths["score_distribution.png"] = plot_score_distribution(scores, folder / "score_distribution.png")
    paths["top_features.png"] = plot_top_features(scores, folder / "top_features.png",
                                                  n=max(len(reports), 1))
    return paths


def load_analysis(path: str | os.PathLike) -> list[FeatureReport]:
    """The reports `write_analysis` saved (`analysis.json`, or the folder holding it)."""
    path = Path(path)
    path = path / "analysis.json" if path.is_dir() else path
    try:
        data = json.loads(path.read_text())
        return [FeatureReport(**{**f, "top_words": [(w["word"], w["mean_activation"]) for w in f["top_words"]],
                                 "contexts": [Context(**{k: v for k, v in c.items() if k != "text"})
                                              for c in f["contexts"]]})
                for f in data["features"]]
    except FileNotFoundError:
        raise FileNotFoundError(f"no feature analysis at {path}: run `reasoning-dspy score` first") from None
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path} is not a feature analysis written by write_analysis: {e}") from None


def _csv(header: list[str], rows) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def plot_score_distribution(scores: FeatureScores, path: str | os.PathLike) -> Path:
    """Histogram of every feature's ReasonScore (log counts) with the selection threshold."""
    from matplotlib.figure import Figure  # no pyplot: leaves the user's backend alone

    s = scores.reason_score.double().numpy()
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    ax.hist(s, bins=min(100, max(10, len(s) // 20)), color="#4C72B0", log=True)
    ax.axvline(scores.threshold, color="#C44E52", linestyle="--",
               label=f"threshold {scores.threshold:.3g} ({len(scores.selected)} selected)")
    ax.set_xlabel("ReasonScore")
    ax.set_ylabel("features (log scale)")
    ax.set_title(f"ReasonScore of {len(s)} features")
    ax.legend(loc="upper right")
    return atomic_write_figure(path, fig, dpi=120)


def plot_top_features(scores: FeatureScores, path: str | os.PathLike, n: int = 10) -> Path:
    """Horizontal bars of the `n` best scores, each split by its words' shares `p_i(r_j)`."""
    import matplotlib
    from matplotlib.figure import Figure

    top = scores.top(n)
    mu = scores.mu_pos_by_group[top].double().clamp_min(0)  # [n, G]
    share = mu / mu.sum(dim=1, keepdim=True).clamp_min(1e-30)
    cmap = matplotlib.colormaps["tab10" if len(scores.groups) <= 10 else "tab20"]
    fig = Figure(figsize=(8, 0.45 * len(top) + 1.6))
    ax = fig.subplots()
    y = np.arange(len(top))[::-1]
    left = np.zeros(len(top))
    values = scores.reason_score[top].double().numpy()
    for j, g in enumerate(scores.groups):
        width = np.where(values > 0, values * share[:, j].numpy(), 0.0)
        if np.any(width > 0):
            ax.barh(y, width, left=left, color=cmap(j % cmap.N), label=g)
        left += width
    neg = values <= 0
    if neg.any():
        ax.barh(y[neg], values[neg], color="#999999", label="score ≤ 0")
    ax.set_yticks(y, [f"#{f}" for f in top])
    ax.set_xlabel("ReasonScore (bar split by each word's share of the window activation)")
    ax.set_title(f"Top {len(top)} features by ReasonScore")
    ax.axvline(0, color="black", linewidth=0.6)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, title="word")
    return atomic_write_figure(path, fig, dpi=120)
