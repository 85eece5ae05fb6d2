"""The jobs a `SteeredEngine` worker runs: batched generation, teacher-forced measurement and latents."""

from __future__ import annotations

from typing import Any

from reasoning_dspy.engine.generate import GenResult, GenRow, generate_rows
from reasoning_dspy.engine.jobs import (
    BatchJob,
    GenerateJob,
    LatentsJob,
    MeasureJob,
    measure_response,
    token_latents,
)
from reasoning_dspy.engine.microbatcher import model_lock
from reasoning_dspy.steering import CaptureConfig, SteeringError

Job = GenerateJob | BatchJob | MeasureJob | LatentsJob  # what the worker runs (engine/jobs.py)


class BatchWorker:
    """`SteeredEngine`'s worker thread: runs each gathered batch of jobs under the model's lock, requests in
    a fixed order so the same requests give the same batches."""

    def _run_batch(self, jobs: list[Job]) -> list[Any]:
        """Run one gathered batch of jobs on the worker thread: requests together, the rest in turn."""
        results: list[Any] = [None] * len(jobs)
        with model_lock(self.model):
            self._sync_prefix_cache()
            # Requests run in a fixed order, in model batches of at most max_batch_size: the same
            # requests give the same batches (and so the same floats) however their threads arrived.
            requests = sorted((i for i, job in enumerate(jobs) if isinstance(job, GenerateJob)),
                              key=lambda i: _row_order(jobs[i]))
            for start in range(0, len(requests), self.max_batch_size):
                chunk = requests[start:start + self.max_batch_size]
                for i, out in zip(chunk, self._generate([jobs[i].row for i in chunk]), strict=True):
                    results[i] = out
            for i, job in enumerate(jobs):
                if isinstance(job, BatchJob):
                    results[i] = self._generate(job.rows, job.min_new_tokens)
                elif isinstance(job, LatentsJob):
                    results[i] = token_latents(self.model, self.model_spec, self._measure_config(), job,
                                               self._worker_tokenizer).float().cpu()
                elif isinstance(job, MeasureJob):
                    results[i] = measure_response(self.model, self.model_spec, self._measure_config(), job,
                                                  self._worker_tokenizer)
        return results

    def _generate(self, rows: list[GenRow], min_new_tokens: int = 0) -> list[GenResult]:
        return generate_rows(self.model, self._worker_tokenizer, rows, sae=self.sae, model_spec=self.model_spec,
                             capture=self._capture_config(rows), min_new_tokens=min_new_tokens,
                             prefix_cache=self.prefix_cache)

    def _sync_prefix_cache(self) -> None:
        """Prefilled prefixes were computed with the weights of their time: drop them when those changed."""
        self.refresh_fingerprint()
        if self._prefix_cache_weights != self._weights_fingerprint:
            self.prefix_cache.clear()
            self._prefix_cache_weights = self._weights_fingerprint

    def _measure_config(self) -> CaptureConfig:
        if self.sae is None:
            raise SteeringError("reasoning activation needs an SAE: build the engine with sae=")
        layer = self.sae.cfg.hook_layer if self.sae.cfg.hook_layer is not None else self._capture_layer()
        return CaptureConfig(self.sae, layer, k=self.capture_k)

    def _capture_config(self, rows: list[GenRow]) -> CaptureConfig | None:
        if self.sae is None or not any(r.capture for r in rows):
            return None
        return self._measure_config()

    def _capture_layer(self) -> int:
        spec = self.default_steering
        if spec is not None and spec.layer is not None:
            return spec.layer
        raise SteeringError("the SAE records no hook_layer: set SAEConfig.hook_layer so activations are read at its layer")


def _row_order(job: GenerateJob) -> tuple:
    """A total order on requests: shortest prompts first (less padding per model batch), then by
    everything that makes two requests differ."""
    row = job.row
    return (len(row.prompt_ids), row.prompt_ids, job.steering.fingerprint() if job.steering is not None else "",
            row.max_new_tokens, row.temperature, row.top_p, row.stop, row.capture, row.capture_features,
            -1 if row.seed is None else row.seed, -1 if row.logprobs is None else row.logprobs)
