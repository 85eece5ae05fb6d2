"""The documentation site (docs/, configured in docs/mkdocs/mkdocs.yml): it builds with
`mkdocs build --strict`, every page is in its navigation, every `reasoning-dspy` command it shows
exists with the flags it uses, and every ```python example runs as written: per page, the blocks in
order, in one fresh interpreter, in an empty folder.

A block that cannot run here carries `<!-- example: not run (REASON) -->` on the line before it;
each one is reported as a skipped test with its reason. Pages whose examples another test runs are
listed in `TESTED_ELSEWHERE`, so heavy examples do not run twice.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
CONFIG = DOCS / "mkdocs" / "mkdocs.yml"

MARKER = re.compile(r"<!--\s*example:\s*not run\s*\((?P<reason>.+)\)\s*-->")

#: Pages whose examples another test executes, and that test.
TESTED_ELSEWHERE = {
    "serve.md": "tests/test_serve_examples.py",
    "rag.md": "tests/test_rag.py",
}

@dataclass
class Block:
    page: str  # path relative to docs/
    number: int  # 0-based index among the page's python blocks
    line: int  # 1-based line of the opening fence
    code: str
    skip: str | None  # why it is not run, or None


def pages() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.md") if "mkdocs" not in p.relative_to(DOCS).parts)


def python_blocks(page: Path) -> list[Block]:
    """The page's ```python blocks, with the reason each one is not run (if it is not)."""
    name = page.relative_to(DOCS).as_posix()
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        fence = lines[i].lstrip()
        if fence.startswith("```") and fence[3:].strip() != "python":  # skip other fences whole
            i += 1
            while i < len(lines) and not lines[i].lstrip().startswith("```"):
                i += 1
        elif fence.startswith("```python"):
            start = i
            prev = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
            i += 1
            while i < len(lines) and not lines[i].lstrip().startswith("```"):
                i += 1
            code = textwrap.dedent("\n".join(lines[start + 1 : i])) + "\n"
            marker = MARKER.search(prev)
            skip = marker.group("reason").strip() if marker else None
            blocks.append(Block(name, len(blocks), start + 1, code, skip))
        i += 1
    return blocks


def shell_lines(page: Path) -> list[str]:
    """The commands of the page's ```bash blocks, lines continued with a backslash joined."""
    out, inside, pending = [], False, ""
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            inside = line.lstrip()[3:].strip() in ("bash", "sh", "console")
            continue
        if inside:
            pending += line.strip()
            if pending.endswith("\\"):
                pending = pending[:-1]
                continue
            out.append(pending)
            pending = ""
    return out


PAGES = pages()
RUNNABLE = {p.relative_to(DOCS).as_posix(): [b for b in python_blocks(p) if b.skip is None]
            for p in PAGES if p.name not in TESTED_ELSEWHERE}
RUNNABLE = {name: blocks for name, blocks in RUNNABLE.items() if blocks}
NOT_RUN = [b for p in PAGES if p.name not in TESTED_ELSEWHERE for b in python_blocks(p) if b.skip is not None]


# -- the site ------------------------------------------------------------------------------------

def test_site_builds_strict_and_offline(tmp_path):
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(CONFIG), "-d", str(site)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    for page in ["index.html", "how-it-works/index.html", "paper/index.html", "reference/sae/index.html",
                 "assets/mathjax/tex-svg.js", "search/search_index.json"]:
        assert (site / page).is_file(), page
    # the API reference is generated from the docstrings
    sae_page = (site / "reference" / "sae" / "index.html").read_text()
    assert "TopKSAE" in sae_page and "unit_norm_view" in sae_page
    # formulas are marked for MathJax, which the site serves itself: no script or font from elsewhere
    how = (site / "how-it-works" / "index.html").read_text()
    assert 'class="arithmatex"' in how and "assets/mathjax/tex-svg.js" in how
    # every public name of the package has its entry
    import reasoning_dspy

    ids = set()
    for ref in (site / "reference").rglob("*.html"):
        ids |= set(re.findall(r'id="([\w.]+)"', ref.read_text()))
    undocumented = [n for n in reasoning_dspy.__all__ if not any(i.endswith("." + n) for i in ids)]
    assert not undocumented, f"public names missing from the API reference (docs/reference/): {undocumented}"
    for ref in (site / "reference").rglob("*.html"):  # docstring `>>>` examples render as code, not quotes
        assert "<blockquote>" not in ref.read_text(), ref
    for html in site.rglob("*.html"):
        text = html.read_text()
        assert not re.search(r'<script[^>]+src="https?://', text), f"{html} loads a script from the network"
        assert "fonts.googleapis.com" not in text, f"{html} loads web fonts"


