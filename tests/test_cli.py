import json

from typer.testing import CliRunner

from reasoning_dspy.activations import ActivationCache
from reasoning_dspy.cli import app

runner = CliRunner()


def test_extract_command(tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"text": t}) + "\n" for t in ["Wait, why?", "Therefore yes.", "Hmm."]))
    out = tmp_path / "cache"
    result = runner.invoke(app, ["extract", "--model", "tiny-random", "--layer", "2", "--prompts", str(prompts),
                                 "--out", str(out), "--dtype", "float32"])
    assert result.exit_code == 0, result.output
    cache = ActivationCache(out)
    assert cache.manifest.complete and cache.layer == 2 and cache.manifest.n_prompts == 3
    assert "ActivationCache(" in result.output


def test_extract_bad_input_is_a_clear_error(tmp_path):
    missing = runner.invoke(app, ["extract", "--model", "tiny-random", "--layer", "1",
                                  "--prompts", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "c")])
    assert missing.exit_code == 2 and "prompts file not found" in missing.output
    bad_layer = runner.invoke(app, ["extract", "--model", "tiny-random", "--layer", "7", "--limit", "2",
                                    "--out", str(tmp_path / "c")])
    assert bad_layer.exit_code == 2 and "layer 7 is out of range" in bad_layer.output
    offline = runner.invoke(app, ["extract", "--model", "nobody/nothing-xyz", "--layer", "1", "--limit", "2",
                                  "--out", str(tmp_path / "c")])
    assert offline.exit_code == 2 and "tiny-random" in offline.output


def test_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "extract" in result.output and "demo" in result.output
