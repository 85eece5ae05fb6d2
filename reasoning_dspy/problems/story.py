"""Small helpers the families tell their stories with."""

from __future__ import annotations

from reasoning_dspy.problems.base import Draft


def say(d: Draft, templates: tuple[str, ...], **fields: object) -> str:
    text = d.pick(templates).format(**fields)
    return text[0].upper() + text[1:]


def join_words(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
