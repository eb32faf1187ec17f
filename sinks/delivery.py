"""Alert delivery: Alertmanager webhook v4 payloads to subscribed receivers, and pushes to a real Alertmanager.

``alert_history`` in DuckDB is the outbox: every alert state change the sink committed is
delivered to every receiver whose filters match, and the outcome is recorded in
``webhook_deliveries``, so a restart never forgets a change. A process killed between a POST and
the record of its outcome sends that change again after the restart (at least once); the header
``X-AISignals-Delivery-Id`` is the same both times, so a receiver can drop what it has seen. Each
POST is signed (HMAC-SHA256 of the body, header ``X-AISignals-Signature: sha256=<hex>``) and
retried with exponential backoff and jitter; after the last attempt the payload goes to
``delivery_dead_letters`` — never dropped silently.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
import tomllib
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from processors.alerts import alert_matches, change_id
from sinks.database import Database

if TYPE_CHECKING:  # httpx and tenacity are imported where alerts are delivered: most sinks have no receiver
    import httpx

    from sinks.duckdb_sink import DuckDBSink
    from streams.companies import CompanyNormalizer
    from streams.settings import Settings

log = logging.getLogger("aisignals.delivery")

DDL = [
    """CREATE TABLE IF NOT EXISTS webhook_deliveries (
  receiver VARCHAR NOT NULL, change_id VARCHAR NOT NULL, fingerprint VARCHAR NOT NULL, starts_at DATE NOT NULL,
  change VARCHAR NOT NULL, severity VARCHAR NOT NULL, status VARCHAR NOT NULL, outcome VARCHAR, attempts INTEGER,
  delivered_at TIMESTAMPTZ, PRIMARY KEY (receiver, change_id))""",
    """CREATE TABLE IF NOT EXISTS delivery_dead_letters (
  receiver VARCHAR, fingerprint VARCHAR, starts_at DATE, change VARCHAR, url VARCHAR, payload JSON, error VARCHAR,
  attempts INTEGER, failed_at TIMESTAMPTZ)""",
]


class WebhookConfigError(ValueError):
    """The webhooks file is malformed."""


@dataclass(frozen=True)
class Receiver:
    name: str
    url: str
    secret: str | None = field(default=None, repr=False)
    rules: tuple[str, ...] = ()
    severities: tuple[str, ...] = ()
    companies: tuple[str, ...] = ()
    max_attempts: int = 5
    timeout_seconds: float = 5.0

    def wants(self, alert: dict) -> bool:
        return alert_matches(alert, self.rules, self.severities, self.companies)


def load_receivers(path: Path | None, company_id=lambda c: c) -> list[Receiver]:
    """``[[webhook]]`` tables: name, url, secret, rules, severities, companies, max_attempts."""
    if path is None:
        return []
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise WebhookConfigError(f"cannot read webhooks file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise WebhookConfigError(f"{path}: {exc}") from None
    entries = data.get("webhook", [])
    if not isinstance(entries, list):
        raise WebhookConfigError(f"{path}: webhook must be an array of tables ([[webhook]])")
    out = []
    for i, entry in enumerate(entries):
        try:
            hook = WebhookEntry.model_validate(entry)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"])
            raise WebhookConfigError(f"{path}: webhook[{i}]{'.' + where if where else ''}: {first['msg']}") from None
        out.append(Receiver(
            name=hook.name or f"webhook-{i}", url=hook.url, secret=hook.secret, rules=tuple(hook.rules),
            severities=tuple(hook.severities), companies=tuple(company_id(c) for c in hook.companies),
            max_attempts=hook.max_attempts, timeout_seconds=hook.timeout_seconds))
    return out


class WebhookEntry(BaseModel):
    """One ``[[webhook]]`` table of the webhooks file."""

    model_config = ConfigDict(extra="forbid", strict=True)

    url: str = Field(pattern=r"^https?://", description="an http(s) URL")
    name: str | None = None
    secret: str | None = None
    rules: list[str] = []
    severities: list[str] = []
    companies: list[str] = []
    max_attempts: int = Field(default=5, ge=1, le=100)
    timeout_seconds: float = Field(default=5.0, gt=0)


DELIVERY_ID = "X-AISignals-Delivery-Id"


def delivery_id(receiver: str, alert: dict) -> str:
    """The same for every attempt to tell ``receiver`` of one alert state change, before a crash and
    after it: delivery is at least once, and a receiver that drops ids it has seen gets it exactly once."""
    return hashlib.sha256(f"{receiver}\x1f{change_id(alert)}".encode()).hexdigest()[:32]


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def am_alert(alert: dict, external_url: str) -> dict:
    """One alert in Alertmanager's shape."""
    return {"status": alert["status"], "labels": alert["labels"], "annotations": alert["annotations"],
            "startsAt": alert["startsAt"], "endsAt": alert["endsAt"], "fingerprint": alert["fingerprint"],
            "generatorURL": f"{external_url}v1/alerts?company={alert['company_id']}"}


