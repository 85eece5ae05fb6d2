"""Which tokens end a line: what a window that opens after the model's first lines (`skip_lines`) counts."""

from __future__ import annotations

from typing import Any

_CACHE_ATTRIBUTE = "_reasoning_dspy_line_ends"


def line_ends(tokenizer: Any) -> dict[int, int]:
    """`{token id: newlines in its text}` for every token of `tokenizer` whose text holds a newline.

    Decoding the whole vocabulary takes a moment, so the result is kept on the tokenizer."""
    cached = getattr(tokenizer, _CACHE_ATTRIBUTE, None)
    if cached is not None:
        return cached
    ends = {}
    for i in range(len(tokenizer)):
        n = tokenizer.decode([i]).count("\n")
        if n:
            ends[i] = n
    try:
        setattr(tokenizer, _CACHE_ATTRIBUTE, ends)
    except AttributeError:  # a tokenizer that takes no attributes: compute it again next time
        pass
    return ends
