"""Evaluating a model per instruction style through DSPy: rows, summaries and the CLI."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from reasoning_dspy.cli import app
from reasoning_dspy.reasoner.evaluate import evaluate_styles, style_instruction, summarize
from reasoning_dspy.reasoner.styles import STYLES


def test_each_style_answers_the_same_problems_with_its_own_instruction(tiny):
    result = evaluate_styles(tiny, n=4, styles=("terse", "careful"), max_tokens=12, batch_size=4, progress=False)
    rows = result["rows"]
    assert [r["style"] for r in rows] == ["terse"] * 4 + ["careful"] * 4
    assert [r["id"] for r in rows[:4]] == [r["id"] for r in rows[4:]]
    assert {r["instruction"] for r in rows} == {STYLES["terse"].instructions[0], STYLES["careful"].instructions[0]}
    # tiny-random writes gibberish: DSPy's ChatAdapter cannot parse it and the answers are wrong
    assert not any(r["parsed"] for r in rows) and not any(r["correct"] for r in rows)
    terse = result["summary"]["terse"]
    assert terse["n"] == 4 and terse["parse_rate"] == 0.0 and terse["mean_tokens"] > 0


def test_summary_counts_reflection_words_parses_and_families():
    base = {"n_tokens": 10, "features_mean": None, "instruction": "x", "text": ""}
    rows = [
        {**base, "style": "careful", "family": "rates", "correct": True, "parsed": True,
         "reasoning": "12 * 3 = 36. Wait, let me check: 36 / 3 = 12."},
        {**base, "style": "careful", "family": "counting", "correct": False, "parsed": False,
         "reasoning": "5 + 5 = 10."},
    ]
    s = summarize(rows)["careful"]
    assert s["accuracy"] == 0.5 and s["parse_rate"] == 0.5 and s["reflect_rate"] == 0.5
    assert s["accuracy_by_family"] == {"counting": 0.0, "rates": 1.0}
    assert s["words_per_100_tokens"] == pytest.approx(100 * 2 / 20)  # "wait", "let me"


def test_held_out_phrasings_and_unknown_styles():
    assert style_instruction("careful", held_out=True) == STYLES["careful"].held_out[0]
    with pytest.raises(ValueError, match="unknown style 'sloppy'"):
        style_instruction("sloppy")


def test_cli_writes_the_summary_and_refuses_bad_input(tmp_path):
    out = tmp_path / "eval.json"
    result = CliRunner().invoke(app, ["reasoner", "eval", "--model", "tiny-random", "--n", "2", "--style", "terse",
                                      "--max-tokens", "8", "--out", str(out)])
    assert result.exit_code == 0, result.output
    saved = json.loads(out.read_text())
    assert list(saved["summary"]) == ["terse"] and len(saved["rows"]) == 2
    assert not (tmp_path / "eval.json.partial.jsonl").exists()  # the finished rows moved into the result
    result = CliRunner().invoke(app, ["reasoner", "eval", "--model", "tiny-random", "--style", "sloppy"])
    assert result.exit_code == 2 and "unknown style" in result.output
    result = CliRunner().invoke(app, ["reasoner", "eval", "--model", "tiny-random", "--split", "train"])
    assert result.exit_code == 2 and "split" in result.output


def test_forced_decisions_take_each_branch_from_the_same_prompt(tiny):
    from reasoning_dspy.problems import make_problems
    from reasoning_dspy.reasoner.causal import decision_tokens, forced_decisions

    problems = make_problems(3, split="test", families=["chains"])
    rows = forced_decisions(tiny, problems, STYLES["neutral"].instructions[0], max_tokens=6, batch_size=2)
    reflective = {tiny.tokenizer.decode([t]) for t in decision_tokens(tiny.tokenizer)}
    assert [r["id"] for r in rows] == [p.id for p in problems]
    for r in rows:
        head = "[[ ## reasoning ## ]]\nTask: " + STYLES["neutral"].instructions[0] + "\n"
        assert r["reflect"]["reasoning"].startswith(head) and r["plain"]["reasoning"].startswith(head)
        assert r["reflect"]["reasoning"][len(head):].startswith(tuple(reflective))
        assert not r["plain"]["reasoning"][len(head):].startswith(tuple(reflective))


def test_cli_causal_and_steps_run_and_refuse_bad_input(tmp_path):
    out = tmp_path / "causal.json"
    result = CliRunner().invoke(app, ["reasoner", "causal", "--model", "tiny-random", "--n", "2", "--max-tokens", "8",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    saved = json.loads(out.read_text())
    assert saved["summary"]["n"] == 2 and len(saved["rows"]) == 2
    d = saved["summary"]["reflect_minus_plain"]
    assert d["low"] <= d["value"] <= d["high"] and "reflect - plain" in result.output
    result = CliRunner().invoke(app, ["reasoner", "causal", "--model", "tiny-random", "--split", "train"])
    assert result.exit_code == 2 and "held-out" in result.output
    result = CliRunner().invoke(app, ["reasoner", "steps", "--model", "tiny-random", "--n", "2", "--shots", "1"])
    assert result.exit_code == 0, result.output
    assert len([line for line in result.output.splitlines() if "scratchpad" in line]) == 8
    result = CliRunner().invoke(app, ["reasoner", "steps", "--model", "tiny-random", "--n", "2", "--kind", "add 2+2",
                                      "--kind", "div 2/1"])
    assert result.exit_code == 0, result.output
    assert [line.split()[:2] for line in result.output.splitlines() if "scratchpad" in line] == [["add", "2+2"],
                                                                                                  ["div", "2/1"]]
    result = CliRunner().invoke(app, ["reasoner", "steps", "--kind", "add 4+4"])
    assert result.exit_code == 2 and "unknown step kinds ['add 4+4']" in result.output


def test_an_interrupted_eval_answers_only_the_missing_problems(tiny, tmp_path, monkeypatch):
    from reasoning_dspy._io import CheckpointError
    from reasoning_dspy.program import evaluation
    from reasoning_dspy.reasoner import evaluate

    ckpt = tmp_path / "eval.json.partial.jsonl"
    kw = {"n": 4, "styles": ("terse", "careful"), "max_tokens": 8, "batch_size": 4, "progress": False}
    full = evaluate_styles(tiny, checkpoint=ckpt, **kw)
    lines = ckpt.read_text().splitlines()
    assert len(lines) == 1 + 8 and json.loads(lines[0])["settings"]["max_tokens"] == 8
    ckpt.write_text("\n".join(lines[:4]) + "\n")  # as if stopped after 3 of the 8 rows were saved

    answered = []
    solve = evaluation.solve
    monkeypatch.setattr(evaluate, "CHUNK", 2)
    monkeypatch.setattr(evaluation, "solve", lambda lm, problems, **k: answered.extend(problems) or solve(lm, problems, **k))
    again = evaluate_styles(tiny, checkpoint=ckpt, **kw)
    assert len(answered) == 5  # one terse problem and the four careful ones
    assert [(r["style"], r["id"]) for r in again["rows"]] == [(r["style"], r["id"]) for r in full["rows"]]
    assert again["rows"][:3] == full["rows"][:3]  # read back from the file, not answered again

    with pytest.raises(CheckpointError, match=r"other settings \(max_tokens\)"):
        evaluate_styles(tiny, checkpoint=ckpt, **{**kw, "max_tokens": 9})


def test_forced_decisions_continue_from_their_checkpoint(tiny, tmp_path, monkeypatch):
    from reasoning_dspy.engine import generate
    from reasoning_dspy.problems import make_problems
    from reasoning_dspy.reasoner.causal import forced_decisions

    problems = make_problems(3, split="test", families=["chains"])
    instruction = STYLES["neutral"].instructions[0]
    ckpt = tmp_path / "causal.json.partial.jsonl"
    rows = forced_decisions(tiny, problems, instruction, max_tokens=6, batch_size=2, checkpoint=ckpt)
    assert [r["id"] for r in rows] == [p.id for p in problems] and len(ckpt.read_text().splitlines()) == 4

    def no_generation(*args, **kwargs):
        raise AssertionError("every problem is in the checkpoint; nothing should be generated")

    monkeypatch.setattr(generate, "generate_rows", no_generation)
    assert forced_decisions(tiny, problems, instruction, max_tokens=6, batch_size=2, checkpoint=ckpt) == rows