def webhook_payload(alert: dict, receiver: str, external_url: str) -> dict:
    """Alertmanager webhook v4 payload for one alert state change."""
    labels = alert["labels"]
    group = {"alertname": labels["alertname"], "company": labels["company"]}
    return {
        "version": "4",
        "groupKey": "{}:{" + ",".join(f'{k}="{v}"' for k, v in group.items()) + "}",
        "truncatedAlerts": 0,
        "status": alert["status"],
        "receiver": receiver,
        "groupLabels": group,
        "commonLabels": labels,
        "commonAnnotations": alert["annotations"],
        "externalURL": external_url,
        "alerts": [am_alert(alert, external_url)],
    }


ROUND = 200  # alert changes per delivery round (outcomes are stored once per round)
CONCURRENCY = 8  # requests in flight per receiver


ALERTMANAGER = Receiver("alertmanager", "http://alertmanager.invalid/")  # names its outcomes in webhook_deliveries
ALERTMANAGER_RETRY_SECONDS = 5.0  # after a failed push, before the changes are pushed again


class Delivery:
    """Delivers committed alert changes to webhooks and Alertmanager; woken by the sink after each flush."""

    def __init__(self, database: Database, receivers: list[Receiver], alertmanager_url: str | None = None,
                 external_url: str = "http://127.0.0.1:8000/", resend_seconds: float = 60.0) -> None:
        self.db = database
        self.receivers = receivers
        self.alertmanager_url = alertmanager_url.rstrip("/") if alertmanager_url else None
        self.external_url = external_url
        self.resend_seconds = resend_seconds
        self.wake = asyncio.Event()
        self.counts: dict[tuple[str, str], int] = {}
        self._am_last_push = float("-inf")
        self._am_retry_at = float("-inf")
        with self.db.writer() as con:
            for ddl in DDL:
                con.execute(ddl)

    def _pending(self, receiver: Receiver) -> list[dict]:
        with self.db.writer() as con:
            rows = con.execute(
                "SELECT h.message FROM alert_history h ANTI JOIN webhook_deliveries d ON d.receiver = ?"
                " AND d.change_id = h.change_id ORDER BY h.recorded_at", [receiver.name]).fetchall()
        return [orjson.loads(r[0]) for r in rows]

    def pending_count(self) -> int:
        """Alert changes some receiver has not had an outcome for yet."""
        return sum(len(self._pending(r)) for r in self.receivers)

    def _record(self, receiver: Receiver, outcomes: list[tuple[dict, str, int, bytes, str | None]]) -> None:
        """Store the outcomes of a round, (alert, outcome, attempts, payload, error) each, in one transaction."""
        if not outcomes:
            return
        now = datetime.now(timezone.utc)
        with self.db.writer() as con:
            con.execute("BEGIN TRANSACTION")
            con.executemany("INSERT OR IGNORE INTO webhook_deliveries VALUES (?, ?, ?, ?::DATE, ?, ?, ?, ?, ?, ?)", [
                [receiver.name, change_id(a), a["fingerprint"], a["starts_at"], a["change"], a["severity"], a["status"],
                 outcome, attempts, now] for a, outcome, attempts, _, _ in outcomes])
            dead = [(a, attempts, payload, error) for a, outcome, attempts, payload, error in outcomes
                    if outcome == "dead_letter"]
            if dead:
                con.executemany("INSERT INTO delivery_dead_letters VALUES (?, ?, ?::DATE, ?, ?, ?::JSON, ?, ?, ?)", [
                    [receiver.name, a["fingerprint"], a["starts_at"], a["change"], receiver.url, payload.decode(), error,
                     attempts, now] for a, attempts, payload, error in dead])
            con.execute("COMMIT")
        for _, outcome, _, _, _ in outcomes:
            self.counts[(receiver.name, outcome)] = self.counts.get((receiver.name, outcome), 0) + 1

    async def _post(self, client: httpx.AsyncClient, receiver: Receiver,
                    alert: dict) -> tuple[dict, str, int, bytes, str | None]:
        body = orjson.dumps(webhook_payload(alert, receiver.name, self.external_url))
        headers = {"content-type": "application/json", "user-agent": "ai-signals",
                   DELIVERY_ID: delivery_id(receiver.name, alert)}
        if receiver.secret:
            headers["X-AISignals-Signature"] = sign(receiver.secret, body)
        from tenacity import AsyncRetrying, RetryError, stop_after_attempt, wait_random_exponential

        attempts = 0
        try:
            async for attempt in AsyncRetrying(stop=stop_after_attempt(receiver.max_attempts),
                                               wait=wait_random_exponential(multiplier=0.2, max=10), reraise=False):
                with attempt:
                    attempts += 1
                    response = await client.post(receiver.url, content=body, headers=headers,
                                                 timeout=receiver.timeout_seconds)
                    response.raise_for_status()
        except RetryError as exc:
            error = exc.last_attempt.exception()
            return alert, "dead_letter", attempts, body, " ".join(str(error).split())[:500]
        return alert, "delivered", attempts, body, None

    async def _deliver_webhooks(self, client: httpx.AsyncClient) -> None:
        """Rounds of ``ROUND`` changes: one alert's changes in order, different alerts side by side (at most
        ``CONCURRENCY`` requests at once), and the round's outcomes stored in one transaction."""
        for receiver in self.receivers:
            pending = await asyncio.to_thread(self._pending, receiver)
            await asyncio.to_thread(self._record, receiver, [(a, "filtered", 0, b"", None) for a in pending
                                                             if not receiver.wants(a)])
            wanted = [a for a in pending if receiver.wants(a)]
            slots = asyncio.Semaphore(CONCURRENCY)

            async def in_order(changes: list[dict]) -> list[tuple]:
                out = []
                for alert in changes:
                    async with slots:
                        out.append(await self._post(client, receiver, alert))
                return out

            for start in range(0, len(wanted), ROUND):
                by_alert: dict[str, list[dict]] = {}
                for alert in wanted[start : start + ROUND]:
                    by_alert.setdefault(alert["fingerprint"], []).append(alert)
                done = await asyncio.gather(*(in_order(changes) for changes in by_alert.values()))
                await asyncio.to_thread(self._record, receiver, [o for outcomes in done for o in outcomes])

    def _firing(self) -> list[dict]:
        with self.db.writer() as con:
            rows = con.execute("SELECT h.message FROM alerts a JOIN alert_history h ON h.fingerprint = a.fingerprint"
                               " AND h.starts_at = a.starts_at WHERE a.status = 'firing'"
                               " QUALIFY row_number() OVER (PARTITION BY a.fingerprint, a.starts_at"
                               " ORDER BY h.recorded_at DESC) = 1").fetchall()
        return [orjson.loads(r[0]) for r in rows]

    async def _push_alertmanager(self, client: httpx.AsyncClient, changed: list[dict]) -> bool:
        """Firing alerts are re-sent with endsAt a few minutes ahead; a resolve carries its endsAt."""
        horizon = (datetime.now(timezone.utc) + timedelta(seconds=5 * self.resend_seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")
        firing = await asyncio.to_thread(self._firing)
        batch = [{**am_alert(a, self.external_url), "endsAt": horizon} for a in firing]
        batch += [am_alert(a, self.external_url) for a in changed if a["status"] == "resolved"]
        if not batch:
            return True
        import httpx

        for a in batch:
            a.pop("status", None)
            a.pop("fingerprint", None)
        try:
            response = await client.post(f"{self.alertmanager_url}/api/v2/alerts", content=orjson.dumps(batch),
                                         headers={"content-type": "application/json"}, timeout=5.0)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            log.warning("alertmanager push failed (retried in %.0f s): %s", ALERTMANAGER_RETRY_SECONDS, exc)
            self.counts[("alertmanager", "failed")] = self.counts.get(("alertmanager", "failed"), 0) + 1
            return False
        return True

    async def alertmanager_round(self, client: httpx.AsyncClient, now: float) -> None:
        """Push new changes (and re-send the firing ones every ``resend_seconds``); a change is recorded as
        pushed only once Alertmanager took it, so a failed push is tried again, resolves included."""
        changed = await asyncio.to_thread(self._pending, ALERTMANAGER)
        if not (changed and now >= self._am_retry_at) and now - self._am_last_push < self.resend_seconds:
            return
        self._am_last_push = now
        if await self._push_alertmanager(client, changed):
            await asyncio.to_thread(self._record, ALERTMANAGER, [(a, "pushed", 1, b"", None) for a in changed])
        else:
            self._am_retry_at = now + ALERTMANAGER_RETRY_SECONDS

    async def run(self, stop: asyncio.Event) -> None:
        import httpx

        async with httpx.AsyncClient() as client:
            while not stop.is_set():
                try:
                    await asyncio.wait_for(self.wake.wait(), timeout=1.0)
                except asyncio.TimeoutError:
                    pass
                self.wake.clear()
                try:
                    await self._deliver_webhooks(client)
                    if self.alertmanager_url:
                        await self.alertmanager_round(client, asyncio.get_running_loop().time())
                except Exception:  # noqa: BLE001 - delivery must never take the pipeline down
                    log.exception("alert delivery round failed; retrying")


def start_delivery(sink: DuckDBSink, settings: Settings, companies: CompanyNormalizer,
                   stop: asyncio.Event) -> tuple[Delivery | None, asyncio.Task | None]:
    """Alert delivery beside a sink (webhooks, Alertmanager), woken after each flush; none if nobody listens."""
    receivers = load_receivers(settings.webhooks_file, companies.company_id)
    if not receivers and not settings.alertmanager_url:
        return None, None
    delivery = Delivery(sink.db, receivers, settings.alertmanager_url, f"http://{settings.host}:{settings.port}/")
    sink.after_flush.append(delivery.wake.set)
    return delivery, asyncio.create_task(delivery.run(stop), name="delivery")


async def delivered(delivery: Delivery | None, deadline: float) -> None:
    """Wait until every committed alert change has been delivered (or dead-lettered)."""
    if delivery is not None:
        delivery.wake.set()
        while await asyncio.to_thread(delivery.pending_count) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
