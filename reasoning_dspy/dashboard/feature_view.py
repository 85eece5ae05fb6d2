"""The Feature page, in SAEDashboard/Neuronpedia's layout: for one SAE feature,

- its summary: label, ReasonScore and rank, f_max, the reasoning words whose windows it fires on;
- the activation density: the share of corpus tokens it fires on, and a histogram of its non-zero
  activations;
- the max-activating contexts: the corpus windows where it fires hardest (one per text), every
  token shaded by its activation;
- the tokens it fires on: corpus tokens by total activation, with the mean per occurrence;
- the logit effects: the tokens its decoder direction promotes and suppresses when read through the
  final norm's gain and the unembedding, `(W_dec,i ⊙ g) · W_U` (the norm's division by ‖x‖ is
  left out, as SAEDashboard and Neuronpedia do), so it says what writing the feature does to the
  next-token logits.

The corpus is the bundled reasoning traces and prompts (`corpus.Corpus`); activations are in f_max
units (the SAE's unit-norm view).
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from reasoning_dspy.dashboard.tokens import shown_piece
from reasoning_dspy.dashboard.workspace import Workspace
from reasoning_dspy.features.analysis import Context, top_contexts

TOKEN_COLUMNS = ["token", "total activation", "mean when fired", "fired / occurrences"]
LOGIT_COLUMNS = ["token", "logit effect"]
_NORM_NAMES = ("norm", "ln_f", "final_layer_norm", "final_layernorm", "norm_f")


@dataclass
class FeatureView:
    index: int
    info: dict[str, Any]  # Workspace.describe
    n_tokens: int  # corpus tokens
    n_fired: int
    corpus_max: float
    histogram: tuple[np.ndarray, np.ndarray]  # (counts, bin edges) of the non-zero activations
    contexts: list[Context]
    top_tokens: list[list[Any]]  # TOKEN_COLUMNS
    promoted: list[list[Any]]  # LOGIT_COLUMNS, strongest first
    suppressed: list[list[Any]]

    @property
    def density(self) -> float:
        return self.n_fired / self.n_tokens if self.n_tokens else 0.0


def unembedding(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`(W_U [vocab, d_model], g [d_model] or None)`: the output embedding and the final norm's gain."""
    w_u = model.get_output_embeddings().weight
    base = getattr(model, "base_model", model)
    for holder in (base, getattr(base, "model", None), getattr(model, "model", None)):
        for name in _NORM_NAMES:
            norm = getattr(holder, name, None) if holder is not None else None
            weight = getattr(norm, "weight", None)
            if isinstance(weight, torch.Tensor) and weight.ndim == 1 and weight.shape[0] == w_u.shape[1]:
                return w_u, weight
    return w_u, None


@torch.inference_mode()
def logit_effects(model: nn.Module, direction: torch.Tensor, k: int = 10) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """The `k` tokens a residual direction `[d_model]` promotes most and suppresses most, with their logit
    effect `(direction ⊙ g) · W_U,t` (g: the final norm's gain, when the model has one)."""
    w_u, gain = unembedding(model)
    d = direction.to(w_u.device, torch.float32)
    if gain is not None:
        d = d * gain.float()
    effect = w_u.float() @ d  # [vocab]
    k = min(k, effect.numel())
    up, down = effect.topk(k), (-effect).topk(k)
    return ([(int(i), float(v)) for v, i in zip(up.values, up.indices, strict=True)],
            [(int(i), -float(v)) for v, i in zip(down.values, down.indices, strict=True)])


