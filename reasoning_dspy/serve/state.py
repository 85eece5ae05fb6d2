"""`ServerState`: what every route shares (settings, model, engine bridge, queue, metrics, store),
with the model-id and API-key checks."""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from reasoning_dspy.serve.admission import Admission
from reasoning_dspy.serve.bridge import EngineBridge
from reasoning_dspy.serve.catalog import ServedModel
from reasoning_dspy.serve.config import ServeConfig
from reasoning_dspy.serve.errors import model_not_found, unauthorized
from reasoning_dspy.serve.metrics import Metrics
from reasoning_dspy.serve.store import CompletionStore


@dataclass
class ServerState:
    """Everything the routes share."""

    config: ServeConfig
    served: ServedModel
    bridge: EngineBridge
    admission: Admission
    metrics: Metrics
    store: CompletionStore
    api_key: str | None
    logger: logging.Logger
    prompt_tokens: int | None = None  # longest prompt accepted, in tokens
    token_chars: int = 1  # most characters one token stands for (longer texts are refused untokenized)

    @property
    def model_ids(self) -> list[str]:
        return [self.served.name, self.bridge.model_id]

    def check_model(self, given: str | None) -> None:
        if given not in self.model_ids:
            raise model_not_found(str(given), self.model_ids[:1])

    def authorize(self, request: Request) -> None:
        if self.api_key is None:
            return
        given = _given_key(request)
        if not given:
            raise unauthorized("missing API key")
        if not hmac.compare_digest(given.encode(), self.api_key.encode()):
            raise unauthorized("wrong API key")

    def authorized(self, request: Request) -> bool:
        """Whether `request` may see what `authorize` guards (always, when no key is set)."""
        given = _given_key(request)
        return self.api_key is None or (bool(given) and hmac.compare_digest(given.encode(), self.api_key.encode()))

    def gauges(self) -> dict[str, Any]:
        return {"queue_depth": self.bridge.queue_depth(), "admitted": self.admission.admitted,
                "capacity": self.admission.capacity, "rejected": self.admission.rejected}


def _given_key(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    return header[7:].strip() if header.lower().startswith("bearer ") else request.headers.get("x-api-key")
