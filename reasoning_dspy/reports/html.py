"""A Markdown report as one self-contained HTML page: images inlined as data URIs, styles inline.

Reports quote text from users and models (instructions, proposals, traces), so the page treats the
Markdown as text, never as markup: raw HTML in it is shown escaped, links go only to web and mail
addresses, and only the images the report itself wrote are inlined. `md_escape` makes a piece of
user or model text safe to put into the Markdown in the first place.
"""

from __future__ import annotations

import base64
import html
import logging
import mimetypes
import os
import re
from collections.abc import Iterable
from pathlib import Path

from reasoning_dspy._io import atomic_write_text

logger = logging.getLogger(__name__)

_STYLE = """
body { font: 15px/1.55 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d1d1f; max-width: 60rem;
       margin: 2rem auto; padding: 0 1.25rem; }
h1, h2, h3 { line-height: 1.25; } h1 { border-bottom: 2px solid #e5e5e5; padding-bottom: .3rem; }
table { border-collapse: collapse; margin: 1rem 0; font-size: 13px; display: block; overflow-x: auto; }
th, td { border: 1px solid #d8d8d8; padding: .3rem .55rem; vertical-align: top; }
th { background: #f4f4f6; } tr:nth-child(even) td { background: #fafafa; }
code { background: #f2f2f4; padding: .08rem .3rem; border-radius: 3px; font-size: 90%; }
pre { background: #f6f6f8; padding: .8rem; overflow-x: auto; border-radius: 4px; }
img { max-width: 100%; height: auto; border: 1px solid #eee; margin: .5rem 0; }
"""

_IMG = re.compile(r'<img\b[^>]*?\bsrc="([^"]*)"[^>]*>')
_ALT = re.compile(r'\balt="([^"]*)"')
_HREF = re.compile(r'(<a\b[^>]*?\bhref=")([^"]*)(")')
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp")
_MARKDOWN_PUNCTUATION = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>])")


def md_escape(text: str) -> str:
    """`text` (from a user or a model) as literal Markdown text on one line, safe in a table cell:
    no HTML, no emphasis, links, images or headings, and no cell breaks."""
    text = " ".join(str(text).split())
    return _MARKDOWN_PUNCTUATION.sub(r"\\\1", html.escape(text, quote=False))


def md_code(text: str) -> str:
    """`text` as inline code on one line: Markdown shows a code span's content as it is, escaped."""
    return "`" + " ".join(str(text).split()).replace("`", "'").replace("|", "\\|") + "`"


def write_html(markdown_path: str | os.PathLike, html_path: str | os.PathLike | None = None, *,
               title: str | None = None, images: Iterable[str | os.PathLike] | None = None) -> Path:
    """Render `markdown_path` to HTML beside it (or at `html_path`) with the report's images embedded.

    Only images inside the Markdown file's folder are inlined, and when `images` is given only those
    (paths relative to that folder: the plots the report wrote). Any other image reference is shown
    as its text, and an image that is missing is shown as a note, so text quoted in the report can
    neither pull a file into the page nor stop the report from being written."""
    import markdown

    source = Path(markdown_path)
    if not source.is_file():
        raise FileNotFoundError(f"no Markdown report at {source}")
    text = source.read_text(encoding="utf-8")
    md = markdown.Markdown(extensions=["tables", "fenced_code", "sane_lists"], output_format="html")
    md.preprocessors.deregister("html_block")  # raw HTML is shown as text, never run
    md.inlinePatterns.deregister("html")
    body = md.convert(text)
    allowed = None if images is None else {_inside(source.parent, str(p)) for p in images} - {None}
    body = _IMG.sub(lambda m: _embed(source.parent, m, allowed), body)
    body = _HREF.sub(lambda m: m.group(1) + (m.group(2) if _safe_link(m.group(2)) else "#") + m.group(3), body)
    if title is None:  # the first heading
        title = next((line[2:].strip() for line in text.splitlines() if line.startswith("# ")), source.stem)
    page = (f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")
    target = Path(html_path) if html_path is not None else source.with_suffix(".html")
    atomic_write_text(target, page)
    return target


def _inside(folder: Path, src: str) -> Path | None:
    """The file `src` names, if it is an image inside `folder` (no `..`, no link out of it)."""
    if not src or src.startswith(("/", "\\")) or re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", src):
        return None
    root = folder.resolve()
    path = (folder / html.unescape(src)).resolve()
    if root not in path.parents or path.suffix.lower() not in IMAGE_SUFFIXES:
        return None
    return path


def _embed(folder: Path, match: re.Match, allowed: set[Path] | None) -> str:
    src = match.group(1)
    alt = (_ALT.search(match.group(0)) or [None, ""])[1]
    path = _inside(folder, src)
    if path is None or (allowed is not None and path not in allowed):
        return f"[image: {alt or src}]"  # already escaped by Markdown
    if not path.is_file():
        logger.warning("the report shows %s, but %s does not exist", src, path)
        return f"[missing image: {alt or src}]"
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return match.group(0).replace(f'src="{src}"', f'src="data:{mime};base64,{data}"', 1)


def _safe_link(href: str) -> bool:
    """Web and mail addresses, and links within the page or next to the report; no `javascript:`."""
    scheme = re.match(r"^\s*([a-zA-Z][a-zA-Z0-9+.-]*):", html.unescape(href))
    return scheme is None or scheme.group(1).lower() in {"http", "https", "mailto"}
