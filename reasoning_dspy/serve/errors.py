"""Errors in the OpenAI shape: `{"error": {"message", "type", "param", "code"}}` with a specific status.

Every refusal names what was given, what is accepted and how to fix it, like the rest of the package.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse


class APIError(Exception):
    """An error the client can act on; `response()` renders it."""

    def __init__(self, status: int, message: str, *, code: str, type: str = "invalid_request_error",
                 param: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.type, self.param = status, message, code, type, param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def bad_request(message: str, *, code: str, param: str | None = None) -> APIError:
    return APIError(400, message, code=code, param=param)


def model_not_found(given: str, served: list[str]) -> APIError:
    return APIError(404, f"the model {given!r} is not served here; served: {', '.join(served)} "
                         "(GET /v1/models lists them)", code="model_not_found", param="model")


def queue_full(capacity: int, retry_after_s: int) -> APIError:
    return APIError(503, f"the server is at capacity ({capacity} generations queued or running); retry after "
                         f"{retry_after_s} s", code="queue_full", type="server_overloaded",
                    headers={"Retry-After": str(retry_after_s)})


def unauthorized(reason: str) -> APIError:
    return APIError(401, f"{reason}: send the server's key as `Authorization: Bearer <key>` (the openai "
                         "client's api_key=)", code="invalid_api_key", type="authentication_error",
                    headers={"WWW-Authenticate": "Bearer"})


def body_too_large(limit: int) -> APIError:
    return APIError(413, f"the request body exceeds this server's limit of {limit} bytes", code="request_too_large")


#: The routes, for the message of a request to any other path.
ROUTES = "POST /v1/chat/completions, POST /v1/completions, POST /v1/explain, GET /v1/models, GET /health, GET /metrics"


def route_error(method: str, path: str, status: int, detail: Any, headers: dict[str, str] | None) -> APIError:
    """A routing error (unknown path, wrong method) in the OpenAI shape, naming the routes there are."""
    if status == 404:
        return APIError(404, f"there is no {path}; this server answers {ROUTES}", code="not_found",
                        headers=headers)
    if status == 405:
        allowed = (headers or {}).get("allow") or (headers or {}).get("Allow") or "another method"
        return APIError(405, f"{path} does not take {method}; use {allowed}", code="method_not_allowed",
                        headers=headers)
    return APIError(status, str(detail), code="http_error", headers=headers)
