"""`reasoning-dspy serve` through real clients: the `openai` SDK and `dspy.LM("openai/...")` against a
server on 127.0.0.1 running tiny-random with the planted SAE (real model, real engine, in-process
uvicorn on a free port). Steering through the extra field must equal `SteeredLM`'s in-process answer."""

from __future__ import annotations

import json
import logging
import os
import time

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # dspy may import litellm: never fetch its cost map

import httpx  # noqa: E402
import openai  # noqa: E402
import pytest  # noqa: E402

from reasoning_dspy.sae import planted  # noqa: E402
from reasoning_dspy.serve import ServeConfig, ServerThread, create_app, load_served_model  # noqa: E402
from reasoning_dspy.serve.logs import JsonFormatter  # noqa: E402

KEY = "sk-test-key"
QUESTION = "Is 91 prime?"
PUSH = {"features": {str(planted.PUSH): 0.5}, "units": "residual"}  # makes the model write " wait"


@pytest.fixture(scope="module")
def served():
    return load_served_model("tiny-random", "tiny-planted")


@pytest.fixture(scope="module")
def server(served):
    cfg = ServeConfig(model="tiny-random", sae="tiny-planted", api_key=KEY, default_max_tokens=12)
    with ServerThread(create_app(cfg, served)) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def steered_lm(served):
    from reasoning_dspy.program.lm import SteeredLM, engine_of

    lm = SteeredLM(served.loaded, sae=served.sae, max_activation=served.max_activation, max_tokens=12, cache=False)
    yield lm
    engine_of(lm).close()


def chat(client, content: str = QUESTION, **kwargs):
    return client.chat.completions.create(model="tiny-random", messages=[{"role": "user", "content": content}],
                                          max_tokens=12, **kwargs)


def test_models_lists_the_served_model(client, served):
    ids = [m.id for m in client.models.list().data]
    assert ids == ["tiny-random"]
    card = client.models.retrieve("tiny-random")
    assert card.model_extra["sae"] == "tiny-planted" and card.model_extra["d_sae"] == planted.D_SAE


def test_openai_client_greedy_steering_and_parity_with_steered_lm(client, steered_lm):
    plain = [chat(client).choices[0].message.content for _ in range(2)]
    assert plain[0] == plain[1]  # greedy: deterministic
    steered = chat(client, extra_body={"steering": PUSH})
    text = steered.choices[0].message.content
    assert text != plain[0] and " wait" in text  # the planted push feature makes the model write " wait"
    # the same request in process, steered through DSPy metadata, gives the same text
    assert steered_lm(QUESTION, metadata={"steering": PUSH})[0] == text
    assert steered_lm(QUESTION, metadata={"steering": None})[0] == plain[0]
    echo = steered.model_extra["steering"]
    assert echo["applied"]["features"] == {str(planted.PUSH): 0.5} and echo["source"] == "features"
    assert steered.usage.completion_tokens == 12 and steered.usage.prompt_tokens > 0
    assert steered.usage.total_tokens == steered.usage.prompt_tokens + 12
    extra = steered.choices[0].model_extra["reasoning_dspy"]
    assert extra["perturbation"]["ratio"] == pytest.approx(0.5, rel=1e-3)
    assert extra["reasoning_activation"] > chat(client).choices[0].model_extra["reasoning_dspy"]["reasoning_activation"]


def test_dspy_lm_through_the_server(server, client, steered_lm):
    import dspy

    def lm(**kwargs):
        return dspy.LM("openai/tiny-random", api_base=f"{server.url}/v1", api_key=KEY, max_tokens=12,
                       temperature=0.0, cache=False, num_retries=0, **kwargs)

    plain, steered = lm(), lm(extra_body={"steering": PUSH})
    assert plain(QUESTION) == plain(QUESTION) == [chat(client).choices[0].message.content]
    assert steered(QUESTION) == [chat(client, extra_body={"steering": PUSH}).choices[0].message.content]
    assert steered(QUESTION) == steered_lm(QUESTION, metadata={"steering": PUSH})  # in process, same answer
    assert steered(QUESTION) != plain(QUESTION)


def test_top_n_steering_uses_the_ranking_and_echoes_labels(client):
    top = chat(client, extra_body={"steering": {"top": 2, "strength": 0.4, "units": "residual"}})
    explicit = chat(client, extra_body={"steering": {"features": {"3": 0.4, "5": 0.4}, "units": "residual"}})
    assert top.choices[0].message.content == explicit.choices[0].message.content
    echo = top.model_extra["steering"]
    assert echo["source"] == "top" and echo["ranking"] == "planted candidates"
    assert [f["index"] for f in echo["features"]] == planted.CANDIDATES[:2]
    assert all("label" in f and f["strength"] == 0.4 for f in echo["features"])


def test_stream_equals_non_stream(client):
    for steering in (None, PUSH):
        body = {"steering": steering}
        whole = chat(client, extra_body=body)
        chunks = list(chat(client, extra_body=body, stream=True, stream_options={"include_usage": True}))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == whole.choices[0].message.content
        assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        assert finish == [whole.choices[0].finish_reason]
    # legacy completions stream too
    args = dict(model="tiny-random", prompt="The cat", max_tokens=8, extra_body={"steering": PUSH})
    whole = client.completions.create(**args)
    streamed = "".join(c.choices[0].text for c in client.completions.create(**args, stream=True) if c.choices)
    assert streamed == whole.choices[0].text


