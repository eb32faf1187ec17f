"""The DuckDB file shared by the sink's writes, the HTTP server's kept reader and plain readers in one process."""

from __future__ import annotations

from sinks.database import Database


def test_a_plain_reader_beside_the_kept_sandboxed_one(tmp_path):
    """The kept reader locks its database's settings; a plain reader or a writer opened after it still works."""
    db = Database(tmp_path / "x.duckdb")
    db.reuse_reader = True
    db.create()
    with db.reader() as con:
        assert con.execute("SELECT count(*) FROM events").fetchone() == (0,)
    with db.reader(sandboxed=False) as con:
        assert con.execute("SELECT current_setting('TimeZone')").fetchone() == ("UTC",)
    with db.writer() as con:
        con.execute("CREATE TABLE t AS SELECT 1 AS x")
    with db.reader() as con:
        assert con.execute("SELECT x FROM t").fetchone() == (1,)
    db.close()


def test_a_kept_writer_is_reused_and_gives_way_to_a_reader(tmp_path):
    """``writer(keep=True)`` leaves the connection open for the next write (closing would checkpoint); a reader
    in this process closes it first, and what it committed is there."""
    db = Database(tmp_path / "x.duckdb")
    db.create()
    with db.writer(keep=True) as first:
        first.execute("CREATE TABLE t AS SELECT 1 AS x")
    assert db.holding
    with db.writer(keep=True) as second:
        assert second is first
        second.execute("INSERT INTO t VALUES (2)")
    with db.reader() as con:
        assert not db.holding
        assert con.execute("SELECT sum(x) FROM t").fetchone() == (3,)
    with db.writer() as con:  # not kept: closed after the write
        con.execute("INSERT INTO t VALUES (3)")
    assert not db.holding


def test_what_a_kept_writer_committed_survives_a_process_that_dies_without_closing(tmp_path):
    """A sink keeping the file open is killed: its commits are in DuckDB's write-ahead log, replayed on open."""
    import subprocess
    import sys

    path = tmp_path / "x.duckdb"
    script = (
        "import os, sys\n"
        "from sinks.database import Database\n"
        "db = Database(sys.argv[1]); db.create()\n"
        "with db.writer(keep=True) as con:\n"
        "    con.execute('CREATE TABLE t AS SELECT range AS x FROM range(1000)')\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", script, str(path)], check=True, timeout=60)
    assert path.with_name("x.duckdb.wal").exists()
    with Database(path).reader() as con:
        assert con.execute("SELECT count(*), sum(x) FROM t").fetchone() == (1000, 499500)


def test_each_write_lets_go_of_the_file_checkpointed_for_another_process(tmp_path):
    """A write that is not kept lets go of the file at its end, checkpointed (no write-ahead log left):
    another process opens it read-only and sees it. The writes share one in-memory DuckDB the file is
    attached to (starting one per write cost ~30 ms of CPU)."""
    import subprocess
    import sys

    path = tmp_path / "x.duckdb"
    db = Database(path)
    db.create()
    read = ("import duckdb, sys\n"
            "print(duckdb.connect(sys.argv[1], read_only=True).execute('SELECT sum(x) FROM t').fetchone()[0])\n")
    seen = []
    for i in (1, 2):
        with db.writer() as con:
            con.execute("CREATE TABLE IF NOT EXISTS t (x INTEGER)")
            con.execute("INSERT INTO t VALUES (?)", [i])
            host = con
        assert not db.holding and not path.with_name("x.duckdb.wal").exists()
        out = subprocess.run([sys.executable, "-c", read, str(path)], capture_output=True, text=True, timeout=60)
        seen.append((out.stdout.strip(), host))
    assert [s for s, _ in seen] == ["1", "3"]
    assert seen[0][1] is seen[1][1]


def test_a_failed_write_leaves_nothing_behind(tmp_path):
    """A write that raises is rolled back and lets go of the file; names it bound do not outlive it."""
    import duckdb
    import pyarrow as pa
    import pytest

    db = Database(tmp_path / "x.duckdb")
    db.create()
    with pytest.raises(duckdb.Error):
        with db.writer() as con:
            con.execute("CREATE TABLE t (x INTEGER PRIMARY KEY)")
            con.execute("BEGIN TRANSACTION")
            con.execute("INSERT INTO t VALUES (1)")
            con.register("incoming", pa.table({"x": [1]}))
            con.execute("INSERT INTO t SELECT x FROM incoming")  # the key again
    assert not db.holding
    with db.writer() as con:
        assert con.execute("SELECT count(*) FROM t").fetchone() == (0,)
        with pytest.raises(duckdb.CatalogException):
            con.execute("SELECT * FROM incoming")
