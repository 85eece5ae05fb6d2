"""Specific 4xx answers from `reasoning-dspy serve`: each names what was wrong and how to fix it."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import httpx  # noqa: E402
import openai  # noqa: E402
import pytest  # noqa: E402

from reasoning_dspy.sae import planted  # noqa: E402
from reasoning_dspy.serve import ServeConfig, ServerThread, create_app, load_served_model  # noqa: E402

KEY = "sk-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def server():
    cfg = ServeConfig(model="tiny-random", sae="tiny-planted", api_key=KEY, default_max_tokens=4,
                      max_prompt_tokens=64, max_body_bytes=4096, max_tokens_limit=32, max_n=4)
    with ServerThread(create_app(cfg, load_served_model("tiny-random", "tiny-planted"))) as srv:
        yield srv


def post(server, path: str, body=None, *, content: bytes | None = None, headers=AUTH) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body if content is None else None, content=content,
                      headers=headers, timeout=60)


def error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    err = response.json()["error"]
    assert err["code"] == code, err
    return err["message"]


def test_unknown_model_is_404_with_the_served_names(server):
    message = error(post(server, "/v1/chat/completions", {"model": "gpt-4o", "messages": MESSAGES}), 404,
                    "model_not_found")
    assert "'gpt-4o'" in message and "tiny-random" in message
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0) as client:
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="nope", messages=MESSAGES)


@pytest.mark.parametrize("steering, code, words", [
    ({"features": {"16": 0.5}}, "feature_out_of_range", ["[16]", "16 features", "0..15"]),
    ({"features": {"-1": 0.5}}, "feature_out_of_range", ["[-1]"]),
    ({"top": 99}, "invalid_steering", ["from 1 to 16"]),
    ({"features": {str(planted.PUSH): 0.5}}, "feature_never_fires", ["f_max = 0", "units"]),
    ({"features": {"9": 0.5}, "mode": "sideways"}, "invalid_steering", ["mode"]),
    ({"top": 2, "features": {"9": 1}}, "invalid_steering", ["not both"]),
    ("strong", "invalid_steering", ["str"]),
])
def test_bad_steering_is_400(server, steering, code, words):
    message = error(post(server, "/v1/chat/completions", {"model": "tiny-random", "messages": MESSAGES,
                                                           "steering": steering}), 400, code)
    assert all(w in message for w in words), message


def test_feature_out_of_range_through_the_openai_client(server):
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0) as client:
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(model="tiny-random", messages=MESSAGES,
                                           extra_body={"steering": {"features": {"999": 0.1}}})
    assert info.value.code == "feature_out_of_range" and info.value.param == "steering.features"


def test_oversize_prompt_and_limits(server):
    long = [{"role": "user", "content": "word " * 200}]
    message = error(post(server, "/v1/chat/completions", {"model": "tiny-random", "messages": long}), 400,
                    "context_length_exceeded")
    assert "at most 64" in message
    error(post(server, "/v1/completions", {"model": "tiny-random", "prompt": "word " * 200}), 400,
          "context_length_exceeded")
    error(post(server, "/v1/chat/completions", {"model": "tiny-random", "messages": MESSAGES, "max_tokens": 33}),
          400, "max_tokens_too_large")
    error(post(server, "/v1/chat/completions", {"model": "tiny-random", "messages": MESSAGES, "n": 5}), 400,
          "n_too_large")
    error(post(server, "/v1/explain", {"text": "word " * 200}), 400, "context_length_exceeded")
    big = b'{"model": "tiny-random", "messages": [{"role": "user", "content": "' + b"x" * 5000 + b'"}]}'
    assert "4096 bytes" in error(post(server, "/v1/chat/completions", content=big), 413, "request_too_large")
    chunked = httpx.post(f"{server.url}/v1/chat/completions", content=iter([big[:3000], big[3000:]]), headers=AUTH)
    assert "content-length" not in chunked.request.headers  # no length given: the limit applies while reading
    error(chunked, 413, "request_too_large")


def test_malformed_json_and_invalid_fields(server):
    message = error(post(server, "/v1/chat/completions", content=b'{"model": "tiny-random", "messages": ['), 400,
                    "invalid_json")
    assert "not valid JSON" in message
    error(post(server, "/v1/chat/completions", content=b"[1, 2]"), 400, "invalid_json")
    message = error(post(server, "/v1/chat/completions", {"model": "tiny-random", "messages": MESSAGES,
                                                           "temperature": 5}), 400, "invalid_request")
    assert "temperature" in message
    error(post(server, "/v1/chat/completions", {"model": "tiny-random", "messages": []}), 400, "invalid_request")
    error(post(server, "/v1/chat/completions", {"model": "tiny-random", "messages": MESSAGES, "logprobs": True}),
          400, "unsupported_parameter")
    error(post(server, "/v1/chat/completions", {"model": "tiny-random", "messages": MESSAGES,
                                                "tools": [{"type": "function", "function": {"name": "f"}}]}),
          400, "unsupported_parameter")
    error(post(server, "/v1/completions", {"model": "tiny-random", "prompt": [5, 999999]}), 400, "invalid_prompt")


def test_api_key_missing_or_wrong(server):
    body = {"model": "tiny-random", "messages": MESSAGES}
    assert "missing API key" in error(post(server, "/v1/chat/completions", body, headers={}), 401, "invalid_api_key")
    wrong = {"Authorization": "Bearer sk-wrong"}
    assert "wrong API key" in error(post(server, "/v1/chat/completions", body, headers=wrong), 401, "invalid_api_key")
    # the key is checked before the body is read: malformed JSON without a key is still a 401
    error(post(server, "/v1/chat/completions", content=b"{", headers={}), 401, "invalid_api_key")
    error(post(server, "/v1/explain", {"text": "hi"}, headers=wrong), 401, "invalid_api_key")
    assert httpx.get(f"{server.url}/v1/models").status_code == 401
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="sk-wrong", max_retries=0) as client:
        with pytest.raises(openai.AuthenticationError):
            client.models.list()
    assert httpx.get(f"{server.url}/health").status_code == 200  # health and metrics stay open
    assert post(server, "/v1/chat/completions", body).status_code == 200


def test_explain_errors(server):
    assert "completion_not_found" == post(server, "/v1/explain", {"completion_id": "chatcmpl-gone"}).json()["error"]["code"]
    error(post(server, "/v1/explain", {"text": "hi", "completion_id": "x"}), 400, "invalid_request")
    error(post(server, "/v1/explain", {"text": "hi", "features": [16]}), 400, "feature_out_of_range")
    error(post(server, "/v1/explain", {"text": "hi", "model": "other"}), 404, "model_not_found")
