"""Request bodies of the OpenAI-compatible endpoints and `/v1/explain`, validated with pydantic.

Unknown fields are ignored, as OpenAI-compatible servers do; fields that would silently change
the answer if ignored (logprobs, echo, suffix, logit_bias, penalties, tools) are refused by name.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from reasoning_dspy.serve.errors import APIError, bad_request

#: `seed`: a 64-bit integer, as a `torch.Generator` takes it.
SEED_MIN, SEED_MAX = 0, 2**64 - 1

#: Deepest nesting of arrays and objects a request body may have (real requests need fewer than 10).
MAX_JSON_DEPTH = 32

_REFUSED = {
    "logprobs": "token log-probabilities are not returned",
    "top_logprobs": "token log-probabilities are not returned",
    "echo": "the prompt is not echoed",
    "suffix": "insertion (suffix) is not supported",
    "logit_bias": "logit_bias is not supported",
    "tools": "this model runs in process and does not call tools",
    "functions": "this model runs in process and does not call tools",
    "response_format": "structured output (response_format) is not enforced",
}


class _GenerationRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int = Field(1, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=SEED_MIN, le=SEED_MAX, description="0 to 2**64 - 1")
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    steering: Any = None
    presence_penalty: float | None = 0.0
    frequency_penalty: float | None = 0.0

    @field_validator("stop")
    @classmethod
    def _stop(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > 4:
            raise ValueError(f"at most 4 stop sequences, got {len(value)}")
        return value

    def stop_tuple(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return tuple(s for s in ([self.stop] if isinstance(self.stop, str) else self.stop) if s)

    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))

    def check_supported(self) -> None:
        extra = self.model_extra or {}
        for name, why in _REFUSED.items():
            value = extra.get(name)
            if value in (None, False, [], {}) or (name == "response_format" and _plain_text(value)):
                continue
            raise bad_request(f"{name} is not supported: {why}; leave it out", code="unsupported_parameter", param=name)
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name):
                raise bad_request(f"{name} is not supported (only 0): the engine applies no penalties",
                                  code="unsupported_parameter", param=name)
        if extra.get("tool_choice") not in (None, "none"):
            raise bad_request("tool_choice is not supported: this model does not call tools",
                              code="unsupported_parameter", param="tool_choice")


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[dict[str, Any]] | None = None

    def text(self, index: int) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        parts = []
        for part in self.content:
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise bad_request(f"messages[{index}] has a {part.get('type')!r} part; this model takes text only",
                                  code="unsupported_content", param=f"messages[{index}].content")
            parts.append(part["text"])
        return "".join(parts)


class ChatCompletionRequest(_GenerationRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)

    def chat(self) -> list[dict[str, str]]:
        return [{"role": m.role, "content": m.text(i)} for i, m in enumerate(self.messages)]

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(_GenerationRequest):
    prompt: str | list[str] | list[int] | list[list[int]]

    def requested_max_tokens(self) -> int | None:
        return self.max_tokens


class ExplainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    text: str | None = Field(None, description="a text to explain")
    completion_id: str | None = Field(None, description="id of a completion this server returned")
    choice: int = Field(0, ge=0, description="which choice of that completion")
    features: list[int] | None = Field(None, description="reasoning features to report (default: the served ones)")
    top_k: int = Field(5, ge=1, le=64, description="features listed per token")
    n_evidence: int = Field(10, ge=0, le=200, description="evidence tokens returned")


def _plain_text(value: Any) -> bool:
    return isinstance(value, dict) and value.get("type") == "text"


def parse_body(raw: bytes, model: type[BaseModel]) -> Any:
    """Parse and validate a JSON body; malformed JSON and invalid fields become specific 400s."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise APIError(400, f"the request body is not valid JSON ({err})", code="invalid_json") from None
    except RecursionError:
        raise _too_deep() from None
    if not isinstance(data, dict):
        raise APIError(400, f"the request body must be a JSON object, got {type(data).__name__}", code="invalid_json")
    check_json_values(data)
    try:
        return model.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        param = ".".join(map(str, first["loc"])) or None
        raise bad_request("; ".join(_describe(e) for e in err.errors()[:5]), code="invalid_request",
                          param=param) from None


def check_json_values(data: Any) -> None:
    """Refuse what JSON parses but no model input can hold: nesting deeper than `MAX_JSON_DEPTH`, and
    strings with unpaired UTF-16 surrogates (`"\\ud800"`), which have no UTF-8 form to tokenize.
    Walks with an explicit stack, so no body can exhaust Python's recursion limit."""
    stack: list[tuple[Any, tuple, int]] = [(data, (), 1)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, str):
            _check_text(value, path)
            continue
        if not isinstance(value, (dict, list)):
            continue
        if depth > MAX_JSON_DEPTH:
            raise _too_deep(_where(path))
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            if isinstance(key, str):
                _check_text(key, path)
            stack.append((item, (*path, key), depth + 1))


def _check_text(text: str, path: tuple) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        bad = text[err.start:err.end].encode("unicode_escape").decode()
        raise bad_request(f"{_where(path) or 'the body'} holds an unpaired UTF-16 surrogate ({bad}) at character "
                          f"{err.start}, which is not text; send valid Unicode (a surrogate pair, or the character "
                          "itself)", code="invalid_text", param=_where(path) or None) from None


def _where(path: tuple) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p)) for i, p in enumerate(path))


def _too_deep(where: str = "") -> APIError:
    at = f" (at {where})" if where else ""
    return APIError(400, f"the request body nests arrays and objects more than {MAX_JSON_DEPTH} levels deep{at}; "
                         "a chat or completion request needs fewer than 10", code="invalid_json")


def _describe(error: dict) -> str:
    where = ".".join(map(str, error["loc"]))
    got = f" (got {_short(error['input'])})" if error["type"] != "missing" and error["loc"] else ""
    return f"{where}: {error['msg']}{got}".replace("Value error, ", "")


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
