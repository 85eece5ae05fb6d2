"""What a feature's evidence says it is: reflection, verification, punctuation, or one token's identity.

A high ReasonScore says a feature fires near reasoning words more than elsewhere; it does not say
the feature *is about* reflection. Features that fire on the comma after "Okay" or on every "Let"
also score well. The paper's test is to read the max-activating contexts; `feature_kind` does that
reading the same way for every feature, so a claim such as "3 of the top 5 features are reflection
features" can be checked instead of eyeballed:

- a context is a *reflection context* when its max-activating token is a word (it has a letter)
  and the line it sits on contains a reflection word (`study.measures.REFLECTION_WORDS`);
- a feature is a **reflection** feature when at least `MIN_REFLECTIVE_CONTEXTS` of its contexts are
  reflection contexts and at least two different word tokens carry it (`word_tokens`), so it is
  not one token's identity;
- a context is a *verification context* when, on its line, the text before the max-activating token
  shows a digit-level check under way: its head (`84 - 38: `, the operands restated with a colon),
  a single-digit fact written without spaces (`7+8=15`, unlike a quick answer's `47 + 38 = 85`), a
  column's bookkeeping (`ones 7`, `write 5`, `carry 1`, `borrow: 14`, `bring down 4`) or its
  result (`; so 85`). The window shows only a few tokens before the max, so any of them counts: the
  feature fires inside a check's working or on its verdict;
- a feature is a **verification** feature when at least `MIN_REFLECTIVE_CONTEXTS` of its contexts
  are verification contexts and at least two different tokens carry it (digits count here);
- otherwise it is **punctuation** when most contexts centre on a non-word token, a **single token**
  when fewer than two word tokens carry it, and **other** when neither.
"""

from __future__ import annotations

import re
from typing import Literal

from reasoning_dspy.features.analysis import Context, FeatureReport
from reasoning_dspy.features.measures import reflects

FeatureKind = Literal["reflection", "verification", "punctuation", "single token", "other"]

#: The kinds that are about reasoning: a trace turning back on itself, or checking a step.
REASONING_KINDS: tuple[FeatureKind, ...] = ("reflection", "verification")

# What a digit-level check writes (`047 + 085: ones 7+5=12, write 2 carry 1; ...; so 132`).
_IN_CHECK = re.compile(r"\d+ [+\-×/] \d+: |\d[+\-×/]\d|\b(?:ones|tens|hundreds|write|carry|bring down) \d"
                       r"|\bborrow: \d|; so \d")

#: Share of a feature's max-activating contexts that must be reflection contexts.
MIN_REFLECTIVE_CONTEXTS = 2 / 3
#: A token "carries" a feature when its mean activation on that token is at least this share of the
#: feature's max activation, over at least `MIN_TOKEN_COUNT` occurrences (one-off tokens are noise).
MIN_TOKEN_SHARE = 0.25
MIN_TOKEN_COUNT = 3


def _is_word(piece: str) -> bool:
    return any(ch.isalpha() for ch in piece)


def context_line(context: Context) -> str:
    """The text of the line (within the window) that holds the max-activating token."""
    before = "".join(context.tokens[:context.center]).rsplit("\n", 1)[-1]
    after = "".join(context.tokens[context.center + 1:]).split("\n", 1)[0]
    return before + context.tokens[context.center] + after


def is_reflection_context(context: Context) -> bool:
    """Whether the feature fired hardest on a word in a line with a reflection word."""
    return _is_word(context.tokens[context.center]) and reflects(context_line(context))


def is_verification_context(context: Context) -> bool:
    """Whether the feature fired hardest inside a digit-level check (its line shows one under way)."""
    before = "".join(context.tokens[:context.center]).rsplit("\n", 1)[-1]
    return _IN_CHECK.search(before) is not None


def word_tokens(report: FeatureReport) -> list[str]:
    """The word tokens that carry the feature (see `MIN_TOKEN_SHARE`), strongest first."""
    return [t for t in carrier_tokens(report) if _is_word(t)]


def carrier_tokens(report: FeatureReport) -> list[str]:
    """Every token that carries the feature (see `MIN_TOKEN_SHARE`), digits and punctuation
    included, strongest first."""
    floor = MIN_TOKEN_SHARE * report.max_activation
    carried = [t for t in report.top_tokens if t["count"] >= MIN_TOKEN_COUNT and t["mean"] >= floor]
    return [t["token"] for t in sorted(carried, key=lambda t: -t["mean"])]


def feature_kind(report: FeatureReport) -> FeatureKind:
    """Classify a feature by its contexts and top tokens (rules in the module docstring)."""
    contexts = report.contexts
    if not contexts:
        return "other"
    reflective = sum(map(is_reflection_context, contexts)) / len(contexts)
    carriers = {t.strip().lower() for t in word_tokens(report)}
    if reflective >= MIN_REFLECTIVE_CONTEXTS and len(carriers) >= 2:
        return "reflection"
    checking = sum(map(is_verification_context, contexts)) / len(contexts)
    if checking >= MIN_REFLECTIVE_CONTEXTS and len({t.strip() for t in carrier_tokens(report)}) >= 2:
        return "verification"
    if sum(not _is_word(c.tokens[c.center]) for c in contexts) > len(contexts) / 2:
        return "punctuation"
    if len(carriers) < 2:
        return "single token"
    return "other"
