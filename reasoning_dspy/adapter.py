"""A chat adapter that turns unparseable model output into an answer instead of an exception.

DSPy's `ChatAdapter` raises `AdapterParseError` when a response lacks the `[[ ## field ## ]]`
markers, retries through `JSONAdapter`, and `Evaluate` gives up after `max_errors`. Small or random
models (and steered ones pushed off-distribution) rarely produce the markers. `LenientChatAdapter`
keeps whatever fields parse and fills the rest from the leftover text, so the answer is *scored*
(usually as wrong) and evaluation and optimizers keep running.
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

    def _call_postprocess(self, processed_signature: Any, original_signature: Any, outputs: list, lm: Any,
                          lm_kwargs: dict) -> list[dict[str, Any]]:
        # An empty response (e.g. EOS first) is an empty answer, not "The LM returned an empty response".
        outputs = [_non_empty(o) for o in outputs]
        return super()._call_postprocess(processed_signature, original_signature, outputs, lm, lm_kwargs)

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


def _non_empty(output: Any) -> Any:
    if isinstance(output, dict):
        if not output.get("text") and not output.get("tool_calls"):
            return {**output, "text": " "}
        return output
    return output or " "


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
