"""The examples in docs/serve.md and the README's serve section, run as written: the openai client,
`dspy.LM("openai/...")`, the OpenAI Agents SDK and a DSPy ReAct agent, each steering through the
server and asking `/v1/explain` about an answer."""

from __future__ import annotations

import os
import re
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import pytest  # noqa: E402

from reasoning_dspy.sae import planted  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


@pytest.fixture(scope="module")
def docs_run():
    import dspy

    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=True)  # never the user's disk cache
    namespace: dict = {"__name__": "docs_serve"}
    blocks = python_blocks((ROOT / "docs" / "serve.md").read_text())
    assert len(blocks) == 6
    try:
        for i, block in enumerate(blocks[:-1]):
            exec(compile(block, f"docs/serve.md[python block {i}]", "exec"), namespace)
    finally:
        exec(compile(blocks[-1], "docs/serve.md[stop]", "exec"), namespace)  # server.stop()
    return namespace


def test_openai_client_example(docs_run):
    response, report = docs_run["response"], docs_run["report"]
    assert " wait" in response.choices[0].message.content
    assert report["source"]["id"] == response.id
    assert report["evidence"] and report["evidence"][0]["feature"] == planted.DETECT
    assert "wait" in report["evidence"][0]["label"]


def test_dspy_lm_example(docs_run):
    report = docs_run["dspy_report"]
    assert report["source"]["text"] == docs_run["dspy_answer"]
    assert report["steering"]["applied"]["features"] == {"3": 0.4, "5": 0.4}


def test_openai_agents_example(docs_run):
    answer, report = docs_run["agent_answer"], docs_run["agent_report"]
    assert " wait" in answer and report["source"] == {"type": "text"}
    assert any(e["token"] == " wait" for e in report["evidence"])


def test_react_agent_example(docs_run):
    import json

    trajectory = docs_run["prediction"].trajectory
    assert [trajectory[f"tool_name_{i}"] for i in range(3)] == ["steered_answer", "explain_last_answer", "finish"]
    assert isinstance(trajectory["observation_0"], str)
    explained = json.loads(trajectory["observation_1"])
    assert explained["features"][0]["index"] == planted.DETECT and explained["features"][0]["fired_on"] > 0
    assert explained["evidence"] and all(e["token"] == " wait" for e in explained["evidence"])
    assert docs_run["prediction"].answer == "91 = 7 × 13, not prime."


def test_readme_serve_section_runs(capsys):
    text = (ROOT / "README.md").read_text()
    section = text.split("## Serve steered models over the OpenAI API")[1].split("\n## ")[0]
    [block] = python_blocks(section)
    namespace: dict = {"__name__": "readme_serve"}
    exec(compile(block, "README.md[serve]", "exec"), namespace)
    assert " wait" in namespace["reply"].choices[0].message.content
    assert namespace["why"]["evidence"] and namespace["why"]["evidence"][0]["token"] == " wait"
    assert "wait/" in capsys.readouterr().out  # the evidence label printed
