"""Build hooks of the documentation site (`hooks:` in mkdocs.yml).

- Pages that other work adds later (`OPTIONAL_PAGES`) stay in the nav but are dropped from it while
  their file does not exist, so `mkdocs build --strict` passes before and after they land.
- MathJax comes from the `django-static-mathjax` wheel (the `docs` extra): its single-file SVG build
  is added to the site as `assets/mathjax/tex-svg.js`. Nothing is fetched from a CDN, neither while
  building nor when a reader opens a page, so the site builds and renders offline.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

#: Nav entries whose pages are written elsewhere and may not exist yet.
OPTIONAL_PAGES = {"dashboard.md", "scale-out.md", "benchmark-notes.md"}
MATHJAX_TARGET = "assets/mathjax/tex-svg.js"


def _prune(nav: list, docs_dir: Path) -> list:
    """`nav` without entries that point at a missing optional page (sections kept)."""
    kept = []
    for entry in nav:
        target = next(iter(entry.values())) if isinstance(entry, dict) else entry
        if isinstance(target, list):
            kept.append({next(iter(entry)): _prune(target, docs_dir)})
        elif isinstance(target, str) and target in OPTIONAL_PAGES and not (docs_dir / target).is_file():
            continue
        else:
            kept.append(entry)
    return kept


def on_config(config, **kwargs):
    if config.nav:
        config.nav = _prune(config.nav, Path(config.docs_dir))
    return config


def mathjax_file() -> Path:
    """The SVG single-file MathJax build shipped in the `django-static-mathjax` wheel."""
    spec = importlib.util.find_spec("mathjax")
    if spec is None or not spec.submodule_search_locations:
        raise PluginError("MathJax is missing: install the docs extra (`pip install -e '.[docs]'`), which "
                          "brings the django-static-mathjax wheel the site takes MathJax from")
    path = Path(next(iter(spec.submodule_search_locations))) / "static" / "mathjax" / "es5" / "tex-svg.js"
    if not path.is_file():
        raise PluginError(f"{path} is missing: reinstall django-static-mathjax (pip install -e '.[docs]')")
    return path


def on_files(files: Files, config, **kwargs) -> Files:
    source = mathjax_file()
    files.append(File.generated(config, MATHJAX_TARGET, abs_src_path=str(source)))
    return files
