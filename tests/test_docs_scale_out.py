"""docs/scale-out.md, run as written: the single-machine `torchrun` quick start (2 processes, gloo) and
the streaming example. (tests/test_docs.py runs the page's Python example, in one process, which
`process_group` allows, and checks its `reasoning-dspy` flags.)"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from reasoning_dspy.activations import ActivationCache
from reasoning_dspy.sae import load_sae

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "scale-out.md").read_text()


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC, flags=re.S)


@pytest.mark.slow  # two torchrun starts of 2 processes each
def test_quick_start_runs_on_two_processes(tmp_path):
    quick = blocks("bash")[0]
    assert quick.count("torchrun --standalone --nproc-per-node 2") == 2
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    res = subprocess.run(["bash", "-e", "-c", quick], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    cache = ActivationCache(tmp_path / "runs" / "acts-2p")
    assert cache.manifest.complete and cache.manifest.n_prompts == 64
    assert len(list((tmp_path / "runs" / "acts-2p" / "progress").iterdir())) == 2
    assert load_sae(tmp_path / "runs" / "sae-2p").cfg.d_sae == 512
    assert res.stdout.count("ActivationCache(") == 1 and res.stdout.count("FVU") == 1


def test_streaming_example(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from reasoning_dspy.cli import app

    monkeypatch.chdir(tmp_path)
    (tmp_path / "corpus").mkdir()
    for name, texts in (("a", ["Wait, is 91 prime?", ""]), ("b", ["Therefore 91 = 7 x 13.", "Hmm, check."])):
        (tmp_path / "corpus" / f"{name}.jsonl").write_text("".join(f'{{"text": "{t}"}}\n' for t in texts))
    stream = next(b for b in blocks("bash") if "--streaming" in b and "torchrun" not in b)
    args = shlex.split(stream)
    assert args[0] == "reasoning-dspy"
    res = CliRunner().invoke(app, args[1:])
    assert res.exit_code == 0, res.output
    cache = ActivationCache("runs/acts-stream")
    assert cache.manifest.n_prompts == 3 and cache.manifest.source.startswith("json:")
    assert cache.prompts() == ["Wait, is 91 prime?", "Therefore 91 = 7 x 13.", "Hmm, check."]
