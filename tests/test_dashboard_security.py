"""The dashboard is open to whoever reaches its port: its SAE box loads only allowed folders and says
nothing about others, a switch never closes an engine a request still uses, a login can be required,
uploads are capped, and listening beyond loopback without a login is warned about."""

from __future__ import annotations

import threading
from pathlib import Path

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


def test_the_cli_flags_are_the_config_fields():
    import inspect

    from reasoning_dspy.cli.services import dashboard

    params = inspect.signature(dashboard).parameters
    assert set(params) == set(DashboardConfig.model_fields)
    for name, field in DashboardConfig.model_fields.items():
        assert params[name].default.default == field.default, name


@pytest.fixture
def cli_configs(monkeypatch):
    """Run `reasoning-dspy dashboard` up to the point it would load the model: the configs it built."""
    from reasoning_dspy.dashboard import launch

    built: list[DashboardConfig] = []

    def start(cfg: DashboardConfig, dash=None):
        built.append(cfg)
        raise DashboardError("stopped before loading anything")

    monkeypatch.setattr(launch, "start", start)
    monkeypatch.delenv(AUTH_ENV, raising=False)
    return built


def _dashboard_cli(*args: str):
    from typer.testing import CliRunner

    from reasoning_dspy.cli import app

    return CliRunner(env={"COLUMNS": "200"}).invoke(app, ["dashboard", "--model", "tiny-random", *args])


def test_login_sae_roots_and_upload_cap_flags_reach_the_config(cli_configs, tmp_path):
    first, second = tmp_path / "saes", tmp_path / "more saes"
    first.mkdir()
    second.mkdir()
    result = _dashboard_cli("--auth", "ada:s3cret", "--sae-roots", str(first), "--sae-roots", str(second),
                            "--max-upload-mb", "12.5")
    assert result.exit_code == 2 and "stopped before loading anything" in result.output
    (cfg,) = cli_configs
    assert cfg.resolved_auth() == ("ada", "s3cret")
    assert cfg.resolved_sae_roots() == [first.resolve(), second.resolve()]
    assert cfg.max_upload_mb == 12.5
    result = _dashboard_cli()  # without the flags: no login, the working directory, 5 MB
    defaults = cli_configs[-1]
    assert defaults.resolved_auth() is None and defaults.max_upload_mb == 5.0
    assert defaults.resolved_sae_roots() == [Path.cwd().resolve()]
    help_text = " ".join(_dashboard_cli("--help").output.split())
    for flag in ("--auth", "--sae-roots", "--max-upload-mb"):
        assert flag in help_text
    assert "$REASONING_DSPY_DASHBOARD_AUTH" in help_text and "repeatable" in help_text


@pytest.mark.parametrize(("args", "message"), [
    (["--auth", "nopassword"], "auth must be 'user:password' with both parts"),
    (["--auth", "ada:"], "auth must be 'user:password' with both parts"),
    (["--max-upload-mb", "0"], "max_upload_mb: Input should be greater than 0"),
    (["--max-upload-mb", "-3"], "max_upload_mb: Input should be greater than 0"),
    (["--max-upload-mb", "5000"], "max_upload_mb: Input should be less than or equal to 1024"),
    (["--max-upload-mb", "inf"], "max_upload_mb: Input should be a finite number"),
    (["--max-upload-mb", "nan"], "max_upload_mb: Input should be a finite number"),
    (["--max-upload-mb", "lots"], "Invalid value for '--max-upload-mb'"),
    (["--sae-roots", "no/such/folder"], "sae_roots: 'no/such/folder' is not an existing folder"),
])
def test_bad_dashboard_flags_are_refused_before_loading(cli_configs, args, message):
    result = _dashboard_cli(*args)
    assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
    assert "Traceback" not in result.output and not cli_configs
    assert "nopassword" not in result.output  # a login's text is never echoed


def test_an_sae_root_that_is_a_file_is_refused(cli_configs, tmp_path):
    (tmp_path / "sae.txt").write_text("not a folder")
    result = _dashboard_cli("--sae-roots", str(tmp_path / "sae.txt"))
    assert result.exit_code == 2 and "is not an existing folder" in result.output and not cli_configs
