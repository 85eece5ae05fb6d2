"""The `Problem` record and the exact arithmetic every family builds it with.

Numbers are `Fraction`s while a problem is drafted, so an answer is exact by construction; a draft
whose answer is not a plain decimal (at most two places) is thrown away and redrawn.
"""

from __future__ import annotations

import random
from fractions import Fraction
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Number = int | float
Split = Literal["train", "validation", "test"]
SPLITS: tuple[str, ...] = ("train", "validation", "test")

# The operators a step may use, as written in `Problem.steps` ("12 * 3 = 36").
STEP_OPS: tuple[str, ...] = ("+", "-", "*", "/", "mod", "ceildiv")


class ProblemError(ValueError):
    """Bad arguments to the problem generator (unknown family, split or difficulty)."""


class Retry(Exception):
    """The numbers drawn do not give an exact answer (or a sensible story); draw again."""


class Problem(BaseModel):
    """One word problem with its exact answer and the quantities it was built from.

    `quantities` holds every number the question states (by role, e.g. `price_1`) and `steps` the
    arithmetic that solves it (`"12 * 3 = 36"`), so a checker can re-derive `answer` on its own.
    """

    model_config = ConfigDict(frozen=True)

    id: str = Field(description="stable id: split plus a hash of the question text")
    question: str
    answer: Number = Field(description="exact answer; an int when integral")
    family: str = Field(description="problem family, e.g. 'rates'")
    kind: str = Field(description="the family's sub-type, which fixes the formula, e.g. 'travel_minutes'")
    difficulty: int = Field(ge=1, le=3)
    quantities: dict[str, float] = Field(description="role -> number stated in the question")
    steps: list[str] = Field(description="solution steps, one binary operation each: 'a op b = c'")
    sources: list[str] = Field(default_factory=list, description="for each step, the sentence of the question "
                               "that asks for it, where the family records it (chains do; empty otherwise)")

    @field_validator("answer")
    @classmethod
    def _int_when_integral(cls, value: Number) -> Number:
        return int(value) if float(value).is_integer() else value


def is_plain_decimal(x: Fraction, places: int = 2) -> bool:
    """True when `x` is written exactly with at most `places` decimals (3/4 yes, 1/3 no)."""
    return (x * 10**places).denominator == 1


def fmt(x: Fraction | int | float) -> str:
    """A number as a person writes it: `1,250`, `12.5`, `0.75`; a non-decimal fraction as `1/6`."""
    x = Fraction(x)
    if x.denominator == 1:
        return f"{x.numerator:,}"
    if is_plain_decimal(x, 4):
        return f"{float(x):,.4f}".rstrip("0")
    return f"{x.numerator}/{x.denominator}"


def money(x: Fraction | int) -> str:
    """`$12` or `$12.50` (cents only when there are any)."""
    x = Fraction(x)
    return f"${x.numerator:,}" if x.denominator == 1 else f"${float(x):,.2f}"


def plain(x: Fraction) -> Number:
    """A Fraction as an int when integral, else a float (exact for plain decimals)."""
    return x.numerator if x.denominator == 1 else float(x)


class Draft:
    """Collects a problem's quantities and steps while a family writes it."""

    def __init__(self, rng: random.Random, level: int):
        self.rng = rng
        self.level = level
        self.quantities: dict[str, float] = {}
        self.steps: list[str] = []
        self.sources: list[str] = []  # one per step, when a family says which sentence asks for it

    def q(self, role: str, value: Fraction | int) -> Fraction:
        """Record a number the question states, under `role`."""
        value = Fraction(value)
        self.quantities[role] = float(value)
        return value

    def step(self, a: Fraction | int, op: str, b: Fraction | int) -> Fraction:
        """Do one operation exactly and record it."""
        a, b = Fraction(a), Fraction(b)
        if op == "+":
            c = a + b
        elif op == "-":
            c = a - b
        elif op == "*":
            c = a * b
        elif op == "/":
            c = a / b
        elif op == "mod":
            c = Fraction(a.numerator % b.numerator)
        elif op == "ceildiv":
            c = Fraction(-(-a.numerator // b.numerator))
        else:
            raise ValueError(f"unknown step operator {op!r}; use one of {STEP_OPS}")
        self.steps.append(f"{_step_num(a)} {op} {_step_num(b)} = {_step_num(c)}")
        return c

    # -- drawing numbers -------------------------------------------------------------------
    def pick(self, seq):
        return self.rng.choice(seq)

    def between(self, low: int | Fraction, high: int | Fraction, step: int = 1) -> int:
        """A whole number in [low, high] (bounds may be integral Fractions)."""
        if int(high) < int(low):
            raise Retry
        return self.rng.randrange(int(low), int(high) + 1, step)


def _step_num(x: Fraction) -> str:
    return fmt(x).replace(",", "")
