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