def test_completions_n_stop_and_usage(client):
    out = client.completions.create(model="tiny-random", prompt=["The cat", "Numbers add up"], n=2, max_tokens=6)
    assert len(out.choices) == 4 and [c.index for c in out.choices] == [0, 1, 2, 3]
    assert out.choices[0].text == out.choices[1].text  # greedy: n copies agree
    assert out.choices[0].text != out.choices[2].text
    assert out.usage.completion_tokens == sum(c.model_extra["reasoning_dspy"]["completion_tokens"] for c in out.choices)
    steered = chat(client, extra_body={"steering": PUSH}).choices[0].message.content
    cut = chat(client, extra_body={"steering": PUSH}, stop=[" wait"]).choices[0]
    assert cut.finish_reason == "stop" and cut.message.content == steered[: steered.index(" wait")]


def test_seed_makes_sampling_reproducible(client):
    def sample(seed):
        return chat(client, temperature=1.0, seed=seed, n=2).choices

    first, again = sample(7), sample(7)
    assert [c.message.content for c in first] == [c.message.content for c in again]
    assert sample(8)[0].message.content != first[0].message.content


def test_a_seeded_request_neither_uses_nor_reseeds_the_global_rng(client):
    """Another thread drawing from torch's global generator while a seeded request samples changes
    nothing in the answer, and the request leaves that generator's stream as it was."""
    import threading

    import torch

    quiet = [c.message.content for c in chat(client, temperature=1.0, seed=11, n=2).choices]
    stop = threading.Event()

    def draw():
        while not stop.wait(0.0005):  # a draw every half millisecond: between the request's sampling steps
            torch.rand(8)

    thread = threading.Thread(target=draw)
    thread.start()
    try:
        busy = [c.message.content for c in chat(client, temperature=1.0, seed=11, n=2).choices]
    finally:
        stop.set()
        thread.join()
    assert busy == quiet
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    chat(client, temperature=1.0, seed=5)
    assert torch.equal(torch.rand(4), expected)  # no draw and no reseed of the caller's stream


def test_explain_a_completion_and_a_text(server, client):
    steered = chat(client, extra_body={"steering": PUSH})
    headers = {"Authorization": f"Bearer {KEY}"}
    out = httpx.post(f"{server.url}/v1/explain", json={"completion_id": steered.id}, headers=headers).json()
    assert out["source"] == {"type": "completion", "id": steered.id, "choice": 0,
                             "text": steered.choices[0].message.content}
    assert out["n_tokens"] == 12 and len(out["tokens"]) == 12
    assert out["steering"]["applied"]["features"] == {str(planted.PUSH): 0.5}
    detector = out["reasoning_features"][0]
    assert detector["index"] == planted.DETECT and "wait" in detector["top_words"] and detector["fired_on"] > 0
    assert out["evidence"] and all(e["token"] == " wait" and e["feature"] == planted.DETECT for e in out["evidence"])
    assert "[[ wait]]" in out["evidence"][0]["context"] and "wait" in out["evidence"][0]["label"]
    assert out["reasoning_activation"] > 0
    fired = [t for t in out["tokens"] if t["top_features"]]
    assert fired and all(t["top_features"][0]["index"] == planted.DETECT for t in fired)
    plain = httpx.post(f"{server.url}/v1/explain", json={"text": "so wait I think", "top_k": 3},
                       headers=headers).json()
    assert plain["source"] == {"type": "text"} and [t["token"] for t in plain["tokens"]][-3:] == [" wait", " I", " think"]
    assert any(e["token"] == " wait" for e in plain["evidence"])


def test_health_and_metrics(server, client):
    chat(client)
    health = httpx.get(f"{server.url}/health", headers={"Authorization": f"Bearer {KEY}"}).json()
    assert health["status"] == "ok" and health["admitted"] == 0 and health["config"]["api_key_required"]
    assert "api_key" not in health["config"]
    text = httpx.get(f"{server.url}/metrics").text
    for name in ("reasoning_dspy_queue_depth 0", "reasoning_dspy_batch_size_count", "reasoning_dspy_tokens_per_second",
                 'reasoning_dspy_requests_total{endpoint="/v1/chat/completions",status="200"}',
                 "reasoning_dspy_generated_tokens_total"):
        assert name in text
    generated = next(line for line in text.splitlines() if line.startswith("reasoning_dspy_generated_tokens_total"))
    assert int(generated.split()[-1]) >= 12


def test_request_logs_are_structured(client, caplog):
    with caplog.at_level(logging.INFO, logger="reasoning_dspy.serve"):
        response = chat(client, extra_body={"steering": PUSH})
        for _ in range(200):  # the request line is written once the response has gone out
            lines = [json.loads(JsonFormatter().format(r)) for r in caplog.records if r.getMessage() == "request"]
            mine = [x for x in lines if x.get("completion_id") == response.id]  # an earlier test's line may land here
            if mine:
                break
            time.sleep(0.01)
    line = mine[0]
    assert line["status"] == 200 and line["path"] == "/v1/chat/completions"
    assert line["completion_tokens"] == 12 and line["steering"]["features"] == {str(planted.PUSH): 0.5}
    assert {"ts", "level", "request_id", "duration_ms"} <= set(line)
