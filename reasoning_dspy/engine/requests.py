"""Turn what DSPy sends (a `dspy.lm15.Request`, or an LM call's messages) into prompt token ids."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def request_messages(request: Any, model_id: str) -> tuple[list[dict], str | None]:
    """The chat messages and system prompt of a `dspy.lm15.Request`, refusing what a local text model
    cannot take (tools, images), with a message that names the model."""
    from dspy.clients.engines.base import validate_request
    from dspy.lm15 import UnsupportedFeatureError

    validate_request(request)
    if request.tools:
        raise UnsupportedFeatureError(f"{model_id} runs in process and does not call tools")
    messages = []
    for m in request.messages:
        if m.text is None:
            raise UnsupportedFeatureError(f"{model_id} takes text messages only, got parts "
                                          f"{[p.type for p in m.parts]} in a {m.role} message")
        messages.append({"role": m.role, "content": m.text})
    system = request.system
    if system is not None and not isinstance(system, str):
        system = "".join(getattr(p, "text", "") or "" for p in system)
    return text_messages(messages, model_id), system


def text_messages(messages: Sequence[dict], model_id: str) -> list[dict]:
    """Chat messages as `{"role", "content": str}` (DSPy's "developer" role is a system message)."""
    out = []
    for m in messages:
        content = m.get("content")
        if not isinstance(content, str):
            from dspy.lm15 import UnsupportedFeatureError

            raise UnsupportedFeatureError(f"{model_id} takes text messages only, got {type(content).__name__} "
                                          f"content in a {m.get('role')} message")
        out.append({"role": "system" if m.get("role") == "developer" else m.get("role"), "content": content})
    return out


def render_chat(tokenizer: Any, messages: list[dict], system: str | None) -> list[int]:
    """Prompt token ids: the tokenizer's chat template (or a plain `Role: text` transcript when it has
    none), ending where the assistant's answer starts; BOS exactly once."""
    msgs = ([{"role": "system", "content": system}] if system else []) + messages
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    else:
        text = "".join(f"{m['role'].capitalize()}: {m['content']}\n" for m in msgs) + "Assistant:"
    bos = tokenizer.bos_token
    return tokenizer(text, add_special_tokens=not (bos and text.startswith(bos)))["input_ids"]
