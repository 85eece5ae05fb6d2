"""Reading a feature's evidence: reflection and verification features, punctuation, one token's identity."""

from __future__ import annotations

import pytest

from reasoning_dspy.features.analysis import Context, FeatureReport
from reasoning_dspy.features.kinds import (
    context_line,
    feature_kind,
    is_reflection_context,
    is_verification_context,
    word_tokens,
)


def ctx(pieces: list[str], center: int) -> Context:
    return Context(prompt=0, position=center, activation=10.0, tokens=pieces,
                   activations=[0.0] * len(pieces), center=center)


def report(contexts: list[Context], tokens: list[tuple[str, float, int]], max_activation: float = 40.0) -> FeatureReport:
    return FeatureReport(index=0, rank=1, score=0.01, max_activation=max_activation, density=0.01, top_words=[],
                         top_tokens=[{"token": t, "total": m * n, "mean": m, "count": n} for t, m, n in tokens],
                         contexts=contexts)


OPENER = ctx([" answer", ".\n", "Let", " me", " see", ":", " I", " should", " check"], center=6)  # " I"
HMM = ctx(["\n", "H", "mm", ",", " I", " should", " go", " slowly", ".\n", "Step"], center=4)
PLAIN = ctx([" job", " lets", " him", " save", " $", "1", "0", ".\n", "Wait"], center=1)  # next line reflects
COMMA = ctx([".\n", "Okay", ",", " so", " 1", "2"], center=2)


def test_the_line_around_the_max_token_is_what_is_read():
    assert context_line(OPENER) == "Let me see: I should check"
    assert context_line(PLAIN) == " job lets him save $10."  # the "Wait" on the next line does not count
    assert is_reflection_context(OPENER) and is_reflection_context(HMM)
    assert not is_reflection_context(PLAIN)  # a word, but its line has no reflection word
    assert not is_reflection_context(COMMA)  # not a word


def test_kinds():
    carried = [(" I", 38.0, 147), (" me", 31.0, 126), (" should", 24.0, 92)]
    assert feature_kind(report([OPENER, HMM, OPENER], carried)) == "reflection"
    assert feature_kind(report([OPENER, OPENER, COMMA], carried)) == "reflection"  # 2 of 3 contexts
    assert feature_kind(report([OPENER, COMMA, PLAIN], carried)) == "other"  # 1 of 3
    assert feature_kind(report([COMMA, COMMA, OPENER], [(",", 8.0, 700), (" so", 20.0, 124), (" I", 22.0, 147)])) \
        == "punctuation"
    # reflective contexts, but the activation rides on one token: that token's identity
    assert feature_kind(report([OPENER] * 3, [(" I", 38.0, 147), (" me", 3.0, 126), ("lets", 46.0, 2)])) \
        == "single token"
    assert feature_kind(report([], carried)) == "other"


@pytest.mark.parametrize(("tokens", "expected"), [
    ([(" I", 38.0, 147), (" me", 31.0, 126), (",", 30.0, 700)], [" I", " me"]),  # punctuation does not carry
    ([(" see", 40.0, 86), (" I", 9.0, 147)], [" see"]),  # below a quarter of the max activation
    ([(" lets", 46.0, 2), ("Let", 36.0, 126)], ["Let"]),  # two occurrences are too few to count
])
def test_word_tokens(tokens, expected):
    assert word_tokens(report([OPENER], tokens)) == expected


# inside a check's working: a column's digits, and the verdict after its result; SmolLM2 splits digits
COLUMN = ctx([" write", " ", "2", " carry", " ", "1", ";", " tens", " ", "4", "+", "8"], center=9)  # the "4"
VERDICT = ctx([";", " so", " ", "8", "5", ".", " It", " matches", ".\n"], center=6)  # " It"
QUICK = ctx([" 47", " +", " 38", " =", " ", "8", "5", "."], center=5)  # a quick answer: not a check


def test_a_check_under_way_makes_a_verification_context():
    assert is_verification_context(COLUMN) and is_verification_context(VERDICT)
    assert not is_verification_context(QUICK) and not is_verification_context(COMMA)
    assert not is_verification_context(OPENER)  # reflection words, but no check written yet
    # a check on the line before does not count: only the max token's own line is read
    assert not is_verification_context(ctx([" so", " ", "8", "5", ".\n", "Then", " she"], center=6))


def test_verification_features_are_carried_by_more_than_one_token():
    digits = [("4", 30.0, 90), ("7", 28.0, 80), (" It", 20.0, 40)]
    assert feature_kind(report([COLUMN, VERDICT, COLUMN], digits)) == "verification"
    assert feature_kind(report([COLUMN, COLUMN, QUICK], digits)) == "verification"  # 2 of 3 contexts
    assert feature_kind(report([COLUMN, QUICK, QUICK], digits)) == "punctuation"  # digits, mostly outside checks
    assert feature_kind(report([COLUMN] * 3, [("4", 30.0, 90), ("7", 2.0, 80)])) == "punctuation"  # one carrier
