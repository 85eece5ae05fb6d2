"""Bad input to `reasoning-dspy serve`, over real HTTP on 127.0.0.1: every client mistake gets a
specific 4xx that names what was wrong, and the connection it came on keeps working (or is closed
cleanly), so the client's next request is answered."""

from __future__ import annotations

import json
import os
import socket
import threading
import time

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import httpx  # noqa: E402
import pytest  # noqa: E402

from reasoning_dspy.serve import ServeConfig, ServerThread, create_app, load_served_model  # noqa: E402

M = [{"role": "user", "content": "hi"}]
CHAT = "/v1/chat/completions"
TEXT = "/v1/completions"
EXPLAIN = "/v1/explain"
HUGE = "word " * 190_000  # 0.95 MB


@pytest.fixture(scope="module")
def server():
    cfg = ServeConfig(model="tiny-random", sae="tiny-planted", default_max_tokens=4, max_prompt_tokens=64,
                      max_queue=4, max_n=8, max_wait_ms=1)
    with ServerThread(create_app(cfg, load_served_model("tiny-random", "tiny-planted"))) as srv:
        yield srv


def chat(**fields) -> dict:
    return {"model": "tiny-random", "messages": M, **fields}


def raw(text: str) -> bytes:
    return text.encode()


# (name, path, body: dict or bytes, status, error code, words the message must hold)
CASES = [
    ("missing body", CHAT, b"", 400, "invalid_json", ["not valid JSON"]),
    ("body is null", CHAT, b"null", 400, "invalid_json", ["JSON object", "NoneType"]),
    ("corrupt JSON", CHAT, b'{"model": "tiny-random", "messages": [', 400, "invalid_json", ["not valid JSON"]),
    ("not UTF-8", CHAT, b'{"model": "\xff\xfe"}', 400, "invalid_json", ["not valid JSON"]),
    ("nested 100,000 deep", CHAT, b"[" * 100_000 + b"]" * 100_000, 400, "invalid_json", ["32 levels"]),
    ("nested deep in a field", CHAT, raw('{"model": "tiny-random", "messages": ' + "[" * 40 + "]" * 40 + "}"),
     400, "invalid_json", ["32 levels", "messages"]),
    ("lone surrogate", CHAT, raw('{"model": "tiny-random", "messages": [{"role": "user", "content": "a\\ud800"}]}'),
     400, "invalid_text", ["messages[0].content", "surrogate", "\\ud800"]),
    ("missing model", CHAT, {"messages": M}, 400, "invalid_request", ["model", "Field required"]),
    ("missing messages", CHAT, {"model": "tiny-random"}, 400, "invalid_request", ["messages"]),
    ("messages of wrong type", CHAT, chat(messages="hi"), 400, "invalid_request", ["messages"]),
    ("empty messages", CHAT, chat(messages=[]), 400, "invalid_request", ["messages"]),
    ("unknown role", CHAT, chat(messages=[{"role": "robot", "content": "hi"}]), 400, "invalid_request", ["role"]),
    ("image content", CHAT, chat(messages=[{"role": "user", "content": [{"type": "image_url"}]}]), 400,
     "unsupported_content", ["text only"]),
    ("max_tokens 0", CHAT, chat(max_tokens=0), 400, "invalid_request", ["max_tokens"]),
    ("max_tokens wrong type", CHAT, chat(max_tokens="ten"), 400, "invalid_request", ["max_tokens", "'ten'"]),
    ("max_tokens huge", CHAT, chat(max_tokens=10**30), 400, "max_tokens_too_large", ["limit of 512"]),
    ("temperature NaN", CHAT, raw('{"model": "tiny-random", "messages": [{"role": "user", "content": "hi"}], '
                                  '"temperature": NaN}'), 400, "invalid_request", ["temperature", "nan"]),
    ("temperature negative", CHAT, chat(temperature=-1), 400, "invalid_request", ["temperature"]),
    ("top_p 0", CHAT, chat(top_p=0), 400, "invalid_request", ["top_p"]),
    ("n 0", CHAT, chat(n=0), 400, "invalid_request", ["n"]),
    ("seed 2**70", CHAT, chat(seed=2**70, temperature=1.0), 400, "invalid_request", ["seed", str(2**64 - 1)]),
    ("seed wrong type", CHAT, chat(seed="abc"), 400, "invalid_request", ["seed"]),
    ("seed negative", CHAT, chat(seed=-1, temperature=1.0), 400, "invalid_request", ["seed", "greater than or equal to 0"]),
    ("five stop strings", CHAT, chat(stop=list("abcde")), 400, "invalid_request", ["at most 4 stop"]),
    ("steering vector 1e30", CHAT, chat(steering={"vector": [1e30] * 64, "layer": 1}), 400, "invalid_steering",
     ["steering.vector", "norm", "residual"]),
    ("steering strength Infinity", CHAT, raw('{"model": "tiny-random", "messages": [{"role": "user", "content": '
                                             '"hi"}], "steering": {"features": {"9": Infinity}}}'), 400,
     "invalid_steering", ["finite"]),
    ("steering feature not an index", CHAT, chat(steering={"features": {"abc": 1}}), 400, "invalid_steering",
     ["feature indices"]),
    ("unknown model", CHAT, chat(model="gpt-4o"), 404, "model_not_found", ["'gpt-4o'"]),
    ("empty prompt", TEXT, {"model": "tiny-random", "prompt": ""}, 400, "invalid_prompt", ["empty"]),
    ("empty prompt in a list", TEXT, {"model": "tiny-random", "prompt": ["hi", ""]}, 400, "invalid_prompt",
     ["prompt[1]", "empty"]),
    ("empty prompt list", TEXT, {"model": "tiny-random", "prompt": []}, 400, "invalid_request", ["empty"]),
    ("token id out of range", TEXT, {"model": "tiny-random", "prompt": [5, -1]}, 400, "invalid_prompt",
     ["outside the vocabulary"]),
    ("prompt 0.95 MB", TEXT, {"model": "tiny-random", "prompt": HUGE}, 400, "context_length_exceeded",
     ["950000 characters", "64 tokens"]),
    ("chat 0.95 MB", CHAT, chat(messages=[{"role": "user", "content": HUGE}]), 400, "context_length_exceeded",
     ["messages", "characters"]),
    ("rows beyond the queue", CHAT, chat(n=5), 400, "too_many_rows", ["5 generations", "at most 4", "lower n"]),
    ("prompts beyond the queue", TEXT, {"model": "tiny-random", "prompt": ["a", "b", "c", "d", "e"]}, 400,
     "too_many_rows", ["5 generations"]),
    ("explain nothing", EXPLAIN, {}, 400, "invalid_request", ["exactly one of text and completion_id"]),
    ("explain top_k 1000", EXPLAIN, {"text": "hi", "top_k": 1000}, 400, "invalid_request", ["top_k"]),
    ("explain lone surrogate", EXPLAIN, raw('{"text": "\\udfff"}'), 400, "invalid_text", ["text", "surrogate"]),
    ("explain 0.95 MB", EXPLAIN, {"text": HUGE}, 400, "context_length_exceeded", ["text", "characters"]),
    ("unknown path", "/v1/embeddings", {}, 404, "not_found", ["/v1/embeddings", "POST /v1/chat/completions"]),
    ("logprobs", CHAT, chat(logprobs=True), 400, "unsupported_parameter", ["logprobs"]),
]


