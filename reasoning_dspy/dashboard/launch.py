"""Serving the dashboard: `start(cfg)` loads everything and serves the Gradio app on `cfg.host` (127.0.0.1
by default) in this process; the CLI then waits on it until Ctrl-C."""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass
from typing import Any

from reasoning_dspy.dashboard.app import CSS, THEME, build
from reasoning_dspy.dashboard.config import DashboardConfig
from reasoning_dspy.dashboard.session import Dashboard
from reasoning_dspy.dashboard.workspace import DashboardError

logger = logging.getLogger(__name__)


@dataclass
class Running:
    """A dashboard serving in this process (`start`); `close()` stops it and its engine."""

    dashboard: Dashboard
    demo: Any  # gr.Blocks
    url: str

    def close(self) -> None:
        self.demo.close()
        self.dashboard.close()


def _port(host: str, port: int) -> int:
    if port:
        return port
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class _ConsoleProgress:
    """Start-up progress on stderr (corpus extraction on a model's first start takes a while)."""

    def __init__(self) -> None:
        self.bar: Any = None
        self.desc = ""

    def __call__(self, frac: float, message: str) -> None:
        from tqdm.auto import tqdm

        stage = message.split(":")[0]
        if self.bar is None or stage != self.desc:
            self.close()
            self.bar, self.desc = tqdm(total=100, desc=stage, unit="%", leave=False), stage
        self.bar.update(max(0, int(frac * 100) - self.bar.n))
        if frac >= 1.0:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar, self.desc = None, ""


def start(cfg: DashboardConfig, dash: Dashboard | None = None) -> Running:
    """Load (unless `dash` is given) and serve the dashboard at http://host:port in this process
    (`Running.close()` stops it; `Running.demo.block_thread()` waits for Ctrl-C)."""
    if (warning := cfg.exposure_warning()) is not None:
        logger.warning(warning)
    if dash is None:
        dash = Dashboard.create(cfg, progress=_ConsoleProgress())
    demo = build(dash)
    demo.queue(default_concurrency_limit=4)
    port = _port(cfg.host, cfg.port)
    try:
        demo.launch(server_name=cfg.host, server_port=port, prevent_thread_lock=True, share=False, inbrowser=False,
                    show_error=False, quiet=True, ssr_mode=False, mcp_server=False, theme=THEME, css=CSS,
                    footer_links=[], auth=cfg.resolved_auth(), max_file_size=f"{cfg.max_upload_mb:g}mb")
    except OSError as err:
        dash.close()
        raise DashboardError(f"cannot serve on {cfg.host}:{port} ({err}); pick another --port") from None
    return Running(dash, demo, f"http://{cfg.host}:{port}")
