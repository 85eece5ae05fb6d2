"""A chat adapter that turns unparseable model output into an answer instead of an exception.

DSPy's `ChatAdapter` raises `AdapterParseError` when a response lacks the `[[ ## field ## ]]`
markers or is empty, retries through `JSONAdapter`, and `Evaluate` gives up after `max_errors`.
Small or random models (and steered ones pushed off-distribution) rarely produce the markers, and
sometimes stop at once. `LenientChatAdapter` keeps whatever fields parse and fills the rest from
the leftover text, so the answer is *scored* (usually as wrong) and evaluation and optimizers keep
running. It overrides only `ChatAdapter`'s public methods (`parse`, `__call__`, `acall`).

A small instruct model (SmolLM2-135M) given DSPy's format echoes markers half-remembered
(`[## reasoning ##]`), repeats the question, or just explains step by step and ends "So the answer is
12." `salvage` reads such text the way a person would: echoed markers are stripped and used to split
where present, the final field takes an explicit answer ("the answer is X", "Answer: X", "#### X",
`\\boxed{X}`), else the last number for a numeric field, else the last line, and the text before it is
the reasoning. It says what it did: the rule is logged (a WARNING the first time in a process, INFO
after) and put on the prediction as `pred.salvaged` (None for answers that parsed normally).
"""

from __future__ import annotations

import logging
import re
import threading
import typing
from contextvars import ContextVar
from typing import Any

from dspy.adapters.chat_adapter import ChatAdapter
from dspy.adapters.utils import parse_value
from dspy.utils.exceptions import AdapterParseError

logger = logging.getLogger("reasoning_dspy.adapter")  # the name users filter on, whatever module holds it

#: A field marker as DSPy writes it (`[[ ## name ## ]]`) or as small models echo it: single or
#: missing brackets, a missing closing `##` or bracket (cut off).
_MARKER = re.compile(r"\[{0,2}[ \t]*##[ \t]*(\w+)[ \t]*(?:##[ \t]*)?\]{0,2}")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_EXPLICIT = [  # (rule name, pattern whose group 1 is the answer); the last match in the text counts
    ("\\boxed{…}", re.compile(r"\\boxed\{([^{}]*)\}")),
    ("#### answer", re.compile(r"^[ \t]*####[ \t]*(.+?)[ \t]*$", re.M)),
    ("'answer is/: …'", re.compile(r"\banswer\b[*\s]*(?:is|=|:)[*\s]*(.+?)[ \t]*$", re.I | re.M)),
]
_NUMERIC_WORDS = re.compile(r"\b(number|count|how many|total|amount|sum|price|cost|age|quantity|numeric|integer)\b",
                            re.I)
_NOTES: ContextVar[list[str | None] | None] = ContextVar("reasoning_dspy_salvage_notes", default=None)
_warned = threading.Event()