@pytest.mark.parametrize("name, path, body, status, code, words", CASES, ids=[c[0] for c in CASES])
def test_each_mistake_is_a_specific_4xx_and_the_connection_goes_on(server, name, path, body, status, code, words):
    with httpx.Client(base_url=server.url, timeout=300) as client:  # generous: shared, loaded CI machines
        if isinstance(body, bytes):
            response = client.post(path, content=body, headers={"content-type": "application/json"})
        else:
            response = client.post(path, json=body)
        assert response.status_code == status, response.text
        err = response.json()["error"]
        assert err["code"] == code, err
        assert all(w in err["message"] for w in words), err["message"]
        after = client.post(CHAT, json=chat())  # the same client, on the same connection if it was kept
        assert after.status_code == 200, after.text


def test_the_sweep_covers_every_kind_of_bad_input():
    assert len(CASES) >= 20


def test_a_get_on_a_post_route_is_405_in_the_openai_shape(server):
    response = httpx.get(f"{server.url}{CHAT}")
    assert response.status_code == 405 and response.json()["error"]["code"] == "method_not_allowed"
    assert "POST" in response.json()["error"]["message"]


def test_a_stream_with_bad_input_is_refused_before_it_starts(server):
    response = httpx.post(f"{server.url}{CHAT}", json=chat(stream=True, seed=-(2**64)), timeout=60)
    assert response.status_code == 400 and response.json()["error"]["param"] == "seed"


