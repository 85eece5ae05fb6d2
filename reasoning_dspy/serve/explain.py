"""`/v1/explain`: which SAE features fired on which tokens of a text or of a previous completion.

Each token is read at its own position (the residual after the model has read it, at the SAE's
layer, before any steering at that layer is added), as ReasonScore and the feature analysis read
tokens. A completion is read in its prompt's context with the steering that generated it, so
steering at earlier layers acts as it did then; a text is read on its own after BOS.

The answer holds, per token, its strongest features with labels; the *reasoning activation* (the
mean activation of the served reasoning features — the top ReasonScore features — over the tokens,
`features.activation.feature_set_activation`); and the *evidence*: the tokens where those features
fired hardest, each with a short context.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from reasoning_dspy.features.activation import feature_set_activation
from reasoning_dspy.serve.admission import QueueFullError
from reasoning_dspy.serve.bridge import EngineBridge
from reasoning_dspy.serve.catalog import ServedModel
from reasoning_dspy.serve.errors import APIError, bad_request, queue_full
from reasoning_dspy.serve.generation import check_text_size
from reasoning_dspy.serve.schemas import ExplainRequest
from reasoning_dspy.steering import SteeringSpec

if TYPE_CHECKING:
    from reasoning_dspy.serve.state import ServerState


def token_latents(bridge: EngineBridge, ids: Sequence[int], start: int, spec: SteeringSpec | None) -> torch.Tensor:
    """SAE latents `[len(ids) - start, d_sae]` (unit-norm-decoder units, those of f_max) of the tokens
    `ids[start:]`, read in the context of `ids[:start]` with `spec` applied. Blocks until the engine's
    worker has run it (between batches, like every forward)."""
    return bridge.engine.token_latents(ids, start, spec)


def explain(served: ServedModel, bridge: EngineBridge, ids: Sequence[int], start: int, *,
            spec: SteeringSpec | None = None, features: Sequence[int] | None = None, top_k: int = 5,
            n_evidence: int = 10, context: int = 4) -> dict[str, Any]:
    """The explanation of tokens `ids[start:]` (JSON-ready; see the module docstring)."""
    latents = token_latents(bridge, ids, start, spec)  # [T, d_sae]
    pieces = bridge.pieces(ids)
    positions = list(range(start, len(ids)))
    labels = served.labels
    k = min(top_k, latents.shape[-1])
    tokens = []
    for t, pos in enumerate(positions):
        vals, idx = latents[t].topk(k)
        tokens.append({"position": pos - start, "token": pieces[pos], "top_features": [
            {"index": int(i), "activation": round(float(v), 6), "label": labels.label(int(i))}
            for v, i in zip(vals.tolist(), idx.tolist(), strict=True) if v > 0]})
    mean = latents.mean(0) if len(positions) else torch.zeros(latents.shape[-1])
    vals, idx = mean.topk(k)
    reasoning = list(served.reasoning_features if features is None else features)
    out: dict[str, Any] = {
        "object": "explanation", "model": served.name, "n_tokens": len(positions),
        "sae": {"name": served.sae_name, "layer": served.sae.cfg.hook_layer, "d_sae": served.sae.d_sae},
        "reasoning_activation": feature_set_activation(latents, reasoning) if reasoning and len(positions) else None,
        "reasoning_features": [], "evidence": [],
        "top_features": [{"index": int(i), "mean_activation": round(float(v), 6), "label": labels.label(int(i))}
                         for v, i in zip(vals.tolist(), idx.tolist(), strict=True) if v > 0],
        "tokens": tokens,
    }
    evidence = []
    for f in reasoning:
        col = latents[:, f] if len(positions) else torch.zeros(0)
        fired = (col > 0).nonzero().flatten().tolist()
        out["reasoning_features"].append({**labels.describe(f), "mean_activation": round(float(col.mean()), 6)
                                          if len(col) else 0.0, "fired_on": len(fired)})
        evidence += [(float(col[t]), f, t) for t in fired]
    for act, f, t in sorted(evidence, key=lambda e: (-e[0], e[1], e[2]))[:n_evidence]:
        lo, hi = max(start, positions[t] - context), min(len(ids), positions[t] + context // 2 + 1)
        window = "".join(f"[[{pieces[p]}]]" if p == positions[t] else pieces[p] for p in range(lo, hi))
        out["evidence"].append({"feature": f, "label": labels.label(f), "position": t, "token": pieces[positions[t]],
                                "activation": round(act, 6), "context": window})
    return out


async def explain_request(state: ServerState, req: ExplainRequest) -> dict[str, Any]:
    """`/v1/explain`: find the tokens (a stored completion or a text), check limits, explain them."""
    served, bridge = state.served, state.bridge
    if served.sae is None:
        raise bad_request(f"{served.name} is served without an SAE, so there are no features to explain; serve it "
                          "with --sae", code="explain_unavailable")
    if (req.text is None) == (req.completion_id is None):
        raise bad_request("give exactly one of text and completion_id", code="invalid_request", param="text")
    if req.features is not None:
        bad = [f for f in req.features if not 0 <= f < served.sae.d_sae]
        if bad:
            raise APIError(400, f"features {bad[:5]} are out of range: the SAE has {served.sae.d_sae} features "
                                f"(valid 0..{served.sae.d_sae - 1})", code="feature_out_of_range", param="features")
    source: dict[str, Any]
    if req.completion_id is not None:
        record = state.store.get(req.completion_id)
        if record is None:
            raise APIError(404, f"no completion {req.completion_id!r} here: only the last "
                                f"{state.config.completion_store} completions of this server process are kept; "
                                "explain its text instead", code="completion_not_found", param="completion_id")
        if req.choice >= len(record.outputs):
            raise bad_request(f"choice {req.choice} does not exist: the completion has {len(record.outputs)}",
                              code="invalid_request", param="choice")
        prompt = record.prompts[req.choice]
        ids, start, spec = prompt + record.outputs[req.choice], len(prompt), record.steering
        source = {"type": "completion", "id": record.id, "choice": req.choice, "text": record.texts[req.choice]}
    else:
        limits = [x for x in (served.context_length, state.config.max_prompt_tokens) if x]
        check_text_size([req.text], min(limits) if limits else None, state.token_chars, "text")
        ids = await asyncio.to_thread(bridge.text_prompt, req.text or " ")
        special = bridge.special_ids
        start = next((i for i, t in enumerate(ids) if t not in special), len(ids))  # BOS: context only
        spec, source = None, {"type": "text"}
    limit = served.context_length  # a stored completion fitted the context when it was generated
    if req.text is not None and state.config.max_prompt_tokens:
        limit = min(limit or state.config.max_prompt_tokens, state.config.max_prompt_tokens)
    if limit is not None and len(ids) > limit:
        raise APIError(400, f"the text to explain is {len(ids)} tokens (with its prompt) but this server reads at "
                            f"most {limit}", code="context_length_exceeded", param="text")
    try:
        state.admission.acquire(1)
    except QueueFullError:
        raise queue_full(state.admission.capacity, state.config.retry_after_s) from None
    try:
        out = await asyncio.to_thread(explain, served, bridge, ids, start, spec=spec, features=req.features,
                                      top_k=req.top_k, n_evidence=req.n_evidence)
    finally:
        state.admission.release(1)
    out["source"] = source
    if req.completion_id is not None:
        out["steering"] = record.steering_echo
    return out
