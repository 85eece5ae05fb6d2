"""Reading the residual stream: a hook records the output of one decoder layer and stops the
forward right there (layers above it, the final norm and the LM head are wasted work)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext

import torch
from torch import Tensor, nn

from reasoning_dspy.models import ModelSpec, layer_output
from reasoning_dspy.models import model_spec as get_model_spec


class _StopForward(Exception):
    """Raised from the hook to skip every layer after the one we need."""


@contextmanager
def stop_after(layer_module: nn.Module) -> Iterator[dict]:
    """Within the block, a forward records `layer_module`'s output in `box["acts"]` and stops there.

    The hook is removed on exit, also after an exception.
    """
    box: dict = {}

    def hook(_module, _inputs, output):
        box["acts"] = layer_output(output)
        raise _StopForward

    handle = layer_module.register_forward_hook(hook)
    try:
        yield box
    finally:
        handle.remove()


@torch.inference_mode()
def residual_at(
    model: nn.Module,
    layer: int,
    input_ids: Tensor,
    attention_mask: Tensor | None = None,
    *,
    model_spec: ModelSpec | None = None,
    hooks: AbstractContextManager | None = None,
) -> Tensor:
    """Residual stream after decoder layer `layer`: `[batch, seq, d_model]`, equal to
    `hidden_states[layer + 1]` of a full forward (for the last layer: before the final norm).

    `hooks` (e.g. a `Steerer`) is entered once the recording hook is in place, so hooks on earlier
    layers act on the forward while the residual is read before any hook of its own at `layer`."""
    model_spec = model_spec or get_model_spec(model)
    with stop_after(model_spec.layer(layer)) as box, hooks or nullcontext():
        try:
            model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        except _StopForward:
            pass
    if "acts" not in box:
        raise RuntimeError(f"layer {layer} was never reached during the forward pass")
    return box["acts"]


def pad_right(rows: list[list[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask


#: A token whose residual norm exceeds this multiple of the batch's median is an attention sink.
SINK_NORM_RATIO = 10.0


def attention_sinks(acts: Tensor, keep: Tensor) -> Tensor:
    """`[B, T]` True where a token's residual norm is over `SINK_NORM_RATIO` times the median of the
    batch's kept tokens: the "massive activations" of attention sinks. Models without a BOS make
    their first token (sometimes the first few) a sink: on SmolLM2 at layer 18 they reach norms of
    3,000-25,000 against a median of ≈ 200, and 1 token in 100 held 99 % of the activation variance.
    Left in, they dominate SAE training, make FVU meaningless (0.0005) and set f_max for features
    that otherwise fire on ordinary text. No ordinary token comes near the ratio (p99.9 ≈ 1.3×)."""
    norms = acts.float().norm(dim=-1)
    kept = norms[keep.to(norms.device)]
    if kept.numel() == 0:
        return torch.zeros_like(keep)
    return (norms > SINK_NORM_RATIO * kept.median()).to(keep.device)


def iter_residuals(
    model: nn.Module,
    tokenizer,
    prompts: Sequence[str],
    layer: int,
    *,
    start: int = 0,
    batch_size: int = 16,
    max_length: int = 256,
    keep_special_tokens: bool = False,
    model_spec: ModelSpec | None = None,
) -> Iterator[tuple[int, int, dict[str, Tensor]]]:
    """Per batch of prompts from index `start` on: `(batch_start, batch_end, tokens)`, where `tokens`
    holds the kept tokens' `acts [n, d_model]` (model dtype and device), `token_ids`, `seq_ids`
    (prompt index) and `positions`. The one place that decides which tokens count: right padding
    (each row keeps its own positions), pads never kept, BOS/EOS/pad and attention sinks (see
    `attention_sinks`) dropped unless `keep_special_tokens`. The cache writer and f_max estimation
    both read activations through it."""
    model_spec = model_spec or get_model_spec(model)
    special = torch.tensor(
        sorted({tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id} - {None}), dtype=torch.long
    )
    device = next(model.parameters()).device
    for s in range(start, len(prompts), batch_size):
        rows = tokenizer(list(prompts[s : s + batch_size]), truncation=True, max_length=max_length)["input_ids"]
        ids, mask = pad_right(rows, tokenizer.pad_token_id)
        acts = residual_at(model, layer, ids.to(device), mask.to(device), model_spec=model_spec)  # [B, T, d]
        keep = mask.bool()
        if not keep_special_tokens:
            keep &= ~torch.isin(ids, special)
            keep &= ~attention_sinks(acts, keep)
        b_idx, pos = keep.nonzero(as_tuple=True)
        yield s, min(s + batch_size, len(prompts)), {
            "acts": acts[keep.to(acts.device)],
            "token_ids": ids[keep].to(torch.int32),
            "seq_ids": (b_idx + s).to(torch.int64),
            "positions": pos.to(torch.int32),
        }