def _pipelined(port: int, requests: list[bytes]) -> list[bytes]:
    """Send `requests` back to back on one TCP connection; every response that comes back."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(b"".join(requests))
        data = b""
        while data.count(b"HTTP/1.1 ") < len(requests) or not data.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return [b"HTTP/1.1 " + part for part in data.split(b"HTTP/1.1 ")[1:]]


def _request(path: str, body: bytes) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def test_the_next_request_on_the_same_connection_is_answered(server):
    """The reported mistakes once answered 500 and reset the connection under the next request."""
    good = _request(CHAT, json.dumps(chat()).encode())
    for bad in (json.dumps(chat(seed=2**70, temperature=1.0)).encode(),
                b'{"model": "tiny-random", "messages": [{"role": "user", "content": "\\ud800"}]}',
                b"[" * 100_000 + b"]" * 100_000,
                json.dumps(chat(steering={"vector": [1e30] * 64, "layer": 1})).encode()):
        first, second = _pipelined(server.port, [_request(CHAT, bad), good])
        assert first.startswith(b"HTTP/1.1 400"), first[:200]
        assert second.startswith(b"HTTP/1.1 200") and b'"chat.completion"' in second, second[:200]
    first, second = _pipelined(server.port, [_request(TEXT, b'{"model": "tiny-random", "prompt": ""}'), good])
    assert first.startswith(b"HTTP/1.1 400") and second.startswith(b"HTTP/1.1 200")


def test_an_unexpected_error_is_a_500_that_keeps_the_connection():
    """An error no route handles is answered by the middleware, not re-raised into uvicorn."""
    import logging

    from reasoning_dspy.serve.metrics import Metrics
    from reasoning_dspy.serve.middleware import ObserveMiddleware

    async def broken(scope, receive, send):
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        raise RuntimeError("a bug")

    state = type("State", (), {"config": ServeConfig(), "metrics": Metrics(),
                               "logger": logging.getLogger("test-serve-broken")})()
    with ServerThread(ObserveMiddleware(broken, state)) as srv:
        first, second = _pipelined(srv.port, [_request(CHAT, b"{}"), _request(CHAT, b"{}")])
    for response in (first, second):
        assert response.startswith(b"HTTP/1.1 500") and b"internal error: RuntimeError: a bug" in response


def test_huge_prompts_are_refused_untokenized_and_do_not_slow_the_others(server):
    """Sixteen 0.95 MB prompts in flight: each is refused by its length before tokenizing (which would
    take about 0.5 s each, one at a time), so a normal request beside them is answered at once."""
    refused: list[int] = []

    def huge() -> None:
        refused.append(httpx.post(f"{server.url}{TEXT}", json={"model": "tiny-random", "prompt": HUGE},
                                  timeout=120).status_code)

    start = time.perf_counter()
    threads = [threading.Thread(target=huge) for _ in range(16)]
    for t in threads:
        t.start()
    normal = httpx.post(f"{server.url}{CHAT}", json=chat(), timeout=120)
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    assert normal.status_code == 200 and refused == [400] * 16
    assert elapsed < 5.0, f"{elapsed:.1f} s: tokenizing them would take over 7 s"


def test_concurrent_bad_requests_leave_the_server_serving(server):
    bodies = [chat(seed=2**70), chat(n=5), {"model": "tiny-random", "prompt": ""}, chat(max_tokens=-1)] * 6

    def send(body: dict) -> int:
        path = TEXT if "prompt" in body else CHAT
        return httpx.post(f"{server.url}{path}", json=body, timeout=120).status_code

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(12) as pool:
        statuses = list(pool.map(send, bodies))
    assert statuses == [400] * len(bodies)
    health = httpx.get(f"{server.url}/health").json()
    assert health["admitted"] == 0 and httpx.post(f"{server.url}{CHAT}", json=chat()).status_code == 200
