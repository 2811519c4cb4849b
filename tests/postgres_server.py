"""A throwaway PostgreSQL server for tests: initdb + pg_ctl from Debian's `postgresql` package (which `make test`
installs) in a temporary directory, on a free loopback port, trust authentication, no Unix socket.

PostgreSQL refuses to run as root, so as root (CI, the dev containers) every server command runs as the
`postgres` user the Debian package creates, through runuser, in a directory that user owns."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import sqlalchemy as sa

SUPERUSER = "speechflow"


def find_bindir() -> Path | None:
    """The directory of initdb and pg_ctl: PATH, else the newest /usr/lib/postgresql/<version>/bin."""
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(on_path).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    return Path(versions[-1]).parent if versions else None


class PostgresServer:
    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="speechflow-pg-"))  # not pytest's tmp: `postgres` cannot enter it
        self.data = self.root / "data"
        self.port = _free_port()
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.root, user="postgres")
        self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8", "--no-sync")

    def start(self) -> None:
        # fsync off: a test server's data only has to survive a clean stop, which writes everything out
        options = f"-p {self.port} -h 127.0.0.1 -k '' -F"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-o", options, "-w", "start")

    def stop(self) -> None:
        """A fast shutdown: open sessions are cut off, as when a database server restarts under a running app."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        engine = sa.create_engine(self.url().replace("postgresql://", "postgresql+psycopg://"),
                                  isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        engine.dispose()
        return self.url(name)

    def close(self) -> None:
        subprocess.run(self._command("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop"),
                       capture_output=True, check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    def _command(self, tool: str, *args: str) -> list[str]:
        command = [str(self.bindir / tool), *args]
        return ["runuser", "-u", "postgres", "--", *command] if self._as_postgres else command

    def _run(self, tool: str, *args: str) -> None:
        result = subprocess.run(self._command(tool, *args), capture_output=True, text=True, timeout=60,
                                cwd=self.root)
        if result.returncode != 0:
            log = (self.root / "server.log").read_text() if (self.root / "server.log").is_file() else ""
            raise RuntimeError(f"{tool} failed ({result.returncode}): {result.stderr}{result.stdout}\n{log}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