class LenientChatAdapter(ChatAdapter):
    """`ChatAdapter` formatting; parsing that never raises on malformed output.

    Well-formed output parses exactly as with `ChatAdapter`. Otherwise `salvage` splits the text
    into the output fields (see the module docstring); typed fields get the text parsed as their
    type when possible, else a single-item list for list fields, else None. The prediction carries
    the rule used as `pred.salvaged`; `n_salvaged` counts the responses that needed it.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("use_json_adapter_fallback", False)
        super().__init__(*args, **kwargs)
        self.n_salvaged = 0
        self._count_lock = threading.Lock()

    def __call__(self, lm: Any, lm_kwargs: dict[str, Any], signature: Any, demos: list[dict[str, Any]],
                 inputs: dict[str, Any]) -> list[dict[str, Any]]:
        _check_steering(lm_kwargs)
        token = _NOTES.set([])
        try:
            values = super().__call__(lm, lm_kwargs, signature, demos, inputs)
        except AdapterParseError:  # `parse` never raises: the LM answered nothing at all
            values = self._empty_answers(signature, lm_kwargs)
        finally:
            notes = _NOTES.get()
            _NOTES.reset(token)
        return _annotate(values, notes)

    async def acall(self, lm: Any, lm_kwargs: dict[str, Any], signature: Any, demos: list[dict[str, Any]],
                    inputs: dict[str, Any]) -> list[dict[str, Any]]:
        _check_steering(lm_kwargs)
        token = _NOTES.set([])
        try:
            values = await super().acall(lm, lm_kwargs, signature, demos, inputs)
        except AdapterParseError:
            values = self._empty_answers(signature, lm_kwargs)
        finally:
            notes = _NOTES.get()
            _NOTES.reset(token)
        return _annotate(values, notes)

    def _empty_answers(self, signature: Any, lm_kwargs: dict[str, Any]) -> list[dict[str, Any]]:
        """An empty response (EOS first) is an empty answer. DSPy refuses the whole call when any of its
        `n` completions is empty, so all `n` answers of such a call come back empty."""
        with self._count_lock:
            self.n_salvaged += 1
        n = int(lm_kwargs.get("n") or 1)
        answers = [salvage(signature, "") for _ in range(n)]
        _log_salvage(answers[0][1])
        notes = _NOTES.get()
        if notes is not None:
            notes[:] = [note for _, note in answers]
        return [parsed for parsed, _ in answers]

    def parse(self, signature: Any, completion: str) -> dict[str, Any]:
        try:
            parsed, note = super().parse(signature, completion), None
        except AdapterParseError:
            with self._count_lock:
                self.n_salvaged += 1
            parsed, note = salvage(signature, completion)
            _log_salvage(note)
        notes = _NOTES.get()
        if notes is not None:
            notes.append(note)
        return parsed


def _check_steering(lm_kwargs: dict[str, Any]) -> None:
    """Refuse bad steering in `metadata` with our message, before DSPy rejects it as non-JSON (NaN),
    and write valid steering in its JSON form: a `SteeringSpec` or `{"features": {3: 2.0}}` (int
    keys, as Python users write them) would otherwise fail DSPy's JSON check on request metadata."""
    meta = lm_kwargs.get("metadata")
    if isinstance(meta, dict) and "steering" in meta:
        from reasoning_dspy.steering import as_spec

        spec = as_spec(meta["steering"])
        lm_kwargs["metadata"] = {**meta, "steering": spec.model_dump(mode="json") if spec is not None else None}


def _coerce(text: str, annotation: Any) -> Any:
    if annotation is str:
        return text
    if annotation is int and re.fullmatch(r"-?\d+\.0*", text):
        return int(float(text))
    try:
        return parse_value(text, annotation)
    except Exception:  # noqa: BLE001 - any parse failure falls through to a typed default
        origin = typing.get_origin(annotation)
        if origin in (list, tuple, set) or annotation in (list, tuple, set):
            return [text] if text else []
        return None


# -- salvage -----------------------------------------------------------------------------------

def salvage(signature: Any, completion: str) -> tuple[dict[str, Any], str]:
    """Read the output fields of `signature` from text that lacks DSPy's format: `(fields, rule)`,
    where `rule` says in words how each field was found. Never raises."""
    outputs = list(signature.output_fields)
    known = {name.lower() for name in (*signature.input_fields, *outputs, "completed")}
    sections: dict[str, str] = {}
    leftover: list[str] = []
    current: str | None = None
    position = 0
    for match in _MARKER.finditer(completion or ""):
        name = match.group(1).lower()
        if name not in known:
            continue
        _keep(completion[position:match.start()], current, sections, leftover)
        # text after an echoed input marker or [[ ## completed ## ]] is no answer: filed under "", dropped
        current = next((o for o in outputs if o.lower() == name), "")
        position = match.end()
    _keep((completion or "")[position:], current, sections, leftover)
    sections.pop("", None)
    rules: list[str] = []
    if sections:
        rules.append("split at echoed markers for " + ", ".join(sections))
    final, earlier = outputs[-1], outputs[:-1]
    rest = _clean("\n".join(leftover))
    if sections.get(final):
        answer_text, before, how = sections[final], "", "its marker"
    else:
        source = rest
        if not source:  # no unmarked text: an answer stated inside another field (reasoning)
            source = next((sections[o] for o in reversed(earlier) if sections.get(o)), "")
        answer_text, before, how = _final_answer(source, _is_numeric(final, signature.output_fields[final]),
                                                 explicit_only=not rest)
        if not rest:
            before = ""
    rules.append(f"{final} = {how}")
    missing = [o for o in earlier if not sections.get(o)]
    parsed: dict[str, Any] = {}
    for name in outputs:
        annotation = signature.output_fields[name].annotation
        if name == final:
            text = answer_text
        elif name in sections and sections[name]:
            text = sections[name]
        elif missing and name == missing[-1] and before:
            text = before
            rules.append(f"{name} = the text before the answer")
        else:
            text = ""
        parsed[name] = _coerce(text, annotation)
    return parsed, "; ".join(rules)


