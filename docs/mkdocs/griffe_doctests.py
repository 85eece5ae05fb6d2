"""A griffe extension for the API reference: interactive examples in docstrings become code blocks.

The code's docstrings show usage as bare `>>>` lines (no `Examples:` section). Read as Markdown,
`>>>` would start a block quote and `['a', 'b']` output lines would look like link references, so
each run of `>>>` / `...` lines and the output lines after it is wrapped in a ```pycon fence.
"""

from __future__ import annotations

from typing import Any

import griffe


def fence_doctests(text: str) -> str:
    """`text` with every interactive example (prompt lines and their output) in a pycon fence."""
    out: list[str] = []
    lines = text.splitlines()
    i, in_fence = 0, False
    while i < len(lines):
        line = lines[i]
        stripped = line.lstrip()
        if stripped.startswith("```"):
            in_fence = not in_fence
        if in_fence or not stripped.startswith(">>>"):
            out.append(line)
            i += 1
            continue
        indent = line[: len(line) - len(stripped)]
        block = []
        while i < len(lines) and lines[i].strip() and lines[i].startswith(indent):
            block.append(lines[i][len(indent):])
            i += 1
        out += [f"{indent}```pycon", *(f"{indent}{b}" for b in block), f"{indent}```"]
    return "\n".join(out)


class DoctestFences(griffe.Extension):
    """Fence `>>>` examples in every docstring griffe loads."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None and ">>>" in obj.docstring.value:
            obj.docstring.value = fence_doctests(obj.docstring.value)

    on_object = on_instance  # objects whose docstring is set after creation (idempotent: fenced lines are kept)
