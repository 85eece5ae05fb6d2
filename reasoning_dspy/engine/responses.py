"""A finished generation as the `dspy.lm15.Response` DSPy reads, log-probabilities included."""

from __future__ import annotations

import uuid
from typing import Any

from reasoning_dspy.engine.generate import GenResult
from reasoning_dspy.engine.jobs import (
    GenerateJob,
    ReportStore,
)

PROVIDER_KEY = "reasoning_dspy"  # our key inside Response.provider_data

class ResponseBuilding:
    """`SteeredEngine`'s answers: a `GenResult` as a `dspy.lm15.Response`, with the activation report and
    perturbation under `provider_data["reasoning_dspy"]`."""

    def _response(self, result: GenResult, job: GenerateJob) -> Any:
        from dspy.lm15 import Message, Response, TextPart, Usage

        if result.report is not None:
            self.reports.put(ReportStore.key(job.row.prompt_ids, job.steering, job.row.capture_features, result.text),
                             result.report)
        data = {
            "steering": job.steering.model_dump(mode="json") if job.steering is not None else None,
            "activation": result.report.to_dict() if result.report is not None else None,
            "perturbation": result.perturbation.to_dict() if result.perturbation is not None else None,
        }
        logprobs = self._logprobs(result)
        return Response(
            id=f"rdspy-{uuid.uuid4().hex[:16]}", model=self.model_id,
            message=Message.assistant((TextPart(result.text),)), finish_reason=result.finish_reason,
            usage=Usage(input_tokens=result.prompt_tokens, output_tokens=len(result.token_ids)),
            logprobs=logprobs, provider_data={PROVIDER_KEY: data},
            logprobs_complete=logprobs is None or self._decode(result.token_ids) == result.text,
        )

    def _logprobs(self, result: GenResult) -> tuple[Any, ...] | None:
        """`Response.logprobs` of a row that asked for them: each token's text, id and log-probability."""
        from dspy.lm15 import TokenLogprob, TopLogprob

        if result.logprobs is None:
            return None
        with self._tok_lock:
            piece = lambda i: self.tokenizer.decode([i], skip_special_tokens=False)  # noqa: E731
            return tuple(TokenLogprob(token=piece(t.token_id), logprob=t.logprob, token_id=t.token_id,
                                      top=tuple(TopLogprob(token=piece(i), logprob=v, token_id=i) for i, v in t.top))
                         for t in result.logprobs)
