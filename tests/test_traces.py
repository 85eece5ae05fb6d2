"""Bundled reasoning traces: the shipped file is the generator's output, and the text is varied."""

from __future__ import annotations

import re
from collections import defaultdict

from reasoning_dspy.features.vocab import REASONING_SPELLINGS
from reasoning_dspy.problems.traces import (
    bundled_trace_text,
    bundled_traces_path,
    duplicate_window_fraction,
    reasoning_traces,
)
from reasoning_dspy.prompts import bundled_traces


def test_shipped_traces_are_the_generator_output():
    assert bundled_traces_path().read_text(encoding="utf-8") == bundled_trace_text(), (
        "data/traces.txt is stale: run `python -m reasoning_dspy.problems.traces`")
    assert reasoning_traces(5, seed=1) == reasoning_traces(5, seed=1) != reasoning_traces(5, seed=2)


def test_every_official_spelling_occurs_in_varied_contexts():
    text = "\n\n".join(bundled_traces())
    contexts = defaultdict(set)
    for spelling in REASONING_SPELLINGS:
        word = re.escape(spelling.strip())
        # a leading space: after a space; none: at a line start or straight after punctuation
        before = r"(?<= )" if spelling.startswith(" ") else r"(?:(?<=^)|(?<=[\n(\"'—]))"
        for m in re.finditer(before + word + r"\b(.{0,25})", text, flags=re.MULTILINE):
            contexts[spelling].add(re.sub(r"\d+", "#", m.group(1)))
    thin = {s: len(contexts[s]) for s in REASONING_SPELLINGS if len(contexts[s]) < 3}
    assert not thin, f"spellings seen in fewer than 3 contexts: {thin}"


def test_traces_are_not_template_repeats():
    traces = bundled_traces()
    assert duplicate_window_fraction(traces) < 0.05
    assert duplicate_window_fraction(["a b c d e f g h i j k"] * 2) == 1.0
    assert duplicate_window_fraction(["a b c d e f g h i j k", "l m n o p q r s t u v"]) == 0.0
    some_have_no_reflection = [t for t in traces[:60] if not re.search(r"(?i)\b(wait|hmm|maybe|perhaps|however)\b", t)]
    assert some_have_no_reflection