def test_every_page_is_in_the_nav():
    config = yaml.safe_load(CONFIG.read_text())

    def entries(nav) -> list[str]:
        out = []
        for item in nav:
            value = next(iter(item.values())) if isinstance(item, dict) else item
            out += entries(value) if isinstance(value, list) else [value]
        return out

    listed = set(entries(config["nav"]))
    missing = [p.relative_to(DOCS).as_posix() for p in PAGES if p.relative_to(DOCS).as_posix() not in listed]
    assert not missing, f"pages missing from the nav in {CONFIG.relative_to(ROOT)}: {missing}"


def test_nav_drops_optional_pages_until_they_exist(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("docs_hooks", DOCS / "mkdocs" / "hooks.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    nav = [{"Home": "index.md"}, {"Tasks": [{"Serve": "serve.md"}, {"Dashboard": "dashboard.md"}, "scale-out.md"]}]
    assert hooks._prune(nav, tmp_path) == [{"Home": "index.md"}, {"Tasks": [{"Serve": "serve.md"}]}]
    (tmp_path / "dashboard.md").write_text("# Dashboard")
    (tmp_path / "scale-out.md").write_text("# Scale out")
    assert hooks._prune(nav, tmp_path) == nav


# -- the command lines ---------------------------------------------------------------------------

def cli_tree():
    from typer.main import get_command

    from reasoning_dspy.cli import app

    return get_command(app)


def test_docs_commands_exist_with_their_flags():
    """Every `reasoning-dspy ...` line on a page names a real command and only its real flags."""
    root = cli_tree()
    checked, problems = 0, []
    for page in PAGES:
        for line in shell_lines(page):
            if not line.startswith("reasoning-dspy"):
                continue
            words = shlex.split(line.split(" #")[0].split(" | ")[0], posix=True)
            command, path = root, ["reasoning-dspy"]
            rest = words[1:]
            while hasattr(command, "commands") and rest and not rest[0].startswith("-"):
                if rest[0] not in command.commands:
                    problems.append(f"{page.relative_to(DOCS)}: `{' '.join(path)} {rest[0]}` is no command")
                    break
                command = command.commands[rest[0]]
                path.append(rest.pop(0))
            flags = {opt for p in command.params for opt in (*p.opts, *getattr(p, "secondary_opts", ()))} | {"--help"}
            for word in rest:
                if word.startswith("--") and word.split("=", 1)[0] not in flags:
                    problems.append(f"{page.relative_to(DOCS)}: `{' '.join(path)}` has no flag {word.split('=', 1)[0]}")
            checked += 1
    assert not problems, "\n".join(problems)
    assert checked >= 20


# -- the Python examples -------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("page", sorted(RUNNABLE))
def test_page_examples_run(page, tmp_path):
    blocks = RUNNABLE[page]
    script = "\n\n".join(f"# --- docs/{b.page}, python block {b.number} (line {b.line})\n{b.code}" for b in blocks)
    (tmp_path / "examples.py").write_text(script)
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}  # tracking examples: SQLite in the folder
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONPATH=str(ROOT), MPLBACKEND="Agg",
               GRADIO_ANALYTICS_ENABLED="False", LITELLM_LOCAL_MODEL_COST_MAP="True",
               DSPY_CACHEDIR=str(tmp_path / "dspy-cache"), REASONING_DSPY_CACHE=str(tmp_path / "cache"))
    result = subprocess.run([sys.executable, "examples.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, f"docs/{page}:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"


@pytest.mark.parametrize("block", NOT_RUN, ids=[f"{b.page}-{b.number}" for b in NOT_RUN])
def test_example_not_run(block):
    """Reported, not run: each says why (shown by pytest -ra)."""
    assert len(block.skip) >= 10, f"docs/{block.page} line {block.line}: say why the example is not run"
    pytest.skip(f"docs/{block.page} line {block.line}: not run ({block.skip})")


@pytest.mark.parametrize("page", sorted(TESTED_ELSEWHERE))
def test_pages_tested_elsewhere(page):
    test = ROOT / TESTED_ELSEWHERE[page]
    assert (DOCS / page).is_file() and page in test.read_text(), f"{test} does not run docs/{page}"
    pytest.skip(f"docs/{page}: its examples run in {TESTED_ELSEWHERE[page]}")


def test_most_examples_run():
    runnable = sum(len(blocks) for blocks in RUNNABLE.values())
    assert runnable >= 15 and len(NOT_RUN) <= runnable // 2, (runnable, [(b.page, b.skip) for b in NOT_RUN])
