"""What `reasoning-dspy serve` tells whom: with an API key set, `/health` names no files to a client
without the key, and serving beyond loopback without a key is warned about."""

from __future__ import annotations

import logging
import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import httpx  # noqa: E402
import pytest  # noqa: E402

from reasoning_dspy.serve import ServeConfig, ServerThread, create_app, load_served_model  # noqa: E402
from reasoning_dspy.serve.config import is_loopback  # noqa: E402

SECRET_FOLDER = "/srv/private/experiments/scores"


@pytest.fixture(scope="module")
def served():
    return load_served_model("tiny-random", "tiny-planted")


def test_health_names_no_files_without_the_key(served):
    cfg = ServeConfig(model="tiny-random", sae="tiny-planted", scores=SECRET_FOLDER, api_key="sk-k")
    with ServerThread(create_app(cfg, served)) as server:
        open_ = httpx.get(f"{server.url}/health")
        wrong = httpx.get(f"{server.url}/health", headers={"Authorization": "Bearer sk-wrong"})
        keyed = httpx.get(f"{server.url}/health", headers={"Authorization": "Bearer sk-k"})
    for response in (open_, wrong):
        assert response.status_code == 200 and response.json()["status"] == "ok"
        assert SECRET_FOLDER not in response.text and "config" not in response.json()
        assert response.json()["api_key_required"] is True and "admitted" in response.json()
    assert keyed.json()["config"]["scores"] == SECRET_FOLDER  # the operator still sees everything


def test_health_without_a_key_set_reports_everything(served):
    with ServerThread(create_app(ServeConfig(model="tiny-random", sae="tiny-planted", scores=SECRET_FOLDER),
                                 served)) as server:
        health = httpx.get(f"{server.url}/health").json()
    assert health["config"]["scores"] == SECRET_FOLDER and health["api_key_required"] is False


@pytest.mark.parametrize("host, key, warned", [
    ("0.0.0.0", None, True), ("192.168.1.5", None, True), ("my-host.example", None, True),
    ("0.0.0.0", "sk-k", False), ("127.0.0.1", None, False), ("localhost", None, False), ("::1", None, False),
])
def test_serving_beyond_loopback_without_a_key_warns(served, caplog, monkeypatch, host, key, warned):
    monkeypatch.delenv("REASONING_DSPY_API_KEY", raising=False)
    cfg = ServeConfig(model="tiny-random", sae="tiny-planted", host=host, api_key=key)
    with caplog.at_level(logging.WARNING, logger="reasoning_dspy.serve"):
        with ServerThread(create_app(cfg, served)):  # the thread itself binds 127.0.0.1
            pass
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("without an API key" in m and host in m for m in messages) == warned, messages


def test_loopback_addresses():
    assert all(map(is_loopback, ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "LOCALHOST"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "10.0.0.1", "example.org", ""]))
