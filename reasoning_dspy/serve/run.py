"""Serving the app: `serve(config)` (the CLI, blocking) and `ServerThread` (in process, for tests,
benchmarks and notebooks: `with ServerThread(create_app(cfg)) as server: server.url`)."""

from __future__ import annotations

import threading
import time
from typing import Any

from reasoning_dspy.serve.config import ServeConfig


def serve(config: ServeConfig) -> None:
    """Load the model and serve it until interrupted (JSON logs on stderr)."""
    import logging.config

    import uvicorn

    from reasoning_dspy.serve.app import create_app
    from reasoning_dspy.serve.logs import uvicorn_log_config

    log_config = uvicorn_log_config(config.log_level)
    logging.config.dictConfig(log_config)  # model loading logs JSON too
    app = create_app(config)
    uvicorn.run(app, host=config.host, port=config.port, log_config=log_config, access_log=False,
                log_level=config.log_level.lower())


class ServerThread:
    """Run an ASGI app with uvicorn on a background thread (loopback, a free port by default)."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, *, startup_timeout_s: float = 60.0):
        import uvicorn

        self.app = app
        self.host = host
        self.config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False,
                                     lifespan="on", timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(self.config)
        self.startup_timeout_s = startup_timeout_s
        self._thread: threading.Thread | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        """`http://host:port` (the OpenAI base URL is `url + "/v1"`)."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> ServerThread:
        self._thread = threading.Thread(target=self.server.run, name="reasoning-dspy-serve", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + self.startup_timeout_s
        while not self.server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the server thread stopped during start-up (port taken? see the log)")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server did not start within {self.startup_timeout_s:g} s")
            time.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=30)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