def _keep(text: str, current: str | None, sections: dict[str, str], leftover: list[str]) -> None:
    """File `text` under the field whose marker precedes it (the first non-empty one wins), else as leftover."""
    text = _clean(text)
    if current is None:
        leftover.append(text)
    elif text and not sections.get(current):
        sections[current] = text
    else:
        sections.setdefault(current, "")


def _clean(text: str) -> str:
    """Text without code fences and surrounding blank lines."""
    lines = [line for line in text.splitlines() if line.strip() not in ("```", "```python", "```text")]
    return "\n".join(lines).strip()


def _final_answer(text: str, numeric: bool, explicit_only: bool) -> tuple[str, str, str]:
    """`(answer, text before it, rule)` of the final field from `text`."""
    for rule, pattern in _EXPLICIT:
        matches = list(pattern.finditer(text))
        if not matches:
            continue
        match = matches[-1]
        value = match.group(1).strip().strip("*").rstrip(".").strip("*").strip()
        if numeric:
            numbers = _NUMBER.findall(value)
            if not numbers:
                continue
            value = numbers[0].replace(",", "")
        line_start = text.rfind("\n", 0, match.start()) + 1
        return value, text[:line_start].strip(), f"explicit {rule}"
    if numeric:
        numbers = _NUMBER.findall(text)
        if numbers:
            return numbers[-1].replace(",", ""), text, "the last number"
        return "", text, "no number found"
    if explicit_only or not text:
        return "", text, "nothing found"
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1].strip(), "\n".join(lines[:-1]).strip(), "the last line"


def _is_numeric(name: str, field: Any) -> bool:
    """An int/float annotation (Optional included), or a name/description that asks for a number."""
    annotation = field.annotation
    args = typing.get_args(annotation)
    if annotation in (int, float) or (args and all(a in (int, float, type(None)) for a in args)):
        return True
    if annotation is not str:
        return False
    extra = getattr(field, "json_schema_extra", None) or {}
    description = f"{name.replace('_', ' ')} {extra.get('desc', '')} {field.description or ''}"
    return bool(_NUMERIC_WORDS.search(description))


def _log_salvage(rule: str | None) -> None:
    if rule is None:
        return
    if not _warned.is_set():
        _warned.set()
        logger.warning("LenientChatAdapter: the model did not follow DSPy's field format; salvaged its answer "
                       "(%s). Each salvaged prediction says how in pred.salvaged; later ones are logged at INFO.",
                       rule)
    else:
        logger.info("LenientChatAdapter salvaged an answer: %s", rule)


def _annotate(values: list[dict[str, Any]], notes: list[str | None] | None) -> list[dict[str, Any]]:
    """Put each completion's salvage rule on it as `salvaged` when any needed one (every completion of a
    call gets the key, so DSPy can gather them into one prediction)."""
    if not notes or len(notes) != len(values) or all(note is None for note in notes):
        return values
    return [{**value, "salvaged": note} for value, note in zip(values, notes, strict=True)]
