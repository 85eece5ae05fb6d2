"""The command line's bad input, second sweep: read-only output folders, outputs a run would
silently replace, corrupt or mistyped files, a folder where a config file belongs, and a run that
another process holds. Every case exits with code 2 and a specific `error: ...`, prints no
traceback, and leaves no output behind (no half-written folder)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from typer.testing import CliRunner

from reasoning_dspy.cli import app

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "experiments" / "configs" / "optimize-tiny.yaml"
STUDY = ROOT / "experiments" / "configs" / "study-tiny.yaml"
BINARY = b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe\xfa not text"


@pytest.fixture(scope="module")
def files(tiny, tiny_cache, tmp_path_factory):
    """A trained layer-2 SAE (with its checkpoint) and its ReasonScore folder, scores folders with a
    corrupt tensor file or table, and config files that are binary, empty, a list, or a folder."""
    import warnings

    from reasoning_dspy.features.reasonscore import VocabularyWarning, score_features
    from reasoning_dspy.sae import SAETrainConfig, train_sae

    root = tmp_path_factory.mktemp("bad_input_cli")
    sae = train_sae(SAETrainConfig(out=str(root / "sae"), arch="topk", d_sae=64, k=8, batch_size=256, tokens=2048,
                                   log_every=4), tiny_cache, progress=False).sae
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VocabularyWarning)
        score_features(tiny_cache, sae, tokenizer=tiny.tokenizer, top_n=4, progress=False).save(root / "scores")
    shutil.copytree(root / "scores", root / "scores_torn")
    torn = root / "scores_torn" / "scores.safetensors"
    torn.write_bytes(torn.read_bytes()[:6])  # what a full disk or a cut copy leaves
    shutil.copytree(root / "scores", root / "scores_bad_table")
    (root / "scores_bad_table" / "features.json").write_text('{"groups": ["wait"], "settings": ')
    (root / "binary.yaml").write_bytes(BINARY)
    (root / "empty.yaml").write_text("")
    (root / "list.yaml").write_text("- model\n- sae\n")
    (root / "configs").mkdir()
    (root / "configs" / "mine.yaml").write_text("name: mine\n")
    return SimpleNamespace(root=root, cache=tiny_cache.path, sae=root / "sae", scores=root / "scores")


@pytest.fixture
def read_only(tmp_path):
    """A folder this process cannot write: permission bits for a user, a read-only mount for root
    (permission bits do not stop root)."""
    folder = tmp_path / "read_only"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"running as root and cannot mount a read-only folder: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def _invoke(command: str, **paths: Path):
    return runner.invoke(app, [a.format(**{k: str(v) for k, v in paths.items()}) for a in shlex.split(command)])


def _refused(result, fragment: str) -> None:
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # exited, did not crash
    assert "Traceback" not in result.output and "error: " in result.output
    assert fragment in " ".join(result.output.split()), result.output


EXTRACT = "extract --model tiny-random --layer 2 --prompts bundled --limit 4 --out {out}"
TRAIN = "train-sae --cache {cache} --out {out} --d-sae 32 --k 4 --batch-size 256 --tokens 1024"
SCORE = "score --cache {cache} --sae {sae} --out {out}"
STEER = "steer --model tiny-random --sae {sae} --scores {scores} --feature 1 --prompt Why? --max-tokens 4"
OPTIMIZE = f"optimize {TINY} out={{out}}"
STUDY_CMD = f"study {STUDY} out={{out}}"

READ_ONLY_CASES = {
    "extract": (EXTRACT, "cannot write --out folder"),
    "extract-into-the-folder-itself": (EXTRACT.replace("{out}", "{ro}"), "cannot write --out folder"),
    "train-sae": (TRAIN, "cannot write --out folder"),
    "score": (SCORE, "cannot write --out folder"),
    "steer": (STEER + " --out {out}.jsonl", "cannot write --out folder"),
    "study": (STUDY_CMD, "out: cannot write the study's out folder"),
    "optimize": (OPTIMIZE, "out: cannot write the run folder"),
}


@pytest.mark.parametrize(("command", "fragment"), [pytest.param(*c, id=n) for n, c in READ_ONLY_CASES.items()])
def test_a_read_only_output_folder_is_refused_before_the_work(files, read_only, command, fragment):
    out = read_only / "out"
    result = _invoke(command, out=out, ro=read_only, cache=files.cache, sae=files.sae, scores=files.scores)
    _refused(result, fragment)
    assert str(read_only) in result.output.replace("\n", "")  # the message names the folder
    assert "steering features" not in result.output  # steer refuses before generating anything
    assert not any(read_only.iterdir())


CASES = {
    # an output that a run would silently replace
    "train-sae-over-an-sae": (TRAIN.replace("{out}", "{sae}"), "already holds an SAE"),
    "train-sae-resume-and-overwrite": (TRAIN + " --resume --overwrite", "pass one of them"),
    # corrupt files
    "steer-scores-torn": (STEER.replace("{scores}", "{root}/scores_torn"),
                          "scores_torn/scores.safetensors' is not a readable safetensors file"),
    "steer-scores-bad-table": (STEER.replace("{scores}", "{root}/scores_bad_table"),
                               "scores_bad_table/features.json' is not a ReasonScore table"),
    "score-is-given-a-binary-config-as-sae": (SCORE.replace("{sae}", "{root}/binary.yaml"), "no SAE folder at"),
    "optimize-binary-config": ("optimize {root}/binary.yaml", "binary.yaml' is not UTF-8 text"),
    "study-binary-config": ("study {root}/binary.yaml", "binary.yaml' is not UTF-8 text"),
    # missing, empty, wrong shape
    "optimize-missing-config": ("optimize {root}/nope.yaml", "config not found"),
    "optimize-empty-config": ("optimize {root}/empty.yaml", "name: Field required"),
    "optimize-list-config": ("optimize {root}/list.yaml", "must hold a mapping of settings, got list"),
    "optimize-a-folder": ("optimize {root}/configs", "configs' is a folder; name a YAML config file (it holds mine.yaml)"),
    "study-a-folder": ("study {root}/configs", "configs' is a folder; name a YAML config file"),
    # wrong type, out of range, NaN and inf
    "optimize-n-trials-text": (OPTIMIZE + " optimizer.n_trials=many", "optimizer.n_trials: Input should be a valid"),
    "optimize-n-trials-0": (OPTIMIZE + " optimizer.n_trials=0", "optimizer.n_trials: Input should be greater than"),
    "optimize-margin-nan": (OPTIMIZE + " metric.accuracy_margin=.nan", "accuracy_margin: Input should be a finite"),
    "optimize-strength-inf": (OPTIMIZE + " steering.add_strength=[0.1,.inf]", "add_strength.1: Input should be a"),
    "optimize-feature-outside-the-sae": (OPTIMIZE + " steering.features=[3,99]", "[99] are outside the SAE"),
    "study-layer-out-of-range": (STUDY_CMD + " layer=99", "layer 99 is out of range for tiny-random"),
    "study-strength-inf": (STUDY_CMD + " strengths=[.inf]", "strengths.0: Input should be a finite number"),
    "study-sets-overwrite": (STUDY_CMD + " sae.overwrite=true", "sae.overwrite is set by the study itself"),
}


@pytest.mark.parametrize(("command", "fragment"), [pytest.param(*c, id=n) for n, c in CASES.items()])
def test_cli_bad_input_is_a_clear_error_that_writes_nothing(files, tmp_path, command, fragment):
    out = tmp_path / "out"
    before = {p: p.stat().st_mtime_ns for p in files.sae.rglob("*")}
    result = _invoke(command, out=out, root=files.root, cache=files.cache, sae=files.sae, scores=files.scores)
    _refused(result, fragment)
    assert not out.exists()  # no half-written output folder
    assert {p: p.stat().st_mtime_ns for p in files.sae.rglob("*")} == before  # the SAE was not touched


def test_train_sae_replaces_an_sae_only_when_asked(files, tmp_path):
    first = tmp_path / "sae"
    args = dict(cache=files.cache, out=first)
    assert _invoke(TRAIN, **args).exit_code == 0
    weights = (first / "sae_weights.safetensors").read_bytes()
    wider = TRAIN.replace("--d-sae 32", "--d-sae 48")
    _refused(_invoke(wider, **args), "already holds an SAE (sae_weights.safetensors, checkpoint); pass --overwrite")
    assert (first / "sae_weights.safetensors").read_bytes() == weights
    assert _invoke(TRAIN + " --resume", **args).exit_code == 0  # resuming its own finished run is fine
    result = _invoke(wider + " --overwrite", **args)
    assert result.exit_code == 0, result.output
    from reasoning_dspy.sae import load_sae

    assert load_sae(first).d_sae == 48
    # the replaced run's checkpoint went with it: --resume continues the new SAE, not the old one
    assert _invoke(wider + " --resume", **args).exit_code == 0


def test_an_optimize_run_in_progress_is_not_entered_by_another(tmp_path):
    """While one process holds a run folder, the same config is refused with a clear message; --new
    starts a run in a folder of its own."""
    from experiments import load_experiment
    from experiments.runner import claimed

    cfg = load_experiment(TINY, [f"out={tmp_path}"])
    with claimed(cfg) as (folder, resumed):
        assert not resumed
        (folder / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json", exclude={"tracking"})))
        script = ("import sys; from reasoning_dspy.cli import app; "
                  f"app(['optimize', {str(TINY)!r}, 'out={tmp_path}'] + sys.argv[1:])")
        env = {**os.environ, "OMP_NUM_THREADS": "1"}  # tiny tensors; two threads on a busy CPU crawl
        other = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                               cwd=ROOT, env=env)
        assert other.returncode == 2, other.stderr
        message = " ".join(other.stderr.split())
        assert f"the run in '{folder}' is in progress in another process" in message and "--new" in message
        assert "Traceback" not in other.stderr
        assert sorted(p.name for p in folder.iterdir()) == [".run.lock", "config.yaml"]  # nothing written
        fresh = subprocess.run([sys.executable, "-c", script, "--new", "optimizer.n_trials=4"],
                               capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
        assert fresh.returncode == 0, fresh.stderr
        own = Path(fresh.stdout.strip().splitlines()[-1]).parent
        assert own != folder and (own / "result.json").is_file()
