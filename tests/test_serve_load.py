"""Load on loopback: 64 concurrent clients × 4 requests with mixed steering are each answered exactly
once, with the answers serial calls give; a full queue answers 503 at once instead of hanging; a
client that goes away withdraws its queued request."""

from __future__ import annotations

import asyncio
import json
import os
import time

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import httpx  # noqa: E402
import openai  # noqa: E402
import pytest  # noqa: E402

from reasoning_dspy.serve import ServeConfig, ServerThread, create_app, load_served_model  # noqa: E402

CLIENTS, REQUESTS, MAX_TOKENS = 64, 4, 8
STEERINGS = [None, {"features": {"5": 0.5}, "units": "residual"}, {"features": {"3": 0.3}, "units": "residual"},
             {"top": 2, "strength": 0.4, "units": "residual"}]


@pytest.fixture(scope="module")
def served():
    return load_served_model("tiny-random", "tiny-planted")


def question(c: int, r: int) -> str:
    return f"Client {c} asks question {r}: what is {c} plus {r}?"


def steering(c: int, r: int):
    return STEERINGS[(c + r) % len(STEERINGS)]


async def _client(url: str, c: int) -> dict:
    answers = {}
    async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=120) as client:
        for r in range(REQUESTS):
            out = await client.chat.completions.create(
                model="tiny-random", messages=[{"role": "user", "content": question(c, r)}], max_tokens=MAX_TOKENS,
                extra_body={"steering": steering(c, r)})
            answers[(c, r)] = (out.id, out.choices[0].message.content)
    return answers


def metric(url: str, name: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.split()[0] == name:
            return float(line.split()[-1])
    return 0.0


def test_64_clients_times_4_requests(served):
    from reasoning_dspy.program.lm import SteeredLM, engine_of

    cfg = ServeConfig(model="tiny-random", sae="tiny-planted", max_queue=256, max_batch_size=32)
    with ServerThread(create_app(cfg, served)) as server:
        async def run_all():
            return await asyncio.wait_for(asyncio.gather(*(_client(server.url, c) for c in range(CLIENTS))), 180)

        start = time.perf_counter()
        per_client = asyncio.run(run_all())
        elapsed = time.perf_counter() - start
        answers = {k: v for d in per_client for k, v in d.items()}
        assert len(answers) == CLIENTS * REQUESTS
        assert len({cid for cid, _ in answers.values()}) == CLIENTS * REQUESTS  # one completion per request
        chat_ok = metric(server.url, 'reasoning_dspy_requests_total{endpoint="/v1/chat/completions",status="200"}')
        assert chat_ok == CLIENTS * REQUESTS  # the server answered each request exactly once
        assert metric(server.url, "reasoning_dspy_batch_size_count") < CLIENTS * REQUESTS / 4  # batched
        assert httpx.get(f"{server.url}/health").json()["admitted"] == 0
    lm = SteeredLM(served.loaded, sae=served.sae, max_activation=served.max_activation, max_tokens=MAX_TOKENS,
                   cache=False, max_batch_size=1)
    try:
        for (c, r), (_, text) in sorted(answers.items()):  # serial: one call at a time, each its own batch
            spec = steering(c, r)
            if spec is not None and "top" in spec:
                spec = {"features": {str(f): spec["strength"] for f in served.ranking[:spec["top"]]},
                        "units": spec["units"]}
            assert lm(question(c, r), metadata={"steering": spec})[0] == text, (c, r)
    finally:
        engine_of(lm).close()
    print(f"\n{CLIENTS * REQUESTS} requests from {CLIENTS} clients in {elapsed:.2f} s")


def test_a_full_queue_answers_503_not_a_hang(served):
    cfg = ServeConfig(model="tiny-random", sae="tiny-planted", max_queue=2, max_batch_size=1, retry_after_s=2)
    body = {"model": "tiny-random", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 64}
    with ServerThread(create_app(cfg, served)) as server:
        async def burst():
            async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
                return await asyncio.wait_for(asyncio.gather(
                    *(http.post("/v1/chat/completions", json=body) for _ in range(12))), 60)

        start = time.perf_counter()
        responses = asyncio.run(burst())
        assert time.perf_counter() - start < 60
        codes = [r.status_code for r in responses]
        assert set(codes) == {200, 503} and codes.count(200) >= 2, codes
        refused = next(r for r in responses if r.status_code == 503)
        assert refused.headers["Retry-After"] == "2" and refused.json()["error"]["code"] == "queue_full"
        assert httpx.get(f"{server.url}/health").json()["admitted"] == 0  # every slot came back
        assert metric(server.url, "reasoning_dspy_rejected_total") == codes.count(503)
        assert httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=60).status_code == 200


