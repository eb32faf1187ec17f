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
