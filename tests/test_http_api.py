"""The HTTP API's answers to a missing file, values JSON has no type for, and oversized queries (in-process, ASGI)."""

from __future__ import annotations

import asyncio

import duckdb
import httpx
import orjson

from sinks.database import Database
from sinks.http import create_app
from streams.companies import CompanyNormalizer
from streams.settings import Settings
from streams.topics import Topics


def _client(db):
    app = create_app(Settings(db=db, max_body_bytes=4096), "127.0.0.1:9", Topics(), Database(db), CompanyNormalizer())
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api")


def test_reads_before_the_sink_made_the_file_are_503(tmp_path):
    async def calls():
        async with _client(tmp_path / "none.duckdb") as client:
            return [await client.get(path) for path in ("/v1/alerts", "/v1/dashboard/summary",
                                                         "/v1/companies/openai/history")]

    for response in asyncio.run(calls()):
        assert response.status_code == 503, (response.request.url, response.text)
        assert "no DuckDB file" in response.json()["detail"]


def test_query_results_json_cannot_type_and_the_body_cap(tmp_path):
    db = tmp_path / "q.duckdb"
    duckdb.connect(str(db)).close()

    async def calls():
        async with _client(db) as client:
            sql = ("SELECT 18446744073709551616::HUGEINT AS big, MAP([1, 2], ['a', 'b']) AS m,"
                   " TIMETZ '12:00:00+02' AS t, 1 AS one")
            ok = await client.post("/v1/query", json={"sql": sql})
            bad = await client.post("/v1/query", json={"sql": 5})
            huge = await client.post("/v1/query", content=orjson.dumps({"sql": "SELECT 1 -- " + "x" * 5000}))
            return ok, bad, huge

    ok, bad, huge = asyncio.run(calls())
    assert ok.status_code == 200, ok.text
    body = ok.json()
    assert body["columns"] == ["big", "m", "t", "one"]
    assert body["rows"] == [[18446744073709551616, {"1": "a", "2": "b"}, "12:00:00+02:00", 1]]
    assert bad.status_code == 422
    assert huge.status_code == 413
