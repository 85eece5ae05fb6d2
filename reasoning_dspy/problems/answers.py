"""Read a number out of a model's free-form answer, and score it against the exact one.

Models write "The answer is $1,250.", "**Answer:** 42 km", "\\boxed{3/4}" or just end on a number.
`extract_answer` prefers an explicit final answer (boxed, `####`, "answer is/:", a closing
"= x") and otherwise takes the last number. It never raises: metrics run inside optimizers, where
one malformed prediction must score 0, not abort the run.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

# A number as written in prose: optional sign and currency, thousands commas, decimals, a simple
# fraction ("3/4"). The sign must not follow a word or digit ("10-3" is not "-3").
_NUMBER = re.compile(
    r"(?P<sign>(?<![\w.])[-−])?[$€£]?\s?"
    r"(?:(?P<int>\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?P<dec>\.\d+)?|(?<!\d)(?P<bare>\.\d+))"
    r"(?:/(?P<den>\d{1,6})(?![\d./]))?"
)
_BOXED = re.compile(r"\\boxed\s*\{")
_HASHES = re.compile(r"####\s*")
_MARKER = re.compile(r"\banswer\b(?:\s*\*\*)?\s*(?:[:=]|\bis\b|\bwas\b|\bwould\s+be\b|\bwill\s+be\b|\bequals\b)[\s*:=]*",
                     re.IGNORECASE)
_BOXED_SCAN = 2_000  # characters searched for a \boxed{...}'s closing brace
_SENTENCE_END = re.compile(r"\.(?!\d)|\n|;")
_FRAC = re.compile(r"\\d?frac\s*\{\s*(\d+)\s*\}\s*\{\s*(\d+)\s*\}")

_UNITS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen".split())}
_TENS = {w: 10 * i for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split(), 2)}
_WORD_NUMBER = re.compile(
    r"\b(?:(?P<tens>" + "|".join(_TENS) + r")(?:[-\s](?P<unit1>" + "|".join(list(_UNITS)[1:10]) + r"))?"
    r"|(?P<unit>" + "|".join(sorted(_UNITS, key=len, reverse=True)) + r"))\b(?:\s+(?P<hundred>hundred))?",
    re.IGNORECASE)


def extract_answer(text: Any) -> float | None:
    """The final numeric answer in `text`, or None when there is none (never raises)."""
    if text is None or isinstance(text, bool):
        return None
    if isinstance(text, int | float):
        return float(text) if math.isfinite(text) else None
    if not isinstance(text, str):
        try:
            text = str(text)
        except Exception:  # an object whose __str__ fails has no answer to read
            return None
    for find in (_boxed, _after_hashes, _after_marker, _closing_equals):
        value = find(text)
        if value is not None:
            return value
    return _last_number(text)


def format_answer(value: float | int) -> str:
    """An exact answer as a label string: `42`, `12.5` (no trailing zeros, no exponent)."""
    value = float(value)
    if value.is_integer():
        return str(int(value))
    return f"{value:.10f}".rstrip("0").rstrip(".")


def answers_match(predicted: Any, expected: Any, rel_tol: float = 1e-6) -> bool:
    """True when both hold a number and they agree within `rel_tol` (strings are read with
    `extract_answer`, so "$1,250.00" matches 1250)."""
    p, e = extract_answer(predicted), extract_answer(expected)
    if p is None or e is None:
        return False
    return math.isclose(p, e, rel_tol=rel_tol, abs_tol=1e-9)


def answer_accuracy(example: Any, prediction: Any, trace: Any = None,
                    pred_name: str | None = None, pred_trace: Any = None) -> float:
    """DSPy metric: 1.0 when the prediction's answer equals the example's, else 0.0 (never raises).

    Reads `prediction.answer`, or the whole prediction when it has no answer field (a plain
    string, or `str(prediction)`). Takes GEPA's extra arguments too.
    """
    expected = _field(example, "answer")
    predicted = _field(prediction, "answer")
    if predicted is _MISSING:
        predicted = prediction
    return 1.0 if answers_match(predicted, expected) else 0.0


def accuracy(problems: Sequence[Any], outputs: Sequence[Any]) -> float:
    """Fraction of `outputs` (texts, numbers or predictions) that answer `problems` (or examples)."""
    if len(problems) != len(outputs):
        raise ValueError(f"got {len(problems)} problems but {len(outputs)} outputs; pass one output per problem")
    if not problems:
        raise ValueError("accuracy of no problems is undefined; pass at least one problem")
    return sum(answer_accuracy(p, o) for p, o in zip(problems, outputs, strict=True)) / len(problems)


_MISSING = object()


def _field(obj: Any, name: str) -> Any:
    """`obj.name` (or `obj[name]` for a dict), `_MISSING` when there is no such field."""
    if obj is None or isinstance(obj, str | int | float):
        return _MISSING
    try:
        if isinstance(obj, dict):
            return obj.get(name, _MISSING)
        return getattr(obj, name, _MISSING)
    except Exception:  # dspy objects raise on some missing keys; a broken object has no field
        return _MISSING


# -- finders, most explicit first ----------------------------------------------------------------
def _boxed(text: str) -> float | None:
    starts = [m.end() for m in _BOXED.finditer(text)]
    for start in reversed(starts):
        depth, end = 1, start
        stop = min(len(text), start + _BOXED_SCAN)
        while end < stop and depth:
            depth += {"{": 1, "}": -1}.get(text[end], 0)
            end += 1
        inner = _FRAC.sub(r"\1/\2", text[start:end - 1] if depth == 0 else text[start:stop])
        value = _first_number(inner)
        if value is not None:
            return value
    return None


def _after_hashes(text: str) -> float | None:
    ends = [m.end() for m in _HASHES.finditer(text)]
    return _first_number(text[ends[-1]:ends[-1] + 200]) if ends else None


def _after_marker(text: str) -> float | None:
    for m in reversed(list(_MARKER.finditer(text))):
        segment = _SENTENCE_END.split(text[m.end():m.end() + 300].replace(",\n", "\n"), maxsplit=1)[0]
        segment = segment.rsplit("=", 1)[-1]
        value = _first_number(segment)
        if value is None:
            value = _word_number(segment)
        if value is not None:
            return value
    return None


def _closing_equals(text: str) -> float | None:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if not lines or "=" not in lines[-1]:
        return None
    return _first_number(lines[-1].rsplit("=", 1)[-1])


def _last_number(text: str) -> float | None:
    last = None
    for m in _NUMBER.finditer(text):
        last = m
    return _value(last) if last is not None else None


def _first_number(text: str) -> float | None:
    for m in _NUMBER.finditer(text):
        value = _value(m)
        if value is not None:
            return value
    return None


def _value(m: re.Match) -> float | None:
    if m.group("bare"):
        number = float(m.group("bare"))
    else:
        number = float(m.group("int").replace(",", "") + (m.group("dec") or ""))
    if m.group("den") is not None and m.group("int") and not m.group("dec"):
        den = int(m.group("den"))
        if den == 0:
            return None
        number /= den
    if m.group("sign"):
        number = -number
    return number if math.isfinite(number) else None


def _word_number(text: str) -> float | None:
    m = _WORD_NUMBER.search(text)
    if m is None:
        return None
    if m.group("tens"):
        value = _TENS[m.group("tens").lower()] + (_UNITS[m.group("unit1").lower()] if m.group("unit1") else 0)
    else:
        value = _UNITS[m.group("unit").lower()]
    return float(value * 100 if m.group("hundred") else value)
