"""The forward hooks that add each row's steering delta (`Steerer`, live only inside `with`), record
how far they moved the residual, and capture SAE latents in the same forward."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from reasoning_dspy.features.activation import ActivationReport
from reasoning_dspy.models import ModelSpec, layer_output, replace_layer_output
from reasoning_dspy.models import model_spec as get_model_spec
from reasoning_dspy.sae import SAE
from reasoning_dspy.steering.fmax import load_max_activation
from reasoning_dspy.steering.resolving import RowSteering, resolve
from reasoning_dspy.steering.spec import SteeringError, SteeringSpec


@dataclass
class CaptureConfig:
    """Record SAE latents of the positions that predict generated tokens, in the same forward."""

    sae: SAE  # its unit-norm view (SAE.unit_norm_view()), the units of f_max
    layer: int
    k: int = 10  # k of the top-k |f| mean (features.activation.topk_activation_mean)
    top: int = 32  # strongest latents kept per token, for "top features"


@dataclass
class _CaptureBuffer:
    steps_topk: list[Tensor] = field(default_factory=list)  # each [B, k]
    steps_feat: list[Tensor] = field(default_factory=list)  # each [B]
    steps_top_vals: list[Tensor] = field(default_factory=list)  # each [B, top]
    steps_top_idx: list[Tensor] = field(default_factory=list)  # each [B, top]


@dataclass
class Perturbation:
    """How far steering moved one row's residual, averaged over the positions that predicted its
    generated tokens (the prompt's last position and each decode step, the final EOS included)."""

    n_tokens: int
    norm: float  # mean ‖δ_t‖, δ_t = steered − unsteered residual at the steered layer
    ratio: float  # mean ‖δ_t‖ / ‖x_t‖

    def to_dict(self) -> dict:
        return {"n_tokens": self.n_tokens, "norm": self.norm, "ratio": self.ratio}


# -- hooks ----------------------------------------------------------------------------------

@dataclass
class _LayerPlan:
    add: Tensor | None = None  # [B, d] or None when no row adds anything
    relative: Tensor | None = None  # [B, d] residual-units directions of norm α, times ‖x_t‖ per token
    clamp_idx: Tensor | None = None  # [m] union of clamped features
    clamp_targets: Tensor | None = None  # [B, m]
    clamp_mask: Tensor | None = None  # [B, m] 1 where the row clamps that feature
    window: Tensor | None = None  # [B] generated tokens each row is steered for (inf: no end); None: all positions
    skip: Tensor | None = None  # [B] generated tokens left unsteered before each row's window opens


class Steerer:
    """Forward hooks that steer each batch row by its own spec; they exist only inside `with`.

    >>> with Steerer(model, [row, None], sae=view) as steerer:   # row 0 steered, row 1 not
    ...     model.generate(ids, attention_mask=mask, max_new_tokens=32)

    `rows` holds one `RowSteering` (or None) per batch row. A row with a token window
    (`RowSteering.tokens`, after `RowSteering.skip` unsteered tokens) is steered only at the positions
    that predict generated tokens `skip` to `skip + tokens - 1`, not on the rest of its prompt nor
    after. A row that opens its window after `RowSteering.skip_lines` lines waits, unsteered, until
    the caller reports (`saw_tokens`) the token that ends its last skipped line; that needs
    `line_ends` (`steering.lines.line_ends(tokenizer)`). `first_generated` is the sequence position that
    predicts the first generated token; by default the last position of the first forward, the
    prompt's, as in `generate` (a teacher-forced forward over prompt and answer passes it).

    With `capture`, the hook also encodes the
    (pre-steering) residual at the last position of every forward — the positions that predict the
    generated tokens — and `steerer.reports(lengths)` summarises them per row afterwards. At those
    positions it always records the size of the steering delta: `steerer.perturbations(lengths)`.
    """

    def __init__(
        self,
        model: nn.Module,
        rows: Sequence[RowSteering | None],
        *,
        sae: SAE | None = None,
        capture: CaptureConfig | None = None,
        capture_features: Sequence[Sequence[int]] | None = None,
        model_spec: ModelSpec | None = None,
        first_generated: int | None = None,
        line_ends: dict[int, int] | None = None,
    ):
        self.model = model
        self.model_spec = model_spec or get_model_spec(model)
        self.rows = list(rows)
        self.sae = sae
        self.capture = capture
        self._handles: list[Any] = []
        self._buffer = _CaptureBuffer()
        self._moved: dict[int, list[tuple[Tensor, Tensor]]] = {}  # layer -> per forward (‖δ‖ [B], ‖x‖ [B])
        self._seen: dict[int, int] = {}  # layer -> positions its forwards have covered so far
        self.first_generated = first_generated
        self.line_ends = line_ends
        self._lines = [0] * len(self.rows)  # lines each row has ended so far (rows with skip_lines)
        waiting = [r.skip_lines for r in self.rows if r is not None and r.skip_lines]
        if waiting and line_ends is None:
            raise SteeringError(
                "skip_lines opens the window once the model has ended that many lines, so the steerer must see "
                "the tokens as they are chosen: steer through SteeredEngine / generate_rows, or pass line_ends= "
                "and call saw_tokens after every step"
            )
        self._feat_idx, self._feat_w = self._feature_weights(capture_features)
        self._plans = self._build_plans()
        needs_sae = any(p.clamp_idx is not None for p in self._plans.values())
        if needs_sae and sae is None:
            raise SteeringError("clamp steering needs the SAE: pass sae= to Steerer")

    def _feature_weights(self, per_row: Sequence[Sequence[int]] | None) -> tuple[Tensor | None, Tensor | None]:
        """Union of every row's reasoning features `[u]` and per-row averaging weights `[B, u]`."""
        if self.capture is None or not per_row or not any(per_row):
            return None, None
        if len(per_row) != len(self.rows):
            raise SteeringError(f"capture_features has {len(per_row)} entries for {len(self.rows)} rows")
        union = sorted({int(f) for feats in per_row for f in feats})
        bad = [f for f in union if not 0 <= f < self.capture.sae.d_sae]
        if bad:
            raise SteeringError(f"reasoning features {bad} are out of range for an SAE with d_sae={self.capture.sae.d_sae}")
        pos = {f: j for j, f in enumerate(union)}
        weights = torch.zeros(len(per_row), len(union))
        for b, feats in enumerate(per_row):
            for f in set(int(x) for x in feats):
                weights[b, pos[f]] = 1.0 / len(set(feats))
        return torch.tensor(union, dtype=torch.long), weights

    def _build_plans(self) -> dict[int, _LayerPlan]:
        batch, d = len(self.rows), self.model_spec.d_model
        plans: dict[int, _LayerPlan] = {}
        for b, row in enumerate(self.rows):
            if row is None:
                continue
            plan = plans.setdefault(row.layer, _LayerPlan())
            if row.add is not None:
                if plan.add is None:
                    plan.add = torch.zeros(batch, d)
                plan.add[b] += row.add
            if row.add_relative is not None:
                if plan.relative is None:
                    plan.relative = torch.zeros(batch, d)
                plan.relative[b] += row.add_relative
        for layer, plan in plans.items():
            mine = [r if r is not None and r.layer == layer else None for r in self.rows]
            if any(r is not None and not r.steers_prompt for r in mine):
                # a row steering every position, the prompt's included, opens its window at -inf; one that
                # waits for its first lines at +inf, until `saw_tokens` sees them ended
                plan.skip = torch.tensor([float("-inf") if r is None or r.steers_prompt else
                                          float("inf") if r.skip_lines else r.skip for r in mine])
                plan.window = torch.tensor([float("inf") if r is None or r.tokens is None else r.tokens for r in mine])
            clamped = [(b, r) for b, r in enumerate(self.rows)
                       if r is not None and r.layer == layer and r.clamp_features is not None]
            if not clamped:
                continue
            union = sorted({int(i) for _, r in clamped for i in r.clamp_features})
            pos = {f: j for j, f in enumerate(union)}
            plan.clamp_idx = torch.tensor(union, dtype=torch.long)
            plan.clamp_targets = torch.zeros(batch, len(union))
            plan.clamp_mask = torch.zeros(batch, len(union))
            for b, r in clamped:
                for f, t in zip(r.clamp_features.tolist(), r.clamp_targets.tolist(), strict=True):
                    plan.clamp_targets[b, pos[f]] = t
                    plan.clamp_mask[b, pos[f]] = 1.0
        if self.capture is not None:
            plans.setdefault(self.model_spec.check_layer(self.capture.layer), _LayerPlan())
        return plans

    def saw_tokens(self, step: int, tokens: Sequence[int]) -> None:
        """Generated token `step` of each row (`tokens`, in batch order) was chosen. A row whose
        `skip_lines`-th line this token ends opens its window at the next position, the one that
        predicts token `step + 1`."""
        for b, row in enumerate(self.rows):
            if row is None or not row.skip_lines or self._lines[b] >= row.skip_lines:
                continue
            self._lines[b] += self.line_ends.get(int(tokens[b]), 0)
            if self._lines[b] >= row.skip_lines:
                self._plans[row.layer].skip[b] = step + 1

    # -- context manager --------------------------------------------------------------------
    def __enter__(self) -> Steerer:
        try:
            for layer, plan in self._plans.items():
                device = next(self.model_spec.layer(layer).parameters()).device
                plan = _to_device(plan, device)
                self._plans[layer] = plan
                self._handles.append(self.model_spec.layer(layer).register_forward_hook(self._make_hook(layer, plan)))
        except BaseException:
            self._remove()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._remove()

    def _remove(self) -> None:
        while self._handles:
            self._handles.pop().remove()

    @property
    def active(self) -> bool:
        return bool(self._handles)

    # -- the hook ---------------------------------------------------------------------------
    def _make_hook(self, layer: int, plan: _LayerPlan):
        capture = self.capture if self.capture is not None and self.capture.layer % self.model_spec.n_layers == layer else None
        sae = self.sae

        def hook(_module: nn.Module, _inputs: Any, output: Any) -> Any:
            x = layer_output(output)  # [B, T, d]
            if x.shape[0] != len(self.rows):
                raise SteeringError(
                    f"Steerer was built for a batch of {len(self.rows)} rows but layer {layer} saw {x.shape[0]}; "
                    "give one RowSteering (or None) per row"
                )
            if capture is not None:
                self._record(capture, x[:, -1, :])
            start = self._seen.get(layer, 0)
            self._seen[layer] = start + x.shape[1]
            new = x
            if plan.add is not None:
                new = new + plan.add.to(x.dtype)[:, None, :]
            if plan.relative is not None:
                norm = x.float().norm(dim=-1, keepdim=True)  # [B, T, 1]
                new = new + (norm * plan.relative[:, None, :]).to(x.dtype)
            if plan.clamp_idx is not None:
                f = sae.encode(x.to(sae.W_enc.dtype))[..., plan.clamp_idx]  # [B, T, m]
                coef = plan.clamp_mask[:, None, :] * (plan.clamp_targets[:, None, :] - f.float())
                w = sae.W_dec[plan.clamp_idx].float()  # [m, d]
                new = new + (coef @ w).to(x.dtype)
            if new is x:
                return output
            if plan.window is not None:  # rows past their window go on unsteered
                if self.first_generated is None:  # generation: the prompt's forward comes first
                    self.first_generated = x.shape[1] - 1
                step = torch.arange(start, start + x.shape[1], device=x.device)[None, :] - self.first_generated
                skip, window = plan.skip[:, None], plan.window[:, None]  # [B, 1]
                keep = (step >= skip) & (step < skip.clamp_min(0) + window)  # [B, T]
                new = torch.where(keep[..., None], new, x)
            last, moved = x[:, -1, :].float(), new[:, -1, :].float()
            self._moved.setdefault(layer, []).append(((moved - last).norm(dim=-1).detach(), last.norm(dim=-1)))
            return replace_layer_output(output, new)

        return hook

    @torch.no_grad()
    def _record(self, cfg: CaptureConfig, x_last: Tensor) -> None:
        f = cfg.sae.encode(x_last.to(cfg.sae.W_enc.dtype)).float()  # [B, d_sae]
        buf = self._buffer
        buf.steps_topk.append(f.abs().topk(min(cfg.k, f.shape[-1]), dim=-1).values)
        if self._feat_idx is not None:
            idx, w = self._feat_idx.to(f.device), self._feat_w.to(f.device)
            buf.steps_feat.append((f.index_select(-1, idx) * w).sum(-1))
        vals, idx = f.topk(min(cfg.top, f.shape[-1]), dim=-1)
        buf.steps_top_vals.append(vals)
        buf.steps_top_idx.append(idx)

    def reports(self, lengths: Sequence[int], n_features: int = 10) -> list[ActivationReport | None]:
        """Per-row reports over the first `lengths[b]` recorded positions (one per generated token).

        Top features are exact when each token has at most `capture.top` active latents (TopK SAEs
        with k <= top); otherwise they are computed from each token's `top` strongest latents.
        """
        cfg, buf = self.capture, self._buffer
        if cfg is None:
            return [None] * len(self.rows)
        if not buf.steps_topk:
            return [ActivationReport(0, 0.0, None, []) for _ in self.rows]
        topk = torch.stack(buf.steps_topk, 1).cpu()  # [B, S, k]
        feat = torch.stack(buf.steps_feat, 1).cpu() if buf.steps_feat else None  # [B, S]
        top_vals = torch.stack(buf.steps_top_vals, 1).cpu()  # [B, S, top]
        top_idx = torch.stack(buf.steps_top_idx, 1).cpu()
        out: list[ActivationReport | None] = []
        for b, n in enumerate(lengths):
            n = max(0, min(int(n), topk.shape[1]))
            if n == 0:
                out.append(ActivationReport(0, 0.0, None if feat is None else 0.0, []))
                continue
            flat = topk[b, :n].flatten()
            topk_mean = float(flat.topk(min(cfg.k, flat.numel())).values.mean())
            sums = torch.zeros(cfg.sae.d_sae).index_add_(0, top_idx[b, :n].flatten(), top_vals[b, :n].flatten())
            mean = sums / n
            vals, idx = mean.topk(min(n_features, mean.numel()))
            out.append(ActivationReport(
                n_tokens=n, topk_mean=topk_mean,
                features_mean=None if feat is None or not self._feat_w[b].any() else float(feat[b, :n].mean()),
                top_features=[(int(i), float(v)) for i, v in zip(idx, vals, strict=True) if v > 0],
            ))
        return out

    def perturbations(self, lengths: Sequence[int]) -> list[Perturbation | None]:
        """Per row, the steering delta's size over the positions that predicted its `lengths[b]`
        generated tokens and the one that predicted EOS (so `lengths[b] + 1` positions, as far as
        recorded); None for unsteered rows."""
        out: list[Perturbation | None] = []
        for b, (row, n) in enumerate(zip(self.rows, lengths, strict=True)):
            steps = self._moved.get(row.layer) if row is not None else None
            if not steps:
                out.append(None)
                continue
            k = max(1, min(int(n) + 1, len(steps)))
            delta = torch.stack([d[b] for d, _ in steps[:k]]).cpu()
            norm = torch.stack([x[b] for _, x in steps[:k]]).cpu()
            ratio = delta / norm.clamp_min(torch.finfo(norm.dtype).tiny)
            out.append(Perturbation(k, float(delta.mean()), float(ratio.mean())))
        return out


def _to_device(plan: _LayerPlan, device: torch.device) -> _LayerPlan:
    move = (lambda t: None if t is None else t.to(device))  # noqa: E731
    return _LayerPlan(move(plan.add), move(plan.relative), move(plan.clamp_idx), move(plan.clamp_targets),
                      move(plan.clamp_mask), move(plan.window), move(plan.skip))


def steer(
    model: nn.Module, spec: SteeringSpec, *, sae: SAE | None = None, max_activation: Any = None,
    batch_size: int = 1,
) -> Steerer:
    """One spec for every row: `with steer(model, spec, sae=sae, max_activation=fmax): model.generate(...)`.

    `sae` is the trained SAE; it is read through its unit-norm view here so `max_activation`
    (ReasonScore's, in unit-norm-decoder units) and the decoder directions agree.
    """
    mspec = get_model_spec(model)
    view = sae.unit_norm_view() if sae is not None else None
    fmax = load_max_activation(max_activation, sae.d_sae) if max_activation is not None and sae is not None else None
    row = resolve(spec, d_model=mspec.d_model, n_layers=mspec.n_layers, sae=view, max_activation=fmax)
    return Steerer(model, [row] * batch_size, sae=view, model_spec=mspec)
