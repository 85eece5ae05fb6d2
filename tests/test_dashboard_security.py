"""The dashboard is open to whoever reaches its port: its SAE box loads only allowed folders and says
nothing about others, a switch never closes an engine a request still uses, a login can be required,
uploads are capped, and listening beyond loopback without a login is warned about."""

from __future__ import annotations

import threading

import httpx
import pytest

from reasoning_dspy.dashboard.backend import EngineBackend
from reasoning_dspy.dashboard.config import AUTH_ENV, DashboardConfig
from reasoning_dspy.dashboard.session import Dashboard
from reasoning_dspy.dashboard.workspace import DashboardError, with_sae
from reasoning_dspy.sae import planted


@pytest.fixture(scope="module")
def dash(tiny, tmp_path_factory):
    root = tmp_path_factory.mktemp("dashboard-security")
    workspace = root / "workspace"
    workspace.mkdir()
    cfg = DashboardConfig(model="tiny-random", sae=planted.NAME, cache_dir=root / "cache", corpus_texts=16,
                          database_url=f"sqlite:///{root / 'tracking.sqlite'}", max_tokens=4, user="tester",
                          sae_roots=[workspace])
    ws = with_sae(tiny, planted.NAME, name="tiny-random", cache_dir=cfg.resolved_cache_dir(), corpus_limit=16)
    ws.wait_corpus()
    board = Dashboard(cfg, ws, EngineBackend(ws, max_tokens=4))
    board.workspace = workspace
    yield board
    board.close()


def test_the_sae_box_loads_only_allowed_folders_and_reveals_nothing_else(dash, tmp_path):
    from reasoning_dspy.sae import SAE, SAEConfig, save_sae

    save_sae(SAE.from_config(SAEConfig(architecture="relu", d_in=64, d_sae=8, hook_layer=1)), tmp_path / "outside")
    before = dash.ws
    messages = []
    for path in (str(tmp_path / "outside"), "/etc", "/no/such/folder", str(dash.workspace / ".." / "cache"), "~"):
        with pytest.raises(DashboardError) as err:
            dash.switch_sae(path)
        messages.append(str(err.value).replace(repr(path), "<path>"))
    assert len(set(messages)) == 1 and "loads only shipped SAEs" in messages[0]  # the same words, existing or not
    with pytest.raises(DashboardError, match="scores folder box loads only folders under"):
        dash.switch_sae(planted.NAME, "/etc")
    assert dash.ws is before
    with pytest.raises(DashboardError, match="cannot load the SAE"):  # inside the workspace: said plainly
        dash.switch_sae(str(dash.workspace / "missing"))


def test_a_switch_waits_for_the_requests_on_the_old_engine(dash):
    """A sweep runs one generate per strength on the engine it started with; an SAE switch in the
    middle must not close that engine under it."""
    started, errors, rows = threading.Event(), [], []
    first_engine = dash.backend.engine
    original = first_engine.generate

    def slow_generate(*args, **kwargs):
        started.set()
        return original(*args, **kwargs)

    first_engine.generate = slow_generate
    try:
        def sweep():
            try:
                rows.append(dash.sweep("so wait", "features", 1, str(planted.PUSH), "add", "residual",
                                       "0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7", 4))
            except Exception as err:  # noqa: BLE001 - reported below
                errors.append(err)

        thread = threading.Thread(target=sweep)
        thread.start()
        started.wait(30)
        dash.switch_sae(planted.NAME)  # a new engine; the sweep's engine stays open until it is done
        thread.join(120)
    finally:
        first_engine.generate = original
    assert not errors, errors
    assert len(rows[0][0]) == 8 and dash.backend.engine is not first_engine
    with pytest.raises(RuntimeError, match="closed"):  # closed once its last request ended
        first_engine.generate(["hi"], max_tokens=1)


def test_exposure_and_login_settings(monkeypatch):
    monkeypatch.delenv(AUTH_ENV, raising=False)
    assert DashboardConfig().exposure_warning() is None
    warning = DashboardConfig(host="0.0.0.0").exposure_warning()
    assert warning is not None and "without a login" in warning and AUTH_ENV in warning
    assert DashboardConfig(host="0.0.0.0", auth="ada:s3cret").exposure_warning() is None
    assert DashboardConfig(auth="ada:s3:cret").resolved_auth() == ("ada", "s3:cret")
    monkeypatch.setenv(AUTH_ENV, "bob:pw")
    assert DashboardConfig(host="0.0.0.0").resolved_auth() == ("bob", "pw")
    for bad in ("nopassword", ":pw", "ada:"):
        with pytest.raises(ValueError, match="user:password"):
            DashboardConfig(auth=bad)


def test_a_login_is_required_and_uploads_are_capped(dash):
    from reasoning_dspy.dashboard.launch import start

    cfg = dash.cfg.model_copy(update={"port": 0, "auth": "ada:s3cret", "max_upload_mb": 1.0})
    running = start(cfg, dash)
    try:
        with httpx.Client(base_url=running.url, timeout=30) as client:
            assert client.get("/config").status_code == 401  # nothing without the login
            assert client.post("/login", data={"username": "ada", "password": "wrong"}).status_code == 400
            assert client.post("/login", data={"username": "ada", "password": "s3cret"}).status_code == 200
            assert client.get("/config").status_code == 200
            big = client.post("/gradio_api/upload", files={"files": ("big.bin", b"x" * 2_000_000)})
            small = client.post("/gradio_api/upload", files={"files": ("small.txt", b"hello")})
        assert big.status_code == 413 and small.status_code == 200
    finally:
        running.demo.close()  # the module's dashboard stays open for the other tests
