"""A Markdown report as one self-contained HTML page: images inlined as data URIs, styles inline."""

from __future__ import annotations

import base64
import html
import mimetypes
import os
import re
from pathlib import Path

from reasoning_dspy._io import atomic_write_text

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

_IMG_SRC = re.compile(r'(<img\b[^>]*?\bsrc=")([^"]+)(")')


def write_html(markdown_path: str | os.PathLike, html_path: str | os.PathLike | None = None, *,
               title: str | None = None) -> Path:
    """Render `markdown_path` to HTML beside it (or at `html_path`) with every local image embedded.

    Image paths are read relative to the Markdown file; a missing image is an error rather than a
    broken picture in a report someone will trust."""
    import markdown

    source = Path(markdown_path)
    if not source.is_file():
        raise FileNotFoundError(f"no Markdown report at {source}")
    text = source.read_text(encoding="utf-8")
    body = markdown.markdown(text, extensions=["tables", "fenced_code", "sane_lists"], output_format="html")
    body = _IMG_SRC.sub(lambda m: m.group(1) + _data_uri(source.parent, m.group(2)) + m.group(3), body)
    if title is None:  # the first heading
        title = next((line[2:].strip() for line in text.splitlines() if line.startswith("# ")), source.stem)
    page = (f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")
    target = Path(html_path) if html_path is not None else source.with_suffix(".html")
    atomic_write_text(target, page)
    return target


def _data_uri(folder: Path, src: str) -> str:
    if src.startswith(("data:", "http://", "https://")):
        return src
    path = folder / html.unescape(src)
    if not path.is_file():
        raise FileNotFoundError(f"the report shows {src!r}, but {path} does not exist")
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")
