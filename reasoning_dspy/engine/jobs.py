"""What the engine's worker runs, and the reports it keeps.

Every model forward of a `SteeredEngine` happens on its worker thread, as one of three jobs:

- `GenerateJob`: one request (a DSPy call, one prompt of `generate`); concurrent ones share a batch;
- `BatchJob`: rows that must run as exactly one batch with EOS held off (benchmarks compare equal
  amounts of decoding);
- `MeasureJob`: the SAE latents of a finished response, recomputed by teacher forcing, summarized;
- `LatentsJob`: the same latents per token, unsummarized (explanations, heatmaps).

A response's reasoning activation is measured in the forward that generates it. DSPy may answer a
later identical call from its cache without reaching the engine, so the engine keeps recent
reports in a `ReportStore`, keyed by what determines them (prompt tokens, steering, reasoning
features, the text); a report missing there (another process wrote the cache entry) is recomputed
exactly by `measure_response`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from reasoning_dspy.activations import residual_at
from reasoning_dspy.engine.generate import GenRow
from reasoning_dspy.features.activation import ActivationReport, summarize_latents
from reasoning_dspy.models import ModelSpec
from reasoning_dspy.steering import CaptureConfig, RowSteering, Steerer, SteeringSpec
from reasoning_dspy.steering.lines import line_ends


@dataclass
class GenerateJob:
    """One generation request; the worker batches concurrent ones into one `generate_rows` call."""

    row: GenRow
    steering: SteeringSpec | None


@dataclass
class BatchJob:
    """Rows that run as exactly one batch, EOS suppressed for `min_new_tokens` (benchmarks)."""

    rows: list[GenRow]
    min_new_tokens: int = 0


@dataclass
class MeasureJob:
    """The report of the SAE latents at positions `start:` of `token_ids`, read in context, with
    `steering` applied as it was during generation."""

    token_ids: list[int]
    start: int
    steering: RowSteering | None
    features: tuple[int, ...]

    @classmethod
    def for_response(cls, prompt_ids: list[int], output_ids: list[int], steering: RowSteering | None,
                     features: tuple[int, ...]) -> MeasureJob:
        """Generation records the residual at the positions that predict each generated token: the
        prompt's last position and every generated token but the last. A forward over
        `prompt + output[:-1]` has the same residuals at the same positions."""
        if not output_ids:
            return cls(list(prompt_ids), len(prompt_ids), steering, features)
        return cls(list(prompt_ids) + list(output_ids[:-1]), len(prompt_ids) - 1, steering, features)


@dataclass
class LatentsJob(MeasureJob):
    """The SAE latents themselves, `[len(token_ids) - start, d_sae]` (float32, on the CPU), rather than
    their summary: what explanations and token heatmaps show."""


@torch.inference_mode()
def token_latents(model: nn.Module, model_spec: ModelSpec, capture: CaptureConfig, job: MeasureJob,
                  tokenizer: Any = None) -> Tensor:
    """SAE latents of the tokens at positions `job.start:`, each read at its own position by one
    teacher-forced forward over `job.token_ids`.

    The residual is read at the capture layer before steering adds to it there, as during
    generation; steering at earlier layers acts on the forward as it did then. A window that opens
    after the answer's first lines (`skip_lines`) needs the `tokenizer` to find them.
    """
    sae = capture.sae
    if job.start >= len(job.token_ids):
        return torch.zeros((0, sae.d_sae), dtype=sae.W_enc.dtype, device=sae.W_enc.device)
    device = next(model.parameters()).device
    ids = torch.tensor([job.token_ids], dtype=torch.long, device=device)
    steerer = None
    if job.steering is not None:
        waits = job.steering.skip_lines > 0 and tokenizer is not None
        steerer = Steerer(model, [job.steering], sae=sae, model_spec=model_spec, first_generated=job.start,
                          line_ends=line_ends(tokenizer) if waits else None)
        if waits:  # the answer is known: its window opens where generation opened it
            for step, token in enumerate(job.token_ids[job.start + 1:]):
                steerer.saw_tokens(step, [token])
    acts = residual_at(model, capture.layer, ids, model_spec=model_spec, hooks=steerer)[0, job.start:]
    return sae.encode(acts.to(sae.W_enc.dtype))


def measure_response(model: nn.Module, model_spec: ModelSpec, capture: CaptureConfig, job: MeasureJob,
                     tokenizer: Any = None) -> ActivationReport:
    """What generation's capture reports, recomputed by one teacher-forced forward."""
    if job.start >= len(job.token_ids):
        return ActivationReport(0, 0.0, 0.0 if job.features else None, [])
    return summarize_latents(token_latents(model, model_spec, capture, job, tokenizer), capture.k, job.features)


class ReportStore:
    """The most recent `size` activation reports, by key; safe to use from any thread."""

    def __init__(self, size: int = 4096):
        self.size = size
        self._reports: OrderedDict[Hashable, ActivationReport] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(prompt_ids: Sequence[int], steering: SteeringSpec | None, features: Sequence[int], text: str) -> Hashable:
        return (tuple(prompt_ids), steering.fingerprint() if steering is not None else None, tuple(features), text)

    def put(self, key: Hashable, report: ActivationReport) -> None:
        with self._lock:
            self._reports[key] = report
            self._reports.move_to_end(key)
            while len(self._reports) > self.size:
                self._reports.popitem(last=False)

    def get(self, key: Hashable) -> ActivationReport | None:
        with self._lock:
            return self._reports.get(key)

    def clear(self) -> None:
        with self._lock:
            self._reports.clear()

    def __len__(self) -> int:
        return len(self._reports)
