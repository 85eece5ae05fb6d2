"""A chat adapter that turns unparseable model output into an answer instead of an exception.

DSPy's `ChatAdapter` raises `AdapterParseError` when a response lacks the `[[ ## field ## ]]`
markers or is empty, retries through `JSONAdapter`, and `Evaluate` gives up after `max_errors`.
Small or random models (and steered ones pushed off-distribution) rarely produce the markers, and
sometimes stop at once. `LenientChatAdapter` keeps whatever fields parse and fills the rest from
the leftover text, so the answer is *scored* (usually as wrong) and evaluation and optimizers keep
running. It overrides only `ChatAdapter`'s public methods (`parse`, `__call__`, `acall`).
"""

from __future__ import annotations

import logging
import re
import threading
import typing
from typing import Any

from dspy.adapters.chat_adapter import ChatAdapter, field_header_pattern
from dspy.adapters.utils import parse_value
from dspy.utils.exceptions import AdapterParseError

logger = logging.getLogger(__name__)

_MARKER = re.compile(r"\[\[\s*##\s*\w+\s*##\s*\]\]")


class LenientChatAdapter(ChatAdapter):
    """`ChatAdapter` formatting; parsing that never raises on malformed output.

    Missing output fields are filled from the text left once the parsed sections are removed: the
    last missing field (usually the answer) gets that text, earlier missing text fields get "".
    Typed fields get the text parsed as their type when possible, else a single-item list for list
    fields, else None. `n_salvaged` counts the responses that needed this.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("use_json_adapter_fallback", False)
        super().__init__(*args, **kwargs)
        self.n_salvaged = 0
        self._count_lock = threading.Lock()

    def __call__(self, lm: Any, lm_kwargs: dict[str, Any], signature: Any, demos: list[dict[str, Any]],
                 inputs: dict[str, Any]) -> list[dict[str, Any]]:
        _check_steering(lm_kwargs)
        try:
            return super().__call__(lm, lm_kwargs, signature, demos, inputs)
        except AdapterParseError:  # `parse` never raises: the LM answered nothing at all
            return self._empty_answers(signature, lm_kwargs)

    async def acall(self, lm: Any, lm_kwargs: dict[str, Any], signature: Any, demos: list[dict[str, Any]],
                    inputs: dict[str, Any]) -> list[dict[str, Any]]:
        _check_steering(lm_kwargs)
        try:
            return await super().acall(lm, lm_kwargs, signature, demos, inputs)
        except AdapterParseError:
            return self._empty_answers(signature, lm_kwargs)

    def _empty_answers(self, signature: Any, lm_kwargs: dict[str, Any]) -> list[dict[str, Any]]:
        """An empty response (EOS first) is an empty answer. DSPy refuses the whole call when any of its
        `n` completions is empty, so all `n` answers of such a call come back empty."""
        with self._count_lock:
            self.n_salvaged += 1
        return [self._salvage(signature, "") for _ in range(int(lm_kwargs.get("n") or 1))]

    def parse(self, signature: Any, completion: str) -> dict[str, Any]:
        try:
            return super().parse(signature, completion)
        except AdapterParseError:
            with self._count_lock:
                self.n_salvaged += 1
            return self._salvage(signature, completion)

    def _salvage(self, signature: Any, completion: str) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        leftover: list[str] = []
        current: str | None = None
        for line in completion.splitlines():
            match = field_header_pattern.match(line.strip())
            if match and match.group(1) in signature.output_fields:
                current = match.group(1)
                fields.setdefault(current, [])
                rest = line.strip()[match.end():].strip()
                if rest:
                    fields[current].append(rest)
            elif match:
                current = None  # another field's header (an input echoed back, "completed")
            elif current is not None:
                fields[current].append(line)
            else:
                leftover.append(line)
        parsed: dict[str, Any] = {}
        for name, lines in fields.items():
            text = "\n".join(lines).strip()
            parsed[name] = _coerce(text, signature.output_fields[name].annotation)
        rest = _MARKER.sub("", "\n".join(leftover)).strip()
        missing = [name for name in signature.output_fields if name not in parsed]
        for i, name in enumerate(missing):
            annotation = signature.output_fields[name].annotation
            parsed[name] = _coerce(rest if i == len(missing) - 1 else "", annotation)
        logger.debug("salvaged unparseable output for %s", list(signature.output_fields))
        return parsed


def _check_steering(lm_kwargs: dict[str, Any]) -> None:
    """Refuse bad steering in `metadata` with our message, before DSPy rejects it as non-JSON (NaN)."""
    meta = lm_kwargs.get("metadata")
    if isinstance(meta, dict) and "steering" in meta:
        from reasoning_dspy.steering import as_spec

        as_spec(meta["steering"])


def _coerce(text: str, annotation: Any) -> Any:
    if annotation is str:
        return text
    try:
        return parse_value(text, annotation)
    except Exception:  # noqa: BLE001 - any parse failure falls through to a typed default
        origin = typing.get_origin(annotation)
        if origin in (list, tuple, set) or annotation in (list, tuple, set):
            return [text] if text else []
        return None
