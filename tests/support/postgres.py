"""A private PostgreSQL server for the test session: `initdb` and `pg_ctl` under a temporary
folder, one server for every test, each test its own database on it.

PostgreSQL refuses to run as root, and the tests run as root here: the server then runs as
`nobody` (`runuser`), its folder that user's. It listens on a Unix socket in its folder (no
password: trust) and on a loopback port (a password asked: scram), so the tests of how a
password is given have a server that asks for one. Debian's postgresql package puts the tools
in /usr/lib/postgresql/VERSION/bin; CI installs it (.ci/run).
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.support.optional import missing

USER = "nobody"  # the system user the server runs as when the tests run as root
ROLE = "lossreport"  # the server's superuser, the tests' database user
PASSWORD = "tests-only-Ωpassword"  # asked on the loopback port only
START_TIMEOUT_S = 60


def tools_found() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return candidates[-1].parent if candidates else None


@dataclass
class PostgresServer:
    folder: Path
    bin: Path
    port: int
    _names = itertools.count()

    @property
    def data(self) -> Path:
        return self.folder / "data"

    def url(self, database: str = "postgres") -> str:
        """A URL reaching `database` over the Unix socket (no password needed)."""
        folder = quote(str(self.folder), safe="")
        return f"postgresql://{ROLE}@/{database}?host={folder}&port={self.port}"

    def tcp_url(self, database: str = "postgres") -> str:
        """A URL reaching `database` over the loopback port, where a password is asked."""
        return f"postgresql://{ROLE}@127.0.0.1:{self.port}/{database}"

    def _as_owner(self, *command: str | Path) -> list[str]:
        words = [str(word) for word in command]
        return ["runuser", "-u", USER, "--", *words] if os.geteuid() == 0 else words

    def _ctl(self, *arguments: str) -> None:
        subprocess.run(
            self._as_owner(self.bin / "pg_ctl", "-D", self.data, *arguments),
            check=True,
            capture_output=True,
            timeout=START_TIMEOUT_S + 10,
        )

    def start(self, *settings: str) -> None:
        """Start the server; `settings`: more `name=value` for it (a benchmark's memory)."""
        options = f"-k {self.folder} -c listen_addresses=127.0.0.1 -p {self.port} -c fsync=off"
        options += "".join(f" -c {setting}" for setting in settings)
        log = self.folder / "server.log"
        self._ctl("-l", str(log), "-o", options, "-w", "-t", str(START_TIMEOUT_S), "start")

    def stop(self) -> None:
        self._ctl("-m", "fast", "-w", "stop")

    def psql(self, sql: str, database: str = "postgres") -> str:
        return subprocess.run(
            [
                self.bin / "psql",
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-At",
                "-c",
                sql,
                self.url(database),
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout

    def new_database(self) -> str:
        """A fresh, empty database; its name."""
        name = f"test_{os.getpid()}_{next(self._names)}"
        self.psql(f"CREATE DATABASE {name}")
        return name


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        missing("psycopg", "pip install 'lossreport[postgresql]'")
    tools = tools_found()
    if tools is None or (os.geteuid() == 0 and shutil.which("runuser") is None):
        missing("PostgreSQL", "apt-get install postgresql")
    assert tools is not None
    folder = Path(tempfile.mkdtemp(prefix="lossreport-pg-"))
    try:
        server = new_cluster(folder, tools)
        server.start()
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def new_cluster(folder: Path, tools: Path, port: int | None = None) -> PostgresServer:
    """A cluster made with `initdb` in `folder` (empty, or made now), not started: the
    tests' server, or a benchmark's kept between runs."""
    folder.mkdir(parents=True, exist_ok=True)
    server = PostgresServer(folder, tools, port or free_port())
    if os.geteuid() == 0:
        shutil.chown(folder, USER)
    os.chmod(folder, 0o700)
    password = folder / "password"
    password.write_text(PASSWORD)
    if os.geteuid() == 0:
        shutil.chown(password, USER)
    subprocess.run(
        server._as_owner(
            tools / "initdb",
            "-D",
            server.data,
            "-U",
            ROLE,
            "--pwfile",
            password,
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        ),
        check=True,
        capture_output=True,
        timeout=120,
    )
    password.unlink()
    return server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """The URL of a fresh database on the session's server."""
    return postgres_server.url(postgres_server.new_database())
