"""Digit-level working for one arithmetic step: the reliable route a reasoner checks a result with.

A direct answer to "347 + 85" asks a small model to do the whole sum in one token sequence; the
scratchpad splits it into single-digit facts, one column at a time, each written out (Lee et al.
2023, "Teaching Arithmetic to Small Transformers"). It first restates the operands zero-padded to
`WIDTH` digits (the widest number a chain holds), so every column sits at the same offset in every
step of the chains, then works one column per digit (one more when a carry runs out of them):

    >>> scratchpad(47, "+", 38)
    '47 + 38: ones 7+8=15, write 5 carry 1; tens 4+3+1=8, write 8; so 85'
    >>> scratchpad(84, "-", 9)
    '84 - 09: ones 4-9, borrow: 14-9=5; tens 8-1-0=7; so 75'
    >>> scratchpad(12, "*", 8)
    '12 × 8: ones 2×8=16, write 6 carry 1; tens 1×8=8, +1=9; so 96'
    >>> scratchpad(7, "*", 12)  # in the order given: the 1-digit operand is the multiplier
    '7 × 12: ones 7×2=14, write 4 carry 1; tens 7×1=7, +1=8; so 84'
    >>> scratchpad(84, "/", 6)
    '84 / 6: 8/6=1 r2; bring down 4: 24/6=4 r0; so 14'
    >>> scratchpad(347, "+", 85)  # wider numbers take more columns
    '347 + 085: ones 7+5=12, write 2 carry 1; tens 4+8+1=13, write 3 carry 1; hundreds 3+0+1=4, write 4; so 432'

Every fact in the text is true arithmetic (`facts` reads them back), and the text ends with
`so <result>`. The operand bounds are those of `reasoning_dspy.problems.chains.in_bounds`.
"""

from __future__ import annotations

import re

from reasoning_dspy.problems.chains import MAX_VALUE
from reasoning_dspy.problems.steps import StepError

_PLACES = ("ones", "tens", "hundreds", "thousands")
WIDTH = len(str(MAX_VALUE))  # operands are written with at least this many digits: the chains' widest


class ScratchpadError(StepError):
    """A step outside what the scratchpad writes (see `reasoning_dspy.problems.chains.in_bounds`)."""


def scratchpad(a: int, op: str, b: int) -> str:
    """The digit-by-digit working of `a op b`, ending `so <result>`."""
    if op == "+":
        return _add(a, b)
    if op == "-":
        return _subtract(a, b)
    if op == "*":
        return _multiply(a, b)
    if op == "/":
        return _divide(a, b)
    raise ScratchpadError(f"no scratchpad for operator {op!r}; use one of + - * /")


def _width(*xs: int) -> int:
    return max(WIDTH, *(len(str(x)) for x in xs))


def _padded(x: int, width: int) -> str:
    return str(x).zfill(width)


