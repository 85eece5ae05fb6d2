"""Reports quote text from users and models: the HTML page shows it as text. No raw HTML runs, no
link leaves for `javascript:`, and only the images the report wrote are inlined; a missing image is
a note on the page, not a failed run."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from reasoning_dspy.reports import write_html
from reasoning_dspy.reports.html import md_code, md_escape

SECRET = "the-secret-is-42"
HOSTILE = ('<img src="../secret.txt"> <script>alert(1)</script> | ![s](../secret.png) '
           "[click](javascript:alert(1)) **bold** # heading")
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "secret.txt").write_text(SECRET)
    (tmp_path / "secret.png").write_bytes(SECRET.encode())
    report = tmp_path / "report"
    report.mkdir()
    (report / "plot.png").write_bytes(PNG)
    (report / "other.png").write_bytes(PNG + b"other")
    return report


def test_raw_html_links_and_foreign_images_in_the_markdown_stay_text(folder):
    (folder / "report.md").write_text(
        f"# Report\n\n{HOSTILE}\n\n<div onclick=x>block</div>\n\n![plot](plot.png)\n\n![gone](missing.png)\n\n"
        "![other](other.png)\n\n[site](https://example.org)\n")
    page = write_html(folder / "report.md", images=["plot.png", "missing.png"]).read_text()
    assert SECRET not in page and base64.b64encode(SECRET.encode()).decode() not in page
    assert "<script" not in page and "<div" not in page and "javascript:" not in page
    assert "&lt;script&gt;" in page  # shown, not run
    assert "data:image/png;base64," + base64.b64encode(PNG).decode() in page  # the report's own plot
    assert base64.b64encode(PNG + b"other").decode() not in page and "[image: other]" in page  # not listed
    assert "[missing image: gone]" in page and 'href="https://example.org"' in page


def test_without_a_list_only_images_inside_the_folder_are_inlined(folder):
    (folder / "report.md").write_text("![s](../secret.png)\n\n![t](../secret.txt)\n\n![p](plot.png)\n")
    page = write_html(folder / "report.md").read_text()
    assert SECRET not in page and base64.b64encode(SECRET.encode()).decode() not in page
    assert base64.b64encode(PNG).decode() in page


def test_escaped_text_renders_as_the_same_characters(folder):
    (folder / "report.md").write_text(f"| a | b |\n|---|---|\n| {md_escape(HOSTILE)} | {md_code('x|`y')} |\n")
    page = write_html(folder / "report.md").read_text()
    assert "<img" not in page and "<strong>" not in page and "<h1" not in page and "<a " not in page
    assert "&lt;img src=\"../secret.txt\"&gt;" in page and "**bold**" in page and "[click](javascript:alert(1))" in page
    assert page.count("<td>") == 2  # the pipe in the text did not split the row


def test_an_experiment_report_escapes_instructions_and_inlines_only_its_plots(folder):
    from experiments import load_experiment
    from experiments.report import write_report
    from optimizers.space import Candidate
    from optimizers.trials import TrialRecord

    tiny = Path(__file__).resolve().parents[1] / "experiments" / "configs" / "optimize-tiny.yaml"
    cfg = load_experiment(tiny, [f"out={folder}"])
    trials = [TrialRecord(number=i, params={}, candidate=Candidate(instruction=text), score=0.1 * i, activation=0.1,
                          accuracy=0.5, tokens=10, reflect=0.2, word_rate=1.0, n=4, wall_s=1.0)
              for i, text in enumerate(["Answer the question.", HOSTILE])]
    interval = {"value": 0.5, "low": 0.4, "high": 0.6}
    arm = {k: interval for k in ("activation", "reflect", "word_rate", "accuracy", "tokens")}
    heldout = {"n": 4, "split": "test", "steering": None,
               "instruction": {"baseline": "Answer the question.", "optimized": HOSTILE},
               "summary": {"baseline": arm, "optimized": {**arm, "minus_baseline": arm},
                           "steered": {**arm, "minus_baseline": arm}}}
    (folder / "skipped.json").write_text(json.dumps([{"prompt": HOSTILE, "reason": "<b>near duplicate</b>"}]))
    write_report(folder, cfg, trials, heldout)
    page = (folder / "report.html").read_text()
    assert SECRET not in page and base64.b64encode(SECRET.encode()).decode() not in page
    assert "<script" not in page and 'href="javascript' not in page and "<b>" not in page and "<a " not in page
    # shown as text: the trials table, the best trial, the held-out instruction, the skipped prompt
    assert page.count("&lt;script&gt;alert(1)&lt;/script&gt;") == 4
    assert page.count("data:image/png;base64,") == 3  # trials, Pareto front, held out: its own plots only
