"""The HTTP interface: event ingest, alerts (list and Server-Sent Events), read-only SQL, health and metrics.

Thin on purpose: validation is ``streams.events``, storage is DuckDB through ``sinks.database``,
the alert stream is the alerts topic itself, read by one consumer per process and broadcast to every
connection (``sinks.alert_stream``; ``Last-Event-ID`` — the per-partition positions after the last
message — resumes exactly).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import time
from importlib import resources
from typing import Any, AsyncIterator, Awaitable, Callable

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field, ValidationError
from sse_starlette.sse import AppStatus

from sinks.alert_stream import AlertBroadcaster, AlertStreamResponse, StreamFull, StreamNotReady, parse_positions, register_metrics
from sinks.database import Database, SinkError
from sinks.query import QueryError, run_sql, to_csv
from streams.companies import CompanyNormalizer
from streams.events import InvalidEvent, array_items, parse_event, to_wire
from streams.producer import cut_to_limit
from streams.settings import Settings
from streams.topics import MAX_REQUEST_BYTES, ORIGIN, SENT, Topics

INGEST_TIMEOUT = 10.0  # seconds for the broker to acknowledge a POST /v1/events
STREAM_READY_TIMEOUT = 10.0  # seconds a new alert stream waits for the broadcast to catch up
READ_YOUR_ALERT_TIMEOUT = 5.0  # seconds GET /v1/alerts waits for the sink to write what the stream delivered
DASHBOARD = resources.files("sinks").joinpath("static", "dashboard.html")  # package data


class RateLimiter:
    """A token bucket per client address: refills ``rate`` tokens a second up to ``burst``."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self.buckets: dict[str, tuple[float, float]] = {}

    def allow(self, client: str) -> bool:
        now = time.monotonic()
        tokens, last = self.buckets.get(client, (float(self.burst), now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < 1:
            self.buckets[client] = (tokens, now)
            return False
        self.buckets[client] = (tokens - 1, now)
        if len(self.buckets) > 10_000:  # forget idle clients
            self.buckets = {k: v for k, v in self.buckets.items() if now - v[1] < 60}
        return True


class QueryRequest(BaseModel):
    sql: str = Field(description="one read-only SELECT statement")
    format: str = Field(default="json", pattern="^(json|csv)$")
    max_rows: int | None = Field(default=None, ge=1)


def split_body(body: bytes, content_type: str) -> list[bytes]:
    """One event, a JSON array of events, or NDJSON → raw items (each validated on its own)."""
    text = body.strip()
    if not text:
        raise HTTPException(400, "empty body")
    if "ndjson" in content_type or "jsonl" in content_type:
        return [line for line in text.splitlines() if line.strip()]
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        if b"\n" in text:  # NDJSON without the content type
            return [line for line in text.splitlines() if line.strip()]
        raise HTTPException(400, f"malformed JSON: {str(exc).splitlines()[0][:200]}") from None
    if isinstance(parsed, list):
        return array_items(text, parsed)
    return [text]


def json_bytes(value) -> bytes:
    """JSON of query results: orjson, and for what it cannot encode (integers beyond 64 bits, maps with
    non-string keys, times with a zone) the standard encoder, with anything else as text."""
    try:
        return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS)
    except orjson.JSONEncodeError:
        return json.dumps(value, default=str).encode()


def create_app(settings: Settings, bootstrap: str, topics: Topics, database: Database, companies: CompanyNormalizer,
               ready: Callable[[], tuple[bool, dict]] | None = None, client_kwargs: dict | None = None,
               alerts_written: Callable[[dict[int, int], float], Awaitable[bool]] | None = None) -> FastAPI:
    """The API. ``alerts_written(positions, timeout)``, when the sink runs in this process, waits until it has
    committed the alerts topic up to ``positions``: what the stream delivered, ``GET /v1/alerts`` then lists."""
    state: dict[str, Any] = {}
    broadcaster = AlertBroadcaster(bootstrap, topics, client_kwargs, buffer=settings.sse_buffer,
                                   max_connections=settings.sse_max_connections,
                                   max_per_client=settings.sse_max_per_client)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        """The ingest producer and the alert broadcaster live as long as the server."""
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, client_id="aisignals-http", linger_ms=2,
                                    max_request_size=MAX_REQUEST_BYTES, **(client_kwargs or {}))
        await producer.start()
        state["producer"] = producer
        try:
            # a signal caught by uvicorn ends every stream cleanly, so that the server can finish its shutdown
            await broadcaster.start(should_exit=lambda: AppStatus.should_exit)
            yield
        finally:
            await broadcaster.stop()
            await state.pop("producer").stop()

    app = FastAPI(title="ai-signals", version="0.1.0", lifespan=lifespan,
                  description="Push AI-industry events, subscribe to alerts, query DuckDB.")
    app.state.broadcaster = broadcaster
    register_metrics(broadcaster)

    @app.exception_handler(SinkError)
    async def _no_database(request: Request, exc: SinkError):
        """No DuckDB file yet (a server started before its sink), or one that cannot be opened: 503."""
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "5"})

    @contextlib.asynccontextmanager
    async def broker_deadline():
        """A broker that is away answers 503 within INGEST_TIMEOUT, not a 500 after the client's timeout."""
        try:
            async with asyncio.timeout(INGEST_TIMEOUT):
                yield
        except (TimeoutError, KafkaError) as exc:
            raise HTTPException(503, f"the Kafka broker did not take the events within {INGEST_TIMEOUT:.0f} s"
                                     f" ({type(exc).__name__}); retry later (event ids make a retry safe)",
                                headers={"Retry-After": "5"}) from None

    limiter = RateLimiter(settings.rate_limit_per_second, settings.rate_limit_burst)

    def authorised(request: Request) -> None:
        if not limiter.allow(request.client.host if request.client else "unknown"):
            raise HTTPException(429, "too many requests", headers={"Retry-After": "1"})
        if settings.token is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), settings.token.encode()):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    async def body_of(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > settings.max_body_bytes:
            raise HTTPException(413, f"body over {settings.max_body_bytes} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > settings.max_body_bytes:
                raise HTTPException(413, f"body over {settings.max_body_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    @app.post("/v1/events", status_code=202, dependencies=[Depends(authorised)])
    async def post_events(request: Request):
        """One event, a JSON array, or NDJSON. Valid items are accepted even when others are not."""
        body = await body_of(request)
        producer: AIOKafkaProducer = state["producer"]
        try:
            items = split_body(body, request.headers.get("content-type", ""))
        except HTTPException:
            # a malformed body is still not lost: it goes to the dead letters through the pipeline
            headers = [(ORIGIN, b"http")]
            async with broker_deadline():
                await producer.send(topics.ingest, cut_to_limit(body, headers), headers=headers)
            raise
        accepted, errors = [], []
        async with broker_deadline():
            for index, raw in enumerate(items):
                try:
                    event = parse_event(raw)
                except InvalidEvent as exc:
                    errors.append({"index": index, "error": str(exc)})
                    headers = [(ORIGIN, f"http:{index}".encode())]
                    await producer.send(topics.ingest, cut_to_limit(raw, headers), headers=headers)
                    continue
                key = companies.company_id(event.company).encode()
                sent = str(int(time.time() * 1000)).encode()
                await producer.send(topics.ingest, to_wire(event), key=key,
                                    headers=[(ORIGIN, f"http:{index}".encode()), (SENT, sent)])
                accepted.append(event.event_id)
            await producer.flush()
        payload = {"accepted": len(accepted), "event_ids": accepted}
        if errors:
            return JSONResponse({**payload, "detail": "some events are invalid", "errors": errors}, status_code=422)
        return payload

    @app.get("/v1/alerts")
    async def get_alerts(status: str | None = Query(None, pattern="^(firing|resolved|all)$"), rule: str | None = None,
                         severity: str | None = None, company: str | None = None, fingerprint: str | None = None,
                         limit: int = Query(500, ge=1, le=10_000)):
        """Alert instances, newest first: firing now by default; with ``fingerprint``, that alert's every instance.
        Every alert change the stream has delivered is listed (the sink's flush is awaited)."""
        if status is None:
            status = "all" if fingerprint else "firing"
        if alerts_written is not None and broadcaster.live.is_set():
            await alerts_written(dict(enumerate(broadcaster.positions())), READ_YOUR_ALERT_TIMEOUT)
        where, params = [], []
        if fingerprint:
            where.append("fingerprint = ?"); params.append(fingerprint)
        if status != "all":
            where.append("status = ?"); params.append(status)
        if rule:
            where.append("rule = ?"); params.append(rule)
        if severity:
            where.append("severity = ?"); params.append(severity)
        if company:
            where.append("(company_id = ? OR counterparty_id = ?)"); params += [companies.company_id(company)] * 2
        sql = ("SELECT fingerprint, rule, company_id, counterparty_id, severity, status, strftime(starts_at, '%Y-%m-%d'),"
               " strftime(ends_at, '%Y-%m-%d'), labels, annotations, evidence FROM alerts"
               + (" WHERE " + " AND ".join(where) if where else "") + f" ORDER BY starts_at DESC LIMIT {limit}")

        def read():
            with database.reader() as con:
                return con.execute(sql, params).fetchall()

        rows = await asyncio.to_thread(read)
        keys = ("fingerprint", "rule", "company_id", "counterparty_id", "severity", "status", "starts_at", "ends_at")
        return [{**dict(zip(keys, r[:8])), "labels": orjson.loads(r[8]), "annotations": orjson.loads(r[9]),
                 "evidence": orjson.loads(r[10])} for r in rows]

    @app.get("/v1/alerts/stream")
    async def alert_stream(request: Request, rule: str | None = None, severity: str | None = None,
                           company: str | None = None, from_beginning: bool = False):
        """Server-Sent Events of alert state changes; reconnect with Last-Event-ID to resume exactly.
        503 past the connection caps (per client address and in total)."""
        client = request.client.host if request.client else "unknown"
        try:
            sub = broadcaster.open(client, (rule,) if rule else (), (severity,) if severity else (),
                                   (companies.company_id(company),) if company else ())
        except StreamFull as exc:
            raise HTTPException(503, str(exc), headers={"Retry-After": "10"}) from None
        try:
            await broadcaster.wait_live(STREAM_READY_TIMEOUT)
        except StreamNotReady as exc:
            broadcaster.release(sub)
            raise HTTPException(503, str(exc), headers={"Retry-After": "5"}) from None
        resume = parse_positions(request.headers.get("last-event-id"), topics.partitions)
        return AlertStreamResponse(broadcaster, sub, resume, from_beginning)

    @app.post("/v1/query", dependencies=[Depends(authorised)])
    async def post_query(raw: Request):
        """Read-only SQL over the live data: one SELECT, sandboxed, with a row cap and a timeout."""
        try:
            request = QueryRequest.model_validate_json(await body_of(raw))  # the body is capped like any other
        except ValidationError as exc:
            raise RequestValidationError(exc.errors(include_url=False)) from None
        cap = min(request.max_rows or settings.query_max_rows, settings.query_max_rows)
        try:
            names, rows, truncated = await asyncio.to_thread(run_sql, database, request.sql, cap,
                                                             settings.query_timeout_seconds)
        except QueryError as exc:
            raise HTTPException(400, str(exc)) from None
        if request.format == "csv":
            return PlainTextResponse(to_csv(names, rows), media_type="text/csv",
                                     headers={"X-Truncated": str(truncated).lower()})
        return Response(json_bytes({"columns": names, "rows": rows, "truncated": truncated}), media_type="application/json")

    @app.get("/", include_in_schema=False)
    async def dashboard():
        from fastapi.responses import HTMLResponse

        return HTMLResponse(DASHBOARD.read_text(encoding="utf-8"))

    def read(sql: str, params: list | None = None):
        with database.reader() as con:
            cursor = con.execute(sql, params or [])
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row)) for row in cursor.fetchall()]

    @app.get("/v1/dashboard/summary")
    async def summary(top: int = Query(10, ge=1, le=100)):
        """Counts, stream time, top companies by 90-day drain ratio and by 30-day funding (latest row of each)."""
        latest = ("SELECT * FROM indicators i WHERE window_days = {w} AND window_end = (SELECT max(window_end) "
                  "FROM indicators j WHERE j.company_id = i.company_id AND j.window_days = {w})")

        def collect():
            counts = read("SELECT (SELECT count(*) FROM events) AS events, (SELECT count(*) FROM dead_letters) AS dead,"
                          " (SELECT count(*) FROM alerts WHERE status = 'firing') AS firing,"
                          " (SELECT strftime(max(occurred_at), '%Y-%m-%d') FROM events WHERE NOT late) AS stream_time")[0]
            drain = read(f"SELECT company_id, attrition, layoffs, departures, hires, talent_drain_ratio FROM ({latest.format(w=90)})"
                         f" WHERE attrition > 0 ORDER BY talent_drain_ratio DESC, attrition DESC LIMIT {top}")
            funding = read(f"SELECT company_id, funding_usd, funding_rounds FROM ({latest.format(w=30)})"
                           f" WHERE funding_usd > 0 ORDER BY funding_usd DESC LIMIT {top}")
            return counts, drain, funding

        counts, drain, funding = await asyncio.to_thread(collect)
        ok, parts = await asyncio.to_thread(ready) if ready is not None else (True, {})
        return {"events": counts["events"], "dead_letters": counts["dead"], "firing": counts["firing"],
                "stream_time": counts["stream_time"], "top_drain": drain, "top_funding": funding,
                "health": {"ready": ok, **parts}}

    @app.get("/v1/companies/{company}/history")
    async def history(company: str, window_days: int = Query(90, ge=1, le=3650)):
        """A company's indicator rows over time (for one window length)."""
        rows = await asyncio.to_thread(
            read, "SELECT strftime(window_end, '%Y-%m-%d') AS window_end, hires, departures, layoffs, attrition, key_departures,"
                  " net_talent_flow, talent_drain_ratio, funding_usd, funding_rounds, model_releases FROM indicators"
                  " WHERE company_id = ? AND window_days = ? ORDER BY window_end", [companies.company_id(company), window_days])
        return rows

    @app.get("/metrics")
    async def metrics():
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz():
        ok, parts = await asyncio.to_thread(ready) if ready is not None else (True, {})
        return JSONResponse({"ready": ok, **parts}, status_code=200 if ok else 503)

    return app