def _digits(x: int, width: int) -> list[int]:
    """Digits of `x` from the ones place up, padded with zeros to `width`."""
    return [(x // 10**i) % 10 for i in range(width)]


def _add(a: int, b: int) -> str:
    if a < 0 or b < 0:
        raise ScratchpadError(f"the addition scratchpad takes whole numbers >= 0, got {a} + {b}")
    width = _width(a, b)
    parts, carry = [], 0
    for place, x, y in zip(_PLACES, _digits(a, width), _digits(b, width), strict=False):
        parts.append(f"{place} {add_column(x, y, carry)}")
        carry = (x + y + carry) // 10
    if carry:
        parts.append(f"{_PLACES[width]} {carry}, write {carry}")
    return f"{_padded(a, width)} + {_padded(b, width)}: " + "; ".join(parts) + f"; so {a + b}"


def _subtract(a: int, b: int) -> str:
    if not 0 <= b <= a:
        raise ScratchpadError(f"the subtraction scratchpad takes a >= b >= 0, got {a} - {b}")
    width = _width(a)
    parts, borrow = [], 0
    for place, x, y in zip(_PLACES, _digits(a, width), _digits(b, width), strict=False):
        parts.append(f"{place} {subtract_column(x, y, borrow)}")
        borrow = int(x - borrow < y)
    return f"{_padded(a, width)} - {_padded(b, width)}: " + "; ".join(parts) + f"; so {a - b}"


def _multiply(a: int, b: int) -> str:
    # Worked in the order given, so the check restates the step it checks: the 1-digit operand is the
    # multiplier (the right one when both are), and the other is padded and taken digit by digit.
    multiplier_first = a <= 9 < b
    number, digit = (b, a) if multiplier_first else (a, b)
    if not (0 <= number <= 999 and 0 <= digit <= 9):
        raise ScratchpadError(f"the multiplication scratchpad takes a number below 1000 times a 1-digit one, "
                              f"got {a} × {b}")
    width = _width(number)
    digits = _digits(number, width)
    parts, carry = [], 0
    for i, (place, x) in enumerate(zip(_PLACES, digits, strict=False)):
        column = multiply_column(x, digit, carry, last=i == len(digits) - 1, multiplier_first=multiplier_first)
        parts.append(f"{place} {column}")
        carry = (x * digit + carry) // 10
    head = f"{digit} × {_padded(number, width)}" if multiplier_first else f"{_padded(number, width)} × {digit}"
    return f"{head}: " + "; ".join(parts) + f"; so {a * b}"


def _divide(a: int, b: int) -> str:
    if not (2 <= b <= 9 and a > 0 and a % b == 0):
        raise ScratchpadError(f"the division scratchpad takes a whole number divided exactly by 2-9, got {a} / {b}")
    parts, rest = [], 0
    for i, digit in enumerate(_padded(a, _width(a))):
        part = rest * 10 + int(digit)
        # the digit brought down is named, so the next part is a copy and not a recall
        parts.append(divide_column(part, b) if i == 0 else f"bring down {digit}: {divide_column(part, b)}")
        rest = part % b
    return f"{_padded(a, _width(a))} / {b}: " + "; ".join(parts) + f"; so {a // b}"


# -- one column each: the single-digit facts a scratchpad is made of --------------------------------
def add_column(x: int, y: int, carry: int) -> str:
    """`7+5=12, write 2 carry 1`: digits `x` and `y` plus the carry coming in (0 or 1)."""
    total = x + y + carry
    terms = f"{x}+{y}" + (f"+{carry}" if carry else "")
    out = total // 10
    return f"{terms}={total}, write {total % 10}" + (f" carry {out}" if out else "")


def subtract_column(x: int, y: int, borrow: int) -> str:
    """`4-8, borrow: 14-8=6` or `3-1-2=0`: digit `y` taken from `x`, less the borrow coming in (0 or 1)."""
    top = x - borrow
    terms = f"{x}-1-{y}" if borrow else f"{x}-{y}"
    if top < y:
        return f"{terms}, borrow: {top + 10}-{y}={top + 10 - y}"
    return f"{terms}={top - y}"


def multiply_column(x: int, b: int, carry: int, *, last: bool = False, multiplier_first: bool = False) -> str:
    """`5×8=40, +4=44, write 4 carry 4`: digit `x` times `b`, plus the carry coming in; the last
    column writes its whole number. `multiplier_first` writes the fact as `b×x`, in the step's order."""
    product = x * b
    total = product + carry
    text = (f"{b}×{x}" if multiplier_first else f"{x}×{b}") + f"={product}" + (f", +{carry}={total}" if carry else "")
    if not last:
        text += f", write {total % 10}" + (f" carry {total // 10}" if total // 10 else "")
    return text


def divide_column(part: int, b: int) -> str:
    """`14/6=2 r2`: the part of the dividend brought down so far, divided by `b`."""
    q, rest = divmod(part, b)
    return f"{part}/{b}={q} r{rest}"


# -- reading a scratchpad back ---------------------------------------------------------------------
_FACT = re.compile(r"(?<![\d])(\d+)([+\-×/])(\d+)(?:([+\-])(\d+))?=(\d+)(?: r(\d+))?")
_CARRY_ADD = re.compile(r"(?<![\d])(\d+), \+(\d+)=(\d+)")


def facts(text: str) -> list[tuple[str, bool]]:
    """Each single-digit fact written in `text` (`7+5=12`, `14-8=6`, `0-1-6` is not one), with
    whether it is true: the facts a check rests on, for tests and for grading a model's working."""
    out = []
    for m in _FACT.finditer(text):
        x, sym, y, sym2, z, value, rest = m.groups()
        x, y, value = int(x), int(y), int(value)
        if sym == "+":
            ok = x + y + (int(z) if sym2 == "+" else -int(z) if sym2 else 0) == value
        elif sym == "-":
            ok = x - y - (int(z) if sym2 == "-" else -int(z) if sym2 else 0) == value
        elif sym == "×":
            ok = x * y == value
        else:
            ok = y != 0 and x // y == value and rest is not None and x % y == int(rest)
        out.append((m.group(0), ok))
    for m in _CARRY_ADD.finditer(text):
        x, y, value = map(int, m.groups())
        out.append((m.group(0), x + y == value))
    return out

