"""The dashboard in a real browser: `reasoning-dspy dashboard` on tiny-random with the planted SAE,
driven by Python playwright in Debian's chromium (installed by `ensure_chromium` when missing).

Checks: the heatmap shows the activations an engine call measures for the entered prompt; the
Steering page shows different baseline and steered answers; clicking a point of the map opens its
feature page; a flag survives a restart of the app on the same SQLite file. No request leaves
127.0.0.1. Screenshots of every page go to runs/test-artifacts/dashboard/.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from reasoning_dspy.sae import planted

pytestmark = pytest.mark.slow

ARTIFACTS = Path(__file__).resolve().parents[1] / "runs" / "test-artifacts" / "dashboard"
PROMPT = "so wait I think wait"
NOTE = "flagged from the browser test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class App:
    """`reasoning-dspy dashboard` in a subprocess (started, restarted, stopped by the test)."""

    def __init__(self, root: Path):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cmd = [sys.executable, "-m", "reasoning_dspy.cli", "dashboard", "--model", "tiny-random",
                    "--sae", planted.NAME, "--port", str(self.port), "--cache-dir", str(root / "cache"),
                    "--database-url", f"sqlite:///{root / 'tracking.sqlite'}", "--corpus-texts", "48",
                    "--max-tokens", "12", "--user", "tester"]
        self.env = {**os.environ, "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
        self.log = root / "dashboard.log"
        self.root = root  # its working directory: the SAE box may load folders under it
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 240) -> None:
        self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=self.log.open("ab"), stderr=subprocess.STDOUT,
                                     cwd=self.root)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"the dashboard exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        pytest.fail(f"the dashboard did not answer within {timeout_s:g} s: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    from reasoning_dspy.tracking import Tracker

    root = tmp_path_factory.mktemp("dashboard-browser")
    with Tracker.open(root / "journal.jsonl", f"sqlite:///{root / 'tracking.sqlite'}") as tracker:
        run = tracker.start_run("browser-run", kind="optimize")
        tracker.log_trials(run, [{"number": i, "candidate": {"instruction": f"Think {i}."}, "score": s,
                                  "accuracy": a, "tokens": 10.0 + i, "activation": s, "feasible": True}
                                 for i, (s, a) in enumerate([(0.1, 0.5), (0.3, 0.25), (0.2, 0.75)])])
        tracker.log_generation(run, "Is 91 prime?", "Wait, 91 = 7 x 13.", label="heldout/steered", index=0,
                               reasoning_activation=0.4, correct=1.0, tokens=9)
        tracker.finish_run(run)
    server = App(root)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser(app):
    from reasoning_dspy.dashboard.browser import chromium

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    outside: list[str] = []
    with chromium() as page:
        page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(
            ("http://127.0.0.1", "data:", "blob:", "about:")) else None)
        page.set_default_timeout(120_000)
        page.goto(app.url)
        page.wait_for_selector("#rd-prompt textarea")
        yield page
    assert outside == [], f"the page reached beyond this machine: {outside[:5]}"


def _tab(page, name: str) -> None:
    page.get_by_role("tab", name=name, exact=True).click()


def test_the_heatmap_shows_what_an_engine_call_measures(app, browser, tiny, planted_sae):
    from reasoning_dspy.engine import SteeredEngine

    page = browser
    page.fill("#rd-prompt textarea", PROMPT)
    page.click("#rd-generate")
    page.wait_for_selector("#rd-heatmap .rd-tok")
    page.wait_for_function("document.querySelector('#rd-answer textarea')?.value.length > 0")
    cells = page.eval_on_selector_all(
        f"#rd-heatmap .rd-tok[data-feature='{planted.DETECT}']",
        "els => els.map(e => [e.textContent, parseFloat(e.dataset.value), e.dataset.answer === '1'])")
    page.screenshot(path=str(ARTIFACTS / "prompt.png"), full_page=True)
    engine = SteeredEngine(tiny.model, tiny.tokenizer, sae=planted_sae, reasoning_features=planted.REASONING)
    try:
        result = engine.generate([PROMPT], steering=None, max_tokens=12, capture=True)[0]
    finally:
        engine.close()
    assert page.input_value("#rd-answer textarea") == result.text
    start = next(i for i, c in enumerate(cells) if c[2])
    assert len(cells) - start == len(result.token_ids)
    waits = [c[1] for c in cells[:start] if c[0] == "\u00a0wait" or c[0] == " wait"]
    assert len(waits) == 2 and min(waits) > 0.05  # the detector fires on the prompt's " wait"s
    # the engine measures the answer at the positions that predict each answer token
    shifted = [c[1] for c in cells[start - 1 : start - 1 + len(result.token_ids)]]
    assert sum(shifted) / len(shifted) == pytest.approx(result.report.features_mean, rel=1e-3, abs=1e-6)


def test_bad_input_shows_a_message_not_a_traceback(app, browser):
    from reasoning_dspy.sae import SAE, SAEConfig, save_sae

    page = browser
    _tab(page, "Prompt")
    page.fill("#rd-prompt textarea", "   ")
    page.click("#rd-generate")
    page.wait_for_function("document.querySelector('#rd-prompt-status')?.innerText.includes('the prompt is empty')")
    _tab(page, "Feature")
    page.fill("#rd-feature-index input", "99")
    page.click("#rd-feature-open")
    page.wait_for_function("document.querySelector('#rd-feature-status')?.innerText.includes('feature 99 is out of range')")
    save_sae(SAE.from_config(SAEConfig(architecture="relu", d_in=32, d_sae=8, hook_layer=1)), app.root / "narrow")
    page.locator("#rd-sae-box").get_by_text("SAE", exact=True).first.click()  # open the SAE box
    page.fill("#rd-sae textarea, #rd-sae input", str(app.root / "narrow"))
    page.click("#rd-sae-load")
    page.wait_for_function("document.querySelector('#rd-sae-status')?.innerText.includes('expects d_in=32')")
    page.screenshot(path=str(ARTIFACTS / "bad-input.png"), full_page=True)
    body = page.inner_text("body")
    assert "Traceback" not in body and 'File "' not in body
    assert "tiny-planted (relu, 16 features" in page.inner_text("#rd-header")  # the SAE in use stays


def test_the_steering_page_shows_different_answers(browser):
    page = browser
    _tab(page, "Steering")
    page.fill("#rd-steer-prompt textarea", "Is 91 prime?")
    page.click("#rd-steer")
    page.wait_for_function("document.querySelector('#rd-steered textarea')?.value.length > 0")
    baseline, steered = page.input_value("#rd-baseline textarea"), page.input_value("#rd-steered textarea")
    assert baseline and steered and baseline != steered
    assert steered.count("wait") > baseline.count("wait")  # feature 5 pushes " wait"
    page.click("#rd-sweep")
    page.wait_for_function("document.querySelector('#rd-steer-status')?.innerText.includes('swept')")
    page.screenshot(path=str(ARTIFACTS / "steering.png"), full_page=True)


def test_a_point_on_the_map_opens_its_feature_page(browser):
    page = browser
    _tab(page, "Feature map")
    page.wait_for_selector(f"#rd-map circle[data-feature='{planted.DETECT}']", timeout=240_000)
    page.screenshot(path=str(ARTIFACTS / "map.png"), full_page=True)
    page.click(f"#rd-map circle[data-feature='{planted.DETECT}']")
    page.wait_for_function(f"document.querySelector('#rd-feature-summary')?.innerText.includes('Feature #{planted.DETECT}')")
    assert page.get_by_role("tab", name="Feature", exact=True).get_attribute("aria-selected") == "true"
    page.wait_for_selector("#rd-feature-contexts .rd-center")
    page.screenshot(path=str(ARTIFACTS / "feature.png"), full_page=True)


def test_a_flag_survives_a_restart(app, browser):
    page = browser
    _tab(page, "Experiments")
    page.locator("#rd-runs .body-cell", has_text="browser-run").first.click()
    page.wait_for_function("document.querySelector('#rd-run-id textarea, #rd-run-id input')?.value.length > 0")
    page.locator("#rd-generations .body-cell", has_text="Is 91 prime?").first.click()
    page.wait_for_function("document.querySelector('#rd-exp-prompt textarea')?.value === 'Is 91 prime?'")
    page.fill("#rd-note textarea, #rd-note input", NOTE)
    page.click("#rd-flag")
    page.locator("#rd-annotations .body-cell", has_text=NOTE).first.wait_for()
    page.screenshot(path=str(ARTIFACTS / "experiments.png"), full_page=True)
    app.stop()
    app.start()
    page.goto(app.url)
    page.wait_for_selector("#rd-prompt textarea")
    _tab(page, "Experiments")
    row = page.locator("#rd-annotations .virtual-row", has_text=NOTE).first
    row.wait_for()
    text = row.inner_text()
    assert "tester" in text and "flag" in text and "Is 91 prime?" in text
    page.screenshot(path=str(ARTIFACTS / "experiments-after-restart.png"), full_page=True)
