"""A real, throwaway PostgreSQL cluster that the tests start themselves.

`PgCluster` runs Debian's (or PATH's) `initdb`/`pg_ctl` on a temporary directory, listens on
127.0.0.1 at a free port with its unix socket inside that directory (so it never meets a system
cluster on 5432), and can be stopped and started again on the same port and data directory.
PostgreSQL refuses to run as root: when the tests run as root (CI does) every server command runs
as the `postgres` user and the temporary directory is handed to that user.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import asyncpg

SUPERUSER = "postgres"
DEBIAN_ROOT = Path("/usr/lib/postgresql")
BIN_ENV = "KEYGATE_PG_BIN"  # a directory holding initdb and pg_ctl, overriding the search

# Durability is worthless for a cluster that dies with the test session.
SPEED_SETTINGS = (
    "fsync=off",
    "synchronous_commit=off",
    "full_page_writes=off",
    "max_connections=200",
)


class PgUnavailable(RuntimeError):
    """No PostgreSQL server binaries on this machine, or no way to run them."""


@dataclass(frozen=True)
class PgBinaries:
    bin_dir: Path

    @property
    def initdb(self) -> Path:
        return self.bin_dir / "initdb"

    @property
    def pg_ctl(self) -> Path:
        return self.bin_dir / "pg_ctl"


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", path.name)) or (-1,)


def find_binaries() -> PgBinaries:
    """$KEYGATE_PG_BIN, else the highest /usr/lib/postgresql/<version>/bin, else initdb on PATH."""
    candidates: list[Path] = []
    if override := os.environ.get(BIN_ENV):
        candidates.append(Path(override))
    if DEBIAN_ROOT.is_dir():
        versions = sorted(DEBIAN_ROOT.iterdir(), key=_version_key, reverse=True)
        candidates.extend(version / "bin" for version in versions)
    if on_path := shutil.which("initdb"):
        candidates.append(Path(on_path).resolve().parent)
    for bin_dir in candidates:
        binaries = PgBinaries(bin_dir)
        if all(os.access(tool, os.X_OK) for tool in (binaries.initdb, binaries.pg_ctl)):
            return binaries
    raise PgUnavailable(
        "PostgreSQL server binaries (initdb, pg_ctl) not found under "
        f"{DEBIAN_ROOT}/*/bin, on PATH or in ${BIN_ENV}; install Debian's `postgresql` package"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _server_env() -> dict[str, str]:
    # PGDATA, PGPORT, PGHOST... from the caller's shell must not steer the tools.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    return env


def _as_server_user() -> list[str]:
    """The prefix that runs a command as a user PostgreSQL accepts: nothing unless we are root."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam(SUPERUSER)
    except KeyError:
        raise PgUnavailable(
            f"running as root and there is no {SUPERUSER!r} user to run PostgreSQL as"
        ) from None
    if setpriv := shutil.which("setpriv"):  # no PAM session, nothing to log
        return [setpriv, f"--reuid={SUPERUSER}", f"--regid={SUPERUSER}", "--init-groups", "--"]
    if runuser := shutil.which("runuser"):
        return [runuser, "-u", SUPERUSER, "--"]
    raise PgUnavailable("running as root and neither setpriv nor runuser is available")