def feature_view(ws: Workspace, feature: Any, *, n_contexts: int = 8, n_tokens: int = 12, n_logits: int = 10,
                 progress: Any = None) -> FeatureView:
    """Everything the Feature page shows for `feature` (an index from the UI, checked)."""
    f = ws.check_feature(feature)
    corpus, pieces = ws.corpus, ws.pieces
    col = corpus.column(ws.view, f, key=ws.sae_key, progress=progress)  # [n_tokens]
    fired = col > 0
    n_fired = int(fired.sum())
    top = float(col.max()) if len(col) else 0.0
    nonzero = col[fired].numpy()
    counts, edges = np.histogram(nonzero, bins=30, range=(0.0, top if top > 0 else 1.0))
    contexts = top_contexts(col, corpus.token_ids, corpus.seq_ids, corpus.positions, pieces, n=n_contexts,
                            left=10, right=5)
    vocab = len(pieces)
    ids = corpus.token_ids
    total = torch.bincount(ids, weights=col.double(), minlength=vocab)
    fired_count = torch.bincount(ids[fired], minlength=vocab)
    occurrences = torch.bincount(ids, minlength=vocab)
    rows = []
    for t in torch.argsort(total, descending=True)[:n_tokens].tolist():
        if total[t] <= 0:
            break
        rows.append([shown_piece(pieces[t]), round(float(total[t]), 4), round(float(total[t] / max(int(fired_count[t]), 1)), 4),
                     f"{int(fired_count[t])} / {int(occurrences[t])}"])
    up, down = logit_effects(ws.loaded.model, ws.view.W_dec[f].detach(), n_logits)
    return FeatureView(f, ws.describe(f), corpus.n_tokens, n_fired, top, (counts, edges), contexts, rows,
                       [[shown_piece(pieces[i]) if i < vocab else f"<{i}>", round(v, 4)] for i, v in up],
                       [[shown_piece(pieces[i]) if i < vocab else f"<{i}>", round(v, 4)] for i, v in down])


def summary_markdown(view: FeatureView, ws: Workspace) -> str:
    info = view.info
    score = "—" if info["score"] is None else f"{info['score']:.6g} (rank {info['rank']} of {ws.d_sae})"
    fmax = "—" if info["max_activation"] is None else f"{info['max_activation']:.4g}"
    words = ", ".join(info["top_words"]) or "—"
    return (f"### Feature #{view.index}: {info['label']}\n"
            f"ReasonScore **{score}** · f_max **{fmax}** · reasoning words it fires around: **{words}** · "
            f"kind: {info['kind'] or '—'}\n\n"
            f"Activation density: fires on **{view.n_fired}** of {view.n_tokens} corpus tokens "
            f"(**{100 * view.density:.3g}%**), largest activation there {view.corpus_max:.4g}. "
            f"SAE {ws.served.sae_name!r}, layer {ws.layer}, {ws.d_sae} features.")


def histogram_figure(view: FeatureView) -> Any:
    from matplotlib.figure import Figure

    counts, edges = view.histogram
    fig = Figure(figsize=(6.5, 2.8))
    ax = fig.subplots()
    if view.n_fired:
        ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color="#ea580c", edgecolor="white")
    else:
        ax.text(0.5, 0.5, "never fires on the corpus", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("activation (non-zero only)")
    ax.set_ylabel("corpus tokens")
    ax.set_title(f"activation density: {100 * view.density:.3g}% of {view.n_tokens} tokens")
    fig.tight_layout()
    return fig


def contexts_html(view: FeatureView) -> str:
    """The max-activating contexts, every token shaded by the feature's activation on it."""
    if not view.contexts:
        return "<p>The feature never fires on the corpus.</p>"
    top = max(c.activation for c in view.contexts) or 1.0
    rows = []
    for c in view.contexts:
        toks = []
        for i, (piece, v) in enumerate(zip(c.tokens, c.activations, strict=True)):
            alpha = min(1.0, max(0.0, v / top))
            shown = html.escape(piece.replace("\n", "↵"))
            cls = "rd-tok rd-center" if i == c.center else "rd-tok"
            toks.append(f'<span class="{cls}" title="{v:.4g}" style="background: rgba(234, 88, 12, {alpha:.3f})">'
                        f"{shown}</span>")
        rows.append(f"<tr><td>{c.activation:.4g}</td><td>text {c.prompt}, token {c.position}</td>"
                    f"<td class='rd-context'>{''.join(toks)}</td></tr>")
    return ("<table class='rd-table'><tr><th>activation</th><th>where</th><th>context</th></tr>"
            + "".join(rows) + "</table>")
