"""How a token's text is shown on the pages: line breaks, tabs and all-space tokens made visible."""

from __future__ import annotations

import html


def shown_piece(text: str) -> str:
    """A token's text made visible: line breaks as ↵, tabs as ⇥, a token of spaces as ␣."""
    shown = text.replace("\n", "↵").replace("\t", "⇥")
    return shown if shown.strip() or not shown else "␣" * len(shown)


def piece_html(text: str) -> str:
    """`shown_piece`, escaped for HTML."""
    return html.escape(shown_piece(text))