def test_clients_that_disconnect_withdraw_their_queued_requests(served):
    cfg = ServeConfig(model="tiny-random", sae="tiny-planted", max_batch_size=1, max_tokens_limit=2000)
    # three rows of ~1000 tokens that run one after another (batch size 1): seconds in which to queue more
    long = {"model": "tiny-random", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2000, "n": 3}
    short = {"model": "tiny-random", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}
    with ServerThread(create_app(cfg, served)) as server:
        async def scenario():
            async with httpx.AsyncClient(base_url=server.url, timeout=120) as http:
                first = asyncio.ensure_future(http.post("/v1/chat/completions", json=long))
                for _ in range(500):  # until the long request's first row runs (the other two wait)
                    health = (await http.get("/health")).json()
                    if health["admitted"] == 3 and health["queue_depth"] == 2:
                        break
                    await asyncio.sleep(0.005)
                with pytest.raises(httpx.ReadTimeout):  # queued behind it, then the client gives up
                    await http.post("/v1/chat/completions", json=short, timeout=httpx.Timeout(60, read=0.2))
                async with http.stream("POST", "/v1/chat/completions", json={**short, "stream": True}) as stream:
                    async for line in stream.aiter_lines():  # the first event comes at once ...
                        assert line.startswith("data: ") and '"role":"assistant"' in line
                        break  # ... then the client closes the stream
                return await first

        answer = asyncio.run(scenario())
        assert answer.status_code == 200
        assert [c["finish_reason"] for c in answer.json()["choices"]] == ["length"] * 3
        for _ in range(100):
            if metric(server.url, 'reasoning_dspy_cancelled_total{stage="queued"}') == 2:
                break
            time.sleep(0.05)
        assert metric(server.url, 'reasoning_dspy_cancelled_total{stage="queued"}') == 2
        assert httpx.get(f"{server.url}/health").json()["admitted"] == 0
        assert metric(server.url, "reasoning_dspy_batch_size_count") == 3  # the withdrawn requests never ran


def test_a_stream_arrives_token_by_token_and_a_client_that_leaves_stops_its_running_row(served):
    """The first text arrives while the row still decodes (it holds its admission slot until done), and
    closing the stream stops the row at its next step instead of letting it run to max_tokens."""
    cfg = ServeConfig(model="tiny-random", sae="tiny-planted", max_batch_size=1, max_tokens_limit=2000)
    body = {"model": "tiny-random", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1500}
    with ServerThread(create_app(cfg, served)) as server:
        start = time.monotonic()
        whole = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=120).json()
        full_run = time.monotonic() - start
        assert whole["choices"][0]["finish_reason"] == "length"  # tiny-random never says EOS here

        async def leave_after_first_text() -> tuple[str, int]:
            async with httpx.AsyncClient(base_url=server.url, timeout=120) as http:
                async with http.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as stream:
                    async for line in stream.aiter_lines():
                        if '"content":"' in line and '"role":"assistant"' not in line:
                            admitted = (await http.get("/health")).json()["admitted"]
                            return line, admitted  # the client closes the stream here

        first, admitted_meanwhile = asyncio.run(leave_after_first_text())
        left = time.monotonic()
        assert admitted_meanwhile == 1  # the row was still running when its first text arrived
        piece = json.loads(first.removeprefix("data: "))["choices"][0]["delta"]["content"]
        assert whole["choices"][0]["message"]["content"].startswith(piece)
        while httpx.get(f"{server.url}/health").json()["admitted"] and time.monotonic() - left < full_run:
            time.sleep(0.01)
        stopped_after = time.monotonic() - left
        assert httpx.get(f"{server.url}/health").json()["admitted"] == 0
        assert stopped_after < full_run / 4, (stopped_after, full_run)  # it did not run to max_tokens
        assert metric(server.url, 'reasoning_dspy_cancelled_total{stage="running"}') == 1
