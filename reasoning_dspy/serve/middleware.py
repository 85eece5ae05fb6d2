"""ASGI middleware around every request: request ids, the body size limit, metrics, the access log,
and the last word on unexpected errors.

Plain ASGI (not Starlette's `BaseHTTPMiddleware`), so streaming responses and the disconnect
signal pass through untouched. An error no route handled is answered here with a JSON 500 and not
raised further: Starlette's own error middleware would answer and then re-raise, and uvicorn
resets a connection whose application raised, so the client's next request on it would fail.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from reasoning_dspy.serve.errors import APIError, body_too_large
from reasoning_dspy.serve.logs import log_event

#: Paths reported under their own name in metrics; anything else counts as "other".
KNOWN_PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/explain", "/v1/models", "/health", "/metrics")


class BodyTooLargeError(Exception):
    """The request body grew past the limit while being read."""


class ObserveMiddleware:
    def __init__(self, app: Any, state: Any):
        self.app, self.state = app, state

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        request_id = headers.get("x-request-id") or uuid.uuid4().hex[:16]
        scope.setdefault("state", {})
        scope["state"]["log"] = {}
        status = {"code": 500, "started": False}
        limit = self.state.config.max_body_bytes
        received = 0

        async def limited_receive() -> dict:
            nonlocal received
            message = await receive()
            if message.get("type") == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLargeError()
            return message

        async def send_with_id(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"], status["started"] = message["status"], True
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            length = int(headers.get("content-length") or 0)
        except ValueError:
            length = 0
        try:
            if length > limit:
                response = body_too_large(limit).response()
                await response(scope, receive, send_with_id)
            else:
                await self.app(scope, limited_receive, send_with_id)
        except Exception as err:
            self.state.logger.exception("internal error", extra={"fields": {"path": scope.get("path", "")}})
            if status["started"]:
                raise  # the status line is out: uvicorn closes the connection, the only honest end
            response = APIError(500, f"internal error: {type(err).__name__}: {err}", code="internal_error",
                                type="server_error").response()
            await response(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - start
            path = scope.get("path", "")
            endpoint = next((p for p in KNOWN_PATHS if path == p or path.startswith(p + "/")), "other")
            self.state.metrics.observe_request(endpoint, status["code"], seconds)
            log_event(self.state.logger, "request", request_id=request_id, method=scope.get("method"), path=path,
                      status=status["code"], duration_ms=round(seconds * 1000, 2), **scope["state"].get("log", {}))
