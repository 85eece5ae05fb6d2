"""`reasoning-dspy serve --model smollm2-reasoner`: the shipped SAE and ReasonScore table by default,
top-N steering by ReasonScore and explain with labels and kinds from the shipped analysis (slow:
loads the real 135M model)."""

from __future__ import annotations

import httpx
import openai
import pytest

pytestmark = pytest.mark.slow


def test_smollm2_reasoner_with_its_shipped_sae():
    from reasoning_dspy.serve import ServeConfig, ServerThread, create_app, load_served_model

    served = load_served_model("smollm2-reasoner")
    assert served.sae_name == "smollm2-reasoner" and served.ranking_source == "reasonscore"
    assert served.reasoning_features == served.scores.top(10)
    messages = [{"role": "user", "content": "Is 91 prime? Answer briefly."}]
    with ServerThread(create_app(ServeConfig(model="smollm2-reasoner"), served)) as server:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)
        plain = client.chat.completions.create(model="smollm2-reasoner", messages=messages, max_tokens=12)
        steered = client.chat.completions.create(
            model="smollm2-reasoner", messages=messages, max_tokens=12,
            extra_body={"steering": {"top": 3, "strength": 0.2, "units": "residual"}})
        assert steered.choices[0].message.content != plain.choices[0].message.content
        echo = steered.model_extra["steering"]
        assert sorted(f["index"] for f in echo["features"]) == sorted(served.scores.top(3))
        assert all(f["kind"] is not None and f["top_words"] for f in echo["features"])  # shipped analysis
        report = httpx.post(f"{server.url}/v1/explain", json={"completion_id": steered.id}, timeout=120).json()
    assert report["n_tokens"] == steered.usage.completion_tokens
    assert report["reasoning_activation"] > 0 and any(f["fired_on"] for f in report["reasoning_features"])
    assert report["evidence"] and all(e["feature"] in served.reasoning_features for e in report["evidence"])
    assert any(word in report["evidence"][0]["label"] for word in ("wait", "hmm", "let me"))
