"""A real PostgreSQL server from Debian's packages, in a temporary directory, on 127.0.0.1.

For the outbox relay's tests, demo and benchmark, like `localkafka` for Kafka: `initdb` and
`pg_ctl` in a directory of its own, TCP on loopback only, no Unix socket. PostgreSQL refuses
to run as root: as root, the server runs as the `postgres` user the Debian package creates.
Standard library only.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from localkafka.procs import HOST, free_port, pid_alive

DATABASE = "outbox"
# The WAL writer's longest delay and no autovacuum (whose commits flush the WAL too): a crash
# then loses what was not flushed by a commit (the ends of rolled-back transactions), the case
# that makes PostgreSQL hand out their transaction ids again.
CRASH_PRONE = {"wal_writer_delay": "10s", "autovacuum": "off"}


class PostgresError(RuntimeError):
    """The local PostgreSQL could not be set up, started or stopped."""


def bin_dir() -> Path:
    """The newest Debian PostgreSQL's programs (`LOCALPG_BIN` to choose another)."""
    if os.environ.get("LOCALPG_BIN"):
        return Path(os.environ["LOCALPG_BIN"])
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name))
    if not found:
        raise PostgresError("no PostgreSQL server found (/usr/lib/postgresql/*/bin): "
                            "apt-get install postgresql")
    return Path(found[-1]).parent


class LocalPostgres:
    """`start()` creates the cluster on first use and returns its DSN; `stop()`, `kill()`
    (the postmaster with SIGKILL, as a crash) and `start()` again reuse it; `remove()`
    deletes it."""

    def __init__(self, settings: dict[str, str] | None = None):
        self.dir = Path(tempfile.mkdtemp(prefix="localpg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self.port = free_port()
        self.settings = settings or {}
        self.user = "postgres" if os.geteuid() == 0 else None
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "--encoding=UTF8", "--no-instructions")
        conf = {"listen_addresses": f"'{HOST}'", "port": str(self.port),
                "unix_socket_directories": "''", **self.settings}
        with (self.data / "postgresql.conf").open("a") as f:
            f.writelines(f"{name} = {value}\n" for name, value in conf.items())

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@{HOST}:{self.port}/{DATABASE}"

    def _run(self, program: str, *args: str, timeout: float = 120) -> str:
        done = subprocess.run([str(bin_dir() / program), *args], capture_output=True, text=True,
                              user=self.user, timeout=timeout, cwd=self.dir, check=False)
        if done.returncode != 0:
            raise PostgresError(f"{program} failed: {done.stderr.strip() or done.stdout.strip()}")
        return done.stdout

    def start(self, timeout: float = 60) -> str:
        """After a kill, the server's children take a moment to notice and exit; until they
        do, a new postmaster refuses the old shared memory: ask again until `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t",
                          str(int(timeout)), "start", timeout=timeout + 10)
                break
            except PostgresError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        if not self._has_database():
            self._run("createdb", "-h", HOST, "-p", str(self.port), "-U", "postgres", DATABASE)
        return self.dsn

    def _has_database(self) -> bool:
        listed = self._run("psql", "-h", HOST, "-p", str(self.port), "-U", "postgres", "-Atc",
                           f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'")
        return listed.strip() == "1"

    def stop(self, mode: str = "fast") -> None:
        """`mode` as pg_ctl's: fast (clean), immediate (no checkpoint: recovery at start)."""
        if self.running():
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def kill(self) -> None:
        pid = self.pid()
        if pid:
            os.kill(pid, signal.SIGKILL)

    def pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def running(self) -> bool:
        pid = self.pid()
        return pid is not None and pid_alive(pid)

    def remove(self) -> None:
        try:
            self.stop("immediate")
        except PostgresError:
            self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)
