"""The README's Python snippets are documentation users copy: run them, in order, as written."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_snippets_for_each_task():
    text = README.read_text()
    for section in ["## Extract activations", "## Train an SAE", "## Score features with ReasonScore",
                    "## Steer generation", "## Use from DSPy"]:
        assert section in text
    assert len(python_blocks()) >= 5


@pytest.mark.slow
def test_readme_python_snippets_run(tmp_path):
    # One fresh interpreter, snippets in README order (later ones use the files earlier ones write).
    script = "\n\n".join(f"# --- snippet {i}\n{block}" for i, block in enumerate(python_blocks()))
    (tmp_path / "readme_snippets.py").write_text(script)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(README.parent)}
    # A vocabulary that never occurs in the cache would make the scoring snippet meaningless: fail on it.
    strict = ["-W", "error::reasoning_dspy.features.reasonscore.VocabularyWarning"]
    result = subprocess.run([sys.executable, *strict, "readme_snippets.py"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    for folder in ["runs/acts", "runs/sae", "runs/scores"]:
        assert (tmp_path / folder).is_dir()
