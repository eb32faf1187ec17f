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


def test_webhooks_file_values_are_checked_and_named(tmp_path):
    """A wrong value is one error naming the table and key (it was a ValueError traceback, or, for a string
    of rules, a receiver that silently filtered out every alert)."""
    from sinks.delivery import WebhookConfigError, load_receivers

    path = tmp_path / "hooks.toml"
    for text, expected in [
        ('[[webhook]]\nurl = "http://x/"\nmax_attempts = "five"\n', "webhook[0].max_attempts: Input should be a valid integer"),
        ('[[webhook]]\nurl = "http://x/"\nrules = "talent_drain"\n', "webhook[0].rules: Input should be a valid list"),
        ('[[webhook]]\nurl = "ftp://x/"\n', "webhook[0].url: String should match pattern"),
        ('[[webhook]]\nurl = "http://x/"\nretries = 3\n', "webhook[0].retries: Extra inputs are not permitted"),
        ("webhook = 5\n", "webhook must be an array of tables"),
    ]:
        path.write_text(text)
        try:
            load_receivers(path)
        except WebhookConfigError as exc:
            assert expected in str(exc) and "\n" not in str(exc), (text, exc)
        else:
            raise AssertionError(f"accepted: {text!r}")
    path.write_text('[[webhook]]\nname = "ops"\nurl = "https://x/"\nrules = ["talent_drain"]\ncompanies = ["Meta AI"]\n'
                    "timeout_seconds = 2\n")
    (hook,) = load_receivers(path, company_id=lambda c: c.lower().replace(" ", "-"))
    assert (hook.name, hook.rules, hook.companies, hook.max_attempts, hook.timeout_seconds) == (
        "ops", ("talent_drain",), ("meta-ai",), 5, 2.0)
