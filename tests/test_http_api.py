"""The HTTP API's answers to a missing file, values JSON has no type for, oversized queries (in-process, ASGI), and
lines too long for a Kafka record (with a real broker)."""

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


def test_a_posted_line_too_long_for_kafka_goes_to_the_ingest_topic_cut_with_its_length(tmp_path, broker):
    """With a body cap above RAW_LIMIT, a malformed body or an invalid NDJSON line over it is sent on cut
    short, with its length (its dead letter says how long it was), not refused by the Kafka client."""
    from streams.events import RAW_LIMIT
    from streams.admin import ensure_topics
    from streams.topics import CUT, ORIGIN
    from tests.conftest import read_topic

    topics = Topics("posted", 1)
    ensure_topics(broker.bootstrap, topics)
    db = tmp_path / "p.duckdb"
    app = create_app(Settings(db=db, max_body_bytes=4 * 1024 * 1024), broker.bootstrap, topics, Database(db),
                     CompanyNormalizer())
    body = b"{" + b"x" * 2_000_000  # not JSON
    line = b'{"kind": "hiring", "note": "' + b"y" * 1_500_000 + b'"}'  # JSON, but over 64 KiB
    valid = orjson.dumps({"kind": "hiring", "company": "Fictional Co", "occurred_at": "2024-01-01"})

    async def calls():
        async with app.router.lifespan_context(app):  # the server's ingest producer, as uvicorn starts it
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client:
                return (await client.post("/v1/events", content=body, headers={"content-type": "application/json"}),
                        await client.post("/v1/events", content=valid + b"\n" + line,
                                          headers={"content-type": "application/x-ndjson"}))

    malformed, mixed = asyncio.run(calls())
    assert malformed.status_code == 400, malformed.text
    assert mixed.status_code == 422 and mixed.json()["accepted"] == 1, mixed.text
    records = {dict(r.headers)[ORIGIN]: r for r in read_topic(broker.bootstrap, topics.ingest)}
    assert records[b"http"].value == body[:RAW_LIMIT] and dict(records[b"http"].headers)[CUT] == b"2000001"
    assert records[b"http:1"].value == line[:RAW_LIMIT] and dict(records[b"http:1"].headers)[CUT] == str(len(line)).encode()
    assert CUT not in dict(records[b"http:0"].headers)
