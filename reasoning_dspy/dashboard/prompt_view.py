"""The Prompt page: a prompt goes in, the model answers, and the page shows which features fired where.

- the heatmap: the chosen features' activation on every token of the prompt and the answer;
- the top features of the answer (mean activation over its tokens) with ReasonScore, label and top words;
- the evidence: the answer tokens where the reasoning features fired hardest (`/v1/explain`'s rule).
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

import numpy as np

from reasoning_dspy.dashboard.backend import Answer, Backend, TokenValues
from reasoning_dspy.dashboard.tokens import piece_html
from reasoning_dspy.dashboard.workspace import DashboardError, Workspace

TOP_FEATURE_COLUMNS = ["feature", "label", "mean activation", "ReasonScore", "rank", "top words", "f_max"]


@dataclass
class PromptView:
    answer: Answer
    tokens: TokenValues
    explanation: dict[str, Any]  # /v1/explain of the answer
    top_rows: list[list[Any]]  # TOP_FEATURE_COLUMNS
    scales: list[float]  # per chosen feature: the activation that gets full colour (f_max, else the row max)


def default_features(ws: Workspace, n: int = 4) -> list[int]:
    """What the heatmap shows when no features are given: the reasoning features (top ReasonScore)."""
    return list(ws.served.reasoning_features[:n])


def run_prompt(backend: Backend, ws: Workspace, prompt: str, features_text: str = "", *, max_tokens: int = 64,
               n_top: int = 10, n_evidence: int = 10) -> PromptView:
    """Generate an answer to `prompt` (unsteered) and read its features."""
    if not (prompt or "").strip():
        raise DashboardError("the prompt is empty: type a question or some text first")
    if not 1 <= int(max_tokens) <= 1024:
        raise DashboardError(f"answer length must be 1..1024 tokens, got {max_tokens}")
    chosen = ws.parse_features(features_text)
    answer = backend.generate([(prompt, None)], int(max_tokens))[0]
    reasoning = list(ws.served.reasoning_features)
    why = backend.explain(answer, reasoning, top_k=min(n_top, ws.d_sae), n_evidence=n_evidence)
    features = chosen or default_features(ws) or [t["index"] for t in why["top_features"][:4]]
    tokens = backend.token_values(answer, features)
    rows = []
    for item in why["top_features"][:n_top]:
        info = ws.describe(item["index"])
        rows.append([item["index"], info["label"], round(item["mean_activation"], 4),
                     None if info["score"] is None else round(info["score"], 6), info["rank"],
                     ", ".join(info["top_words"]), None if info["max_activation"] is None else round(info["max_activation"], 3)])
    scales = []
    for j, f in enumerate(features):
        fmax = ws.served.max_activation[f] if ws.served.max_activation is not None else 0.0
        top = float(tokens.values[:, j].max()) if len(tokens.values) else 0.0
        scales.append(float(fmax) if float(fmax) > 0 else max(top, 1e-12))
    return PromptView(answer, tokens, why, rows, scales)


def heatmap_html(view: PromptView, ws: Workspace) -> str:
    """One row per chosen feature; each token shaded by its activation over the feature's scale.

    Every token carries `data-feature`, `data-pos` (index over the shown tokens), `data-answer` and
    `data-value` (the activation, 6 significant digits), so the numbers can be read back exactly."""
    tv = view.tokens
    evidence = {(e["feature"], e["position"]) for e in view.explanation.get("evidence", [])}
    out = ['<div class="rd-heatmap">']
    for j, f in enumerate(tv.features):
        info = ws.describe(f)
        scale = view.scales[j]
        vals = tv.values[:, j] if len(tv.values) else np.zeros(0)
        fired = int((vals > 0).sum())
        out.append(f'<div class="rd-row" data-feature="{f}"><div class="rd-row-head">#{f} · {html.escape(info["label"])} '
                   f'<span class="rd-dim">colour scale 0–{scale:.3g}; fired on {fired} of {len(vals)} tokens</span></div>'
                   '<div class="rd-tokens">')
        for i, (piece, v) in enumerate(zip(tv.pieces, vals, strict=True)):
            if i == tv.answer_start:
                out.append('<span class="rd-sep" title="the answer starts here">▌answer▐</span>')
            alpha = min(1.0, max(0.0, float(v) / scale)) if scale > 0 else 0.0
            answer_pos = i - tv.answer_start
            cls = "rd-tok" + (" rd-evidence" if i >= tv.answer_start and (f, answer_pos) in evidence else "")
            out.append(f'<span class="{cls}" data-feature="{f}" data-pos="{i}" data-answer="{int(i >= tv.answer_start)}" '
                       f'data-value="{float(v):.6g}" title="#{f} = {float(v):.4g}" '
                       f'style="background: rgba(234, 88, 12, {alpha:.3f})">{piece_html(piece)}</span>')
        out.append("</div></div>")
    if not tv.features:
        out.append("<p>No features to show: this SAE has no ReasonScore table and the answer fired none.</p>")
    out.append("</div>")
    return "".join(out)


def evidence_html(view: PromptView, ws: Workspace) -> str:
    """The evidence tokens: where the reasoning features fired hardest in the answer, with context."""
    why = view.explanation
    items = why.get("evidence", [])
    act = why.get("reasoning_activation")
    head = (f"<p><b>Reasoning activation over the answer's own tokens</b>: {act:.4g} (mean of the reasoning features "
            f"{', '.join('#' + str(f) for f in ws.served.reasoning_features)} over its {why.get('n_tokens', 0)} tokens, "
            "each read at its position, as <code>/v1/explain</code> reports it)</p>"
            if act is not None else "<p>This SAE has no reasoning features (no ReasonScore table).</p>")
    if not items:
        return head + "<p>No reasoning feature fired on the answer.</p>"
    rows = "".join(
        f"<tr><td>#{e['feature']}</td><td>{html.escape(e['label'])}</td><td><mark class='rd-evidence'>"
        f"{piece_html(e['token'])}</mark></td><td>{e['activation']:.4g}</td><td class='rd-context'>"
        f"{_context(e['context'])}</td></tr>" for e in items)
    return (head + "<table class='rd-table'><tr><th>feature</th><th>label</th><th>token</th><th>activation</th>"
            f"<th>context</th></tr>{rows}</table>")


def _context(text: str) -> str:
    """`/v1/explain`'s context window with the token in [[brackets]] as HTML with it highlighted."""
    escaped = html.escape(text.replace("\n", "↵"))
    return escaped.replace("[[", "<mark class='rd-evidence'>").replace("]]", "</mark>")