def database_name(hint: str = "") -> str:
    """A fresh, valid, unquoted-safe database name, optionally carrying a readable hint."""
    slug = re.sub(r"[^a-z0-9_]+", "_", hint.lower()).strip("_")[:40]
    return f"t_{slug}_{uuid.uuid4().hex[:12]}" if slug else f"t_{uuid.uuid4().hex[:16]}"


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class PgCluster:
    """One PostgreSQL cluster in its own temporary directory.

    `start()` creates it on first use (initdb) and starts the server; `stop()` stops the server
    but keeps data, port and directory, so `start()` brings back the same cluster; `destroy()`
    stops it and removes the directory. Also a context manager (start ... destroy).
    """

    def __init__(self, binaries: PgBinaries | None = None, *, port: int | None = None) -> None:
        self.binaries = binaries if binaries is not None else find_binaries()
        self._as_user = _as_server_user()
        self.host = "127.0.0.1"
        self.port = port if port is not None else 0
        self._fixed_port = port is not None
        self.root: Path | None = None
        self.running = False
        self._atexit_registered = False

    # -- paths --------------------------------------------------------------------------------

    def _root(self) -> Path:
        if self.root is None:
            raise RuntimeError("cluster not created yet; call start()")
        return self.root

    @property
    def data_dir(self) -> Path:
        return self._root() / "data"

    @property
    def socket_dir(self) -> Path:
        return self._root()

    @property
    def log_file(self) -> Path:
        return self._root() / "postgres.log"

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{dbname}"

    # -- life cycle ---------------------------------------------------------------------------

    def _run(self, *args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [*self._as_user, *map(str, args)]
        proc = subprocess.run(
            cmd,
            check=False,  # checked below, with the output and the server log in the message
            cwd=self._root(),  # the server user may not be allowed into the caller's directory
            env=_server_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(
                f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout}{proc.stderr}"
                f"{self._log_tail()}"
            )
        return proc

    def _log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except (OSError, RuntimeError):
            return ""
        return "\n--- postgres.log (tail) ---\n" + "\n".join(text.splitlines()[-lines:])

    def _make_root(self) -> Path:
        # Short prefix: the socket path (root/.s.PGSQL.<port>) must fit in sun_path (107 bytes).
        root = Path(tempfile.mkdtemp(prefix="kg-pg-"))
        if self._as_user:
            entry = pwd.getpwnam(SUPERUSER)
            os.chown(root, entry.pw_uid, entry.pw_gid)
            probe = subprocess.run(
                [*self._as_user, "test", "-w", str(root)], check=False, env=_server_env()
            )
            if probe.returncode != 0:  # e.g. $TMPDIR under /root: use /tmp instead
                root.rmdir()
                root = Path(tempfile.mkdtemp(prefix="kg-pg-", dir="/tmp"))
                os.chown(root, entry.pw_uid, entry.pw_gid)
        return root

    def _initdb(self) -> None:
        self.root = self._make_root()
        self._run(
            self.binaries.initdb,
            "-D",
            self.data_dir,
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )

    def _server_options(self) -> str:
        settings = (
            *SPEED_SETTINGS,
            f"listen_addresses={self.host}",
            f"port={self.port}",
            f"unix_socket_directories={self.socket_dir}",
        )
        return " ".join(f"-c {setting}" for setting in settings)

    def start(self) -> None:
        """Create the cluster if needed and start its server; wait until it accepts connections."""
        if self.running:
            return
        if self.root is None:
            self._initdb()
        if not self._atexit_registered:  # a crashed session must not leave a postmaster behind
            atexit.register(self.destroy)
            self._atexit_registered = True
        attempts = 1 if self._fixed_port else 5
        for attempt in range(attempts):
            if not self._fixed_port:
                self.port = free_port()
            proc = self._run(
                self.binaries.pg_ctl,
                "start",
                "-w",
                "-t",
                "60",
                "-D",
                self.data_dir,
                "-l",
                self.log_file,
                "-o",
                self._server_options(),
                check=attempt == attempts - 1,
            )
            if proc.returncode == 0:
                break
        # Later starts reuse this port: a restarted server is the same server to its clients.
        self._fixed_port = True
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (keeping data and port). Falls back to an immediate shutdown."""
        if not self.running:
            return
        ctl = (self.binaries.pg_ctl, "stop", "-w", "-t", "30", "-D", self.data_dir)
        if self._run(*ctl, "-m", mode, check=False).returncode != 0:
            self._run(*ctl, "-m", "immediate")
        self.running = False

    def is_running(self) -> bool:
        """Whether the server is up, asked of pg_ctl rather than taken from our own bookkeeping."""
        if self.root is None:
            return False
        return (
            self._run(self.binaries.pg_ctl, "status", "-D", self.data_dir, check=False).returncode
            == 0
        )

    def destroy(self) -> None:
        """Stop the server and remove the cluster's directory. Safe to call twice."""
        if self.root is None:
            return
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None
            self.running = False
            if self._atexit_registered:
                atexit.unregister(self.destroy)
                self._atexit_registered = False

    def __enter__(self) -> PgCluster:
        try:
            self.start()
        except BaseException:
            self.destroy()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.destroy()

    # -- databases ----------------------------------------------------------------------------

    async def create_database(self, name: str | None = None) -> str:
        """Create a database (a fresh unique name unless given) and return its URL."""
        name = name if name is not None else database_name()
        conn = await asyncpg.connect(self.url("postgres"))
        try:
            await conn.execute(f"CREATE DATABASE {_quote_ident(name)}")
        finally:
            await conn.close()
        return self.url(name)

    async def drop_database(self, name: str) -> None:
        """Drop a database, disconnecting whoever is still connected to it."""
        conn = await asyncpg.connect(self.url("postgres"))
        try:
            if conn.get_server_version().major >= 13:
                await conn.execute(f"DROP DATABASE IF EXISTS {_quote_ident(name)} WITH (FORCE)")
            else:
                await conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = $1 AND pid <> pg_backend_pid()",
                    name,
                )
                await conn.execute(f"DROP DATABASE IF EXISTS {_quote_ident(name)}")
        finally:
            await conn.close()


@contextlib.contextmanager
def pg_cluster() -> Iterator[PgCluster]:
    """A started cluster, destroyed on exit."""
    with PgCluster() as cluster:
        yield cluster
