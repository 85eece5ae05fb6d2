"""Response bodies and stream chunks in the OpenAI shape, plus this server's extra fields.

Extras (ignored by OpenAI clients, readable as `response.model_extra` / `choice.model_extra`):
`steering` on the response (what was applied, with feature labels) and `reasoning_dspy` on each
choice (its reasoning activation, measured in the forward that generated it, and how far steering
moved the residual).
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from starlette.responses import JSONResponse

from reasoning_dspy.engine.generate import GenResult


def finite(value: Any) -> Any:
    """`value` with every NaN or infinite float replaced by None: JSON has no such numbers, and a
    model pushed far enough (an extreme steering vector) can produce them in its reports."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


class FiniteJSONResponse(JSONResponse):
    """A JSON response that is always valid JSON (see `finite`)."""

    def render(self, content: Any) -> bytes:
        return super().render(finite(content))


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def choice_extras(result: GenResult) -> dict[str, Any]:
    report = result.report
    return {"reasoning_dspy": {
        "reasoning_activation": report.features_mean if report is not None else None,
        "activation": report.to_dict() if report is not None else None,
        "perturbation": result.perturbation.to_dict() if result.perturbation is not None else None,
        "completion_tokens": len(result.token_ids),
    }}


def chat_completion(cid: str, model: str, fingerprint: str, results: Sequence[GenResult], prompt_tokens: int,
                    steering: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
        "system_fingerprint": fingerprint,
        "choices": [{"index": i, "message": {"role": "assistant", "content": r.text}, "logprobs": None,
                     "finish_reason": r.finish_reason, **choice_extras(r)} for i, r in enumerate(results)],
        "usage": usage(prompt_tokens, sum(len(r.token_ids) for r in results)),
        "steering": steering,
    }


def text_completion(cid: str, model: str, fingerprint: str, results: Sequence[GenResult], prompt_tokens: int,
                    steering: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": cid, "object": "text_completion", "created": int(time.time()), "model": model,
        "system_fingerprint": fingerprint,
        "choices": [{"index": i, "text": r.text, "logprobs": None, "finish_reason": r.finish_reason,
                     **choice_extras(r)} for i, r in enumerate(results)],
        "usage": usage(prompt_tokens, sum(len(r.token_ids) for r in results)),
        "steering": steering,
    }


class StreamedText:
    """One row's text while its tokens arrive, for streaming.

    `ready()` gives the new text that is safe to send: never past a stop string, never the first
    characters of one that the next tokens may complete, never half a character. `rest(final)` is
    what the finished row's text adds to what was sent, so the pieces join to exactly the text a
    non-streamed request returns."""

    def __init__(self, decode: Callable[[list[int]], str], stop: Sequence[str] = ()):
        self.decode, self.stop = decode, tuple(s for s in stop if s)
        self.ids: list[int] = []
        self.sent = ""

    def extend(self, ids: Iterable[int]) -> None:
        self.ids.extend(ids)

    def ready(self) -> str:
        text = self.decode(self.ids)
        cut = min((text.find(s) for s in self.stop if s in text), default=-1)
        text = text[:cut] if cut >= 0 else text[: len(text) - _stop_start(text, self.stop)]
        text = text.rstrip("\ufffd")  # a character whose bytes are still arriving
        if len(text) <= len(self.sent) or not text.startswith(self.sent):
            return ""
        piece, self.sent = text[len(self.sent):], text
        return piece

    def rest(self, final: str) -> str:
        return final[len(self.sent):] if final.startswith(self.sent) else ""


def _stop_start(text: str, stop: Sequence[str]) -> int:
    """Length of the longest end of `text` that begins a stop string (held back until it is decided)."""
    return max((n for s in stop for n in range(min(len(s) - 1, len(text)), 0, -1) if text.endswith(s[:n])), default=0)


def sse(data: dict[str, Any] | str) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(finite(data), separators=(",", ":"))
    return f"data: {payload}\n\n".encode()


def chat_chunk(cid: str, created: int, model: str, fingerprint: str, index: int, delta: dict[str, Any],
               finish_reason: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": fingerprint,
            "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason, **extra}]}


def text_chunk(cid: str, created: int, model: str, fingerprint: str, index: int, text: str,
               finish_reason: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"id": cid, "object": "text_completion", "created": created, "model": model,
            "system_fingerprint": fingerprint,
            "choices": [{"index": index, "text": text, "logprobs": None, "finish_reason": finish_reason, **extra}]}


def usage_chunk(cid: str, created: int, model: str, fingerprint: str, obj: str, prompt_tokens: int,
                completion_tokens: int) -> dict[str, Any]:
    return {"id": cid, "object": obj, "created": created, "model": model, "system_fingerprint": fingerprint,
            "choices": [], "usage": usage(prompt_tokens, completion_tokens)}
