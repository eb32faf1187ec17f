"""Alertmanager delivery against a real local HTTP server: a change counts as pushed only once it was taken."""

from __future__ import annotations

import asyncio
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import orjson

from sinks.database import Database
from sinks.delivery import ALERTMANAGER, ALERTMANAGER_RETRY_SECONDS, Delivery
from tests.conftest import CONFORMANCE, aisignals, fetch


class _Alertmanager(BaseHTTPRequestHandler):
    posts: list[list[dict]] = []
    failing = True

    def do_POST(self):  # noqa: N802 - the http.server API
        body = self.rfile.read(int(self.headers["content-length"]))
        type(self).posts.append(orjson.loads(body))
        self.send_response(503 if type(self).failing else 200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_a_failed_alertmanager_push_is_pushed_again_resolves_included(tmp_path):
    db = tmp_path / "am.duckdb"
    aisignals("backfill", str(CONFORMANCE / "stream.jsonl"), "--db", str(db))
    changes = fetch(db, "SELECT count(*), count(*) FILTER (WHERE status = 'resolved') FROM alert_history")[0]
    assert changes[0] > 0 and changes[1] > 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Alertmanager)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    delivery = Delivery(Database(db), [], alertmanager_url=f"http://127.0.0.1:{server.server_port}")

    async def rounds() -> None:
        async with httpx.AsyncClient() as client:
            await delivery.alertmanager_round(client, 0.0)  # answered 503: nothing is recorded
            assert fetch(db, "SELECT count(*) FROM webhook_deliveries")[0][0] == 0
            assert delivery.counts == {("alertmanager", "failed"): 1}
            await delivery.alertmanager_round(client, ALERTMANAGER_RETRY_SECONDS / 2)  # not yet tried again
            assert len(_Alertmanager.posts) == 1
            _Alertmanager.failing = False
            await delivery.alertmanager_round(client, ALERTMANAGER_RETRY_SECONDS)
            assert len(_Alertmanager.posts) == 2

    try:
        asyncio.run(rounds())
    finally:
        server.shutdown()
    stored = fetch(db, f"SELECT count(*) FROM webhook_deliveries WHERE receiver = '{ALERTMANAGER.name}'"
                       " AND outcome = 'pushed'")[0][0]
    assert stored == changes[0] == delivery.counts[("alertmanager", "pushed")]
    # the retry carried every resolve again (endsAt its day in event time; firing ones get a few minutes
    # from now): they must not be left firing in Alertmanager
    today = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    assert sum(1 for a in _Alertmanager.posts[1] if a["endsAt"] < today) == changes[1]
