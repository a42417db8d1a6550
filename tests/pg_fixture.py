"""PostgreSQL fixtures (pytest plugin, registered by the root conftest).

* ``pg_server`` (session): the server named by ``DV_TEST_INDEX_URL`` (when it is a ``postgresql://`` URL) or
  ``DV_TEST_PG_URL``, default ``postgresql://postgres@127.0.0.1:5432/postgres``. If nothing answers there, a
  throwaway cluster is made from Debian's binaries (``initdb`` + ``pg_ctl``) in a temporary folder on a free port
  and removed at the end of the session. pytest-xdist workers each resolve their own.
* ``pg_url`` (function): a fresh database ``dv_<uuid>`` on it, dropped (``WITH (FORCE)``) after the test.
* ``own_pg_server`` (function): a throwaway cluster of the test's own, which the test may stop and restart
  (never the machine's shared server).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=2, autocommit=True) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


def _as_user(argv: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: drop to the ``postgres`` system user when we are root."""
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", "postgres", "--", *argv]


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError(f"no PostgreSQL server binaries ({name}) installed and no server answers")
    return found[-1]


@dataclass
class PgServer:
    """A PostgreSQL server the tests may create databases on; ``data_dir`` is set when we started it."""

    host: str
    port: int
    user: str = "postgres"
    data_dir: Path | None = None
    _log: Path | None = field(default=None, repr=False)
    _template: str | None = field(default=None, repr=False)

    @property
    def owned(self) -> bool:
        return self.data_dir is not None

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"

    def create_database(self, template: str | None = None) -> str:
        """A new database, empty or (``template``) a copy of that one."""
        name = f"dv_{uuid.uuid4().hex[:16]}"
        copy = f' TEMPLATE "{template}"' if template else ""
        with psycopg.connect(self.url(), autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"{copy}')
        return name

    def migrated_template(self) -> str:
        """A database at the newest index schema, made once per test process: copying it (``CREATE DATABASE …
        TEMPLATE``, ~0.3 s) is cheaper than running every Alembic migration for each test (~0.9 s, and growing with
        each migration). Nobody stays connected to it, which ``TEMPLATE`` requires."""
        if self._template is None:
            from dicomvault.adapters.index.engine import create_index_engine, migrate

            name = self.create_database()
            engine = create_index_engine(self.url(name), pool_size=1)
            try:
                migrate(engine)
            finally:
                engine.dispose()
            self._template = name
        return self._template

    def drop_database(self, name: str) -> None:
        try:
            with psycopg.connect(self.url(), autocommit=True, connect_timeout=5) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except psycopg.OperationalError:
            pass  # the server is gone (a fault test stopped it): nothing left to drop

    # -- throwaway clusters only --------------------------------------------------------------------------

    @classmethod
    def throwaway(cls) -> PgServer:
        base = Path(tempfile.mkdtemp(prefix="dv-pg-"))
        os.chmod(base, 0o755)
        data = base / "data"
        data.mkdir()
        if os.geteuid() == 0:
            shutil.chown(base, "postgres")
            shutil.chown(data, "postgres")
        subprocess.run(
            _as_user([_pg_bin("initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync",
                      "-E", "UTF8", "--locale=C"]),
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        server = cls("127.0.0.1", _free_port(), data_dir=data, _log=base / "server.log")
        server.start()
        return server

    def start(self) -> None:
        assert self.data_dir is not None and self._log is not None, "only a throwaway server can be started"
        opts = (f"-p {self.port} -k {self.data_dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        subprocess.run(
            _as_user([_pg_bin("pg_ctl"), "-D", str(self.data_dir), "-l", str(self._log), "-o", opts, "-w", "start"]),
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )

    def stop(self, mode: str = "fast") -> None:
        assert self.data_dir is not None, "never stop a server we did not start"
        subprocess.run(_as_user([_pg_bin("pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "stop"]),
                       check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def destroy(self) -> None:
        if self.data_dir is not None:
            self.stop("immediate")
            shutil.rmtree(self.data_dir.parent, ignore_errors=True)


def _configured_url() -> str:
    index_url = os.environ.get("DV_TEST_INDEX_URL", "")
    if index_url.startswith("postgres"):
        return index_url
    return os.environ.get("DV_TEST_PG_URL") or DEFAULT_URL


def _connect_or_start() -> PgServer:
    u = make_url(_configured_url())
    server = PgServer(u.host or "127.0.0.1", u.port or 5432, u.username or "postgres")
    if _answers(server.url()):
        return server
    return PgServer.throwaway()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    server = _connect_or_start()
    yield server
    if server._template is not None:
        server.drop_database(server._template)
    server.destroy()


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """A fresh database for one test, already at the newest index schema (tables empty):
    ``postgresql://…/dv_<uuid>``. Tests that need a database without tables use ``pg_server.create_database()``."""
    name = pg_server.create_database(template=pg_server.migrated_template())
    yield pg_server.url(name)
    pg_server.drop_database(name)


@pytest.fixture
def own_pg_server() -> Iterator[PgServer]:
    """A throwaway cluster the test may stop and start (fault tests); removed afterwards."""
    if not glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        pytest.skip("PostgreSQL server binaries are not installed")
    server = PgServer.throwaway()
    yield server
    server.destroy()


def wait_until(predicate: object, timeout: float = 30.0, interval: float = 0.1) -> bool:
    """Poll ``predicate()`` until it is truthy or ``timeout`` passes (tests waiting on other processes)."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


@pytest.fixture(params=["sqlite", "postgresql"])
def any_index_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Index URL for each dialect in turn (contract suites): SQLite in the test folder, a fresh PG database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'contract-index.sqlite'}"
    return str(request.getfixturevalue("pg_url"))
