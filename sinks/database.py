"""Access to the DuckDB file, shared fairly between the sink's writes and everyone's reads.

DuckDB allows one writing process per file, or any number of read-only ones. The sink therefore
holds the file only while it flushes a batch (a sink catching up may keep it for a few flushes, a
few seconds at most): between holds a stock DuckDB client in another process can open it read-only
and see data no older than one flush. Inside one process a lock serialises the writer and readers
(DuckDB refuses two connections with different settings there).
Both sides retry for a while when the other process holds the file.

Writes attach the file to one in-memory DuckDB kept for the life of the object, and detach it after
(detaching checkpoints and lets go of the file, as closing does): starting a DuckDB costs ~30 ms of
CPU, attaching a file ~3 ms, and a live sink writes twice a second.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import Iterator

import duckdb

from sinks.schema import all_ddl, missing_columns_sql


_FILE = "aisignals_file"  # the attached file's name in the writing DuckDB


class SinkError(RuntimeError):
    """The DuckDB file cannot be opened or written."""


def _locked(exc: Exception) -> bool:
    text = str(exc).lower()
    return "lock" in text or "conflicting" in text or "different configuration" in text


class Database:
    """One DuckDB file: short-lived writer connections, read-only reader connections, with retries."""

    def __init__(self, path: Path, wait_seconds: float = 30.0, reuse_reader: bool = False,
                 row_group_rows: int | None = None) -> None:
        self.path = Path(path)
        self.wait_seconds = wait_seconds
        self.row_group_rows = row_group_rows  # of the rows writes add; None: DuckDB's default
        self.lock = threading.RLock()
        # with the only writer in this process (``up``), one sandboxed reader connection serves every read
        # between two writes (opening one costs more than most queries); each write closes it first
        self.reuse_reader = reuse_reader
        self._reader: duckdb.DuckDBPyConnection | None = None
        self._host: duckdb.DuckDBPyConnection | None = None  # the in-memory DuckDB writes attach the file to
        self._attached = False  # the file is attached to it: a write under way, or kept by ``writer(keep=True)``

    def _connect(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        con = self._retrying(lambda: duckdb.connect(str(self.path), read_only=read_only))
        con.execute("SET TimeZone = 'UTC'")
        return con

    def _retrying(self, open_file):
        """``open_file()``, again while another process holds the file (up to ``wait_seconds``)."""
        deadline = time.monotonic() + self.wait_seconds
        delay = 0.005
        while True:
            try:
                return open_file()
            except (duckdb.Error, OSError) as exc:
                if _locked(exc) and time.monotonic() < deadline:
                    time.sleep(delay)
                    delay = min(delay * 2, 0.1)
                    continue
                if _locked(exc):
                    raise SinkError(f"DuckDB file {self.path} stayed locked by another process for {self.wait_seconds:.0f} s") from None
                raise SinkError(f"cannot open DuckDB file {self.path}: {str(exc).splitlines()[0]}") from None

    def _attach(self) -> None:
        """The file attached for writing, and made the default database, on the kept in-memory DuckDB."""
        host = self._host
        if host is None:
            host = self._host = duckdb.connect()
            host.execute("SET TimeZone = 'UTC'")
        path = str(self.path).replace("'", "''")
        options = f" (ROW_GROUP_SIZE {self.row_group_rows})" if self.row_group_rows else ""
        self._retrying(lambda: host.execute(f"ATTACH '{path}' AS {_FILE}{options}"))
        self._attached = True
        host.execute(f"USE {_FILE}")

    def _detach(self) -> None:
        """Checkpoint and let go of the file. If that fails, the in-memory DuckDB is dropped with it."""
        self._attached = False
        host = self._host
        try:
            host.execute("USE memory")
            host.execute(f"DETACH {_FILE}")
        except BaseException:
            self._drop_host()
            raise

    def _drop_host(self) -> None:
        """Close the in-memory DuckDB (and so the file, if attached): after a failed write, whatever the
        transaction left behind (names still bound, an aborted transaction) goes with it."""
        self._attached = False
        host, self._host = self._host, None
        if host is not None:
            host.close()

    def create(self) -> None:
        """Create the file and every table (idempotent)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.writer() as con:
            for ddl in all_ddl():
                con.execute(ddl)
            for sql in missing_columns_sql(con):  # a file written by an earlier revision
                con.execute(sql)

    def close(self) -> None:
        """Close the kept reader, and let go of a kept writer's file (which checkpoints), if any."""
        with self.lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
            if self._attached:
                self._detach()

    @property
    def holding(self) -> bool:
        """A write kept the file open."""
        return self._attached

    @contextlib.contextmanager
    def writer(self, keep: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection that may write. ``keep``: leave the file attached for the next write instead of
        letting go of it (DuckDB checkpoints then); any reader in this process, or ``close``, lets go of it."""
        with self.lock:
            if not self._attached:
                self.close()
                self._attach()
            try:
                yield self._host
            except BaseException:
                self._drop_host()
                raise
            if not keep:
                self._detach()

    @contextlib.contextmanager
    def reader(self, sandboxed: bool = True) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-only connection; sandboxed = no files, no network, no extensions, settings locked."""
        if not self.path.exists():
            raise SinkError(f"no DuckDB file at {self.path}")
        with self.lock:
            if sandboxed and self.reuse_reader:
                if self._reader is None:
                    self.close()  # a kept writer: the file's readers come first
                    self._reader = self._sandbox(self._connect(read_only=True))
                try:
                    yield self._reader
                except (duckdb.InterruptException, duckdb.FatalException):
                    self.close()  # a fresh connection for the next read
                    raise
                return
            self.close()  # the kept reader's database has its settings locked: a connection beside it could not set any
            con = self._connect(read_only=True)
            try:
                yield self._sandbox(con) if sandboxed else con
            finally:
                con.close()

    @staticmethod
    def _sandbox(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
        con.execute("SET memory_limit = '1GB'")
        con.execute("SET max_temp_directory_size = '0KiB'")
        con.execute("SET enable_external_access = false")
        con.execute("SET autoinstall_known_extensions = false")
        con.execute("SET autoload_known_extensions = false")
        con.execute("SET lock_configuration = true")
        return con
