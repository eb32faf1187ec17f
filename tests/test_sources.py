"""Live sources against a real local HTTP server serving recorded responses in each API's real shape.
No test touches the network. (The pipeline end of `watch` is tested in test_watch_e2e.py.)"""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest

from streams.events import parse_event
from streams.sources.config import SourcesFileError, load_sources
from streams.sources.huggingface import family
from streams.sources.polite import retry_after_seconds
from streams.sources.runner import Watcher
from tests.sources_server import (CIK, SEC_UA, Answer, RecordedServer, serve_epoch, serve_huggingface, serve_sec,
                                  sources_toml)


class Store:
    """The receiving end: keeps what it was given, and says which event ids were new (like the events table)."""

    def __init__(self) -> None:
        self.events: dict[str, dict] = {}
        self.dead: list[tuple[str, bytes]] = []

    async def deliver(self, items) -> set[str]:
        new = set()
        for item in items:
            if item.event_id is None:
                self.dead.append((item.origin, item.raw))
            elif item.event_id not in self.events:
                self.events[item.event_id] = orjson.loads(item.raw)
                new.add(item.event_id)
        return new


@pytest.fixture
def server():
    with RecordedServer() as s:
        yield s


def watcher(tmp_path, server, store, lines=None, **overrides) -> Watcher:
    path = tmp_path / "sources.toml"
    path.write_text(sources_toml(server.base, **overrides))
    return Watcher(load_sources(path), tmp_path / "state", store.deliver, (lines if lines is not None else []).append)


def once(w: Watcher):
    return {r.name: r for r in asyncio.run(w.once())}


def only(w: Watcher, *names: str) -> Watcher:
    w.sources = [s for s in w.sources if s.name in names]
    return w


# ---- configuration -----------------------------------------------------------------------------
def test_example_sources_file_is_valid():
    from importlib.resources import files

    from streams.companies import normalizer

    config = load_sources(files("streams.sources") / "sources.example.toml")
    assert [n for n, _ in config.named()] == ["huggingface", "epoch", "sec_form_d"]
    # each Hugging Face organisation counts for the company the bundled data knows it as
    hf = dict(config.named())["huggingface"]
    ids = {org: normalizer().company_id(company) for org, company in hf.companies().items()}
    assert ids == {"meta-llama": "meta", "Qwen": "alibaba", "mistralai": "mistral-ai", "deepseek-ai": "deepseek",
                   "google": "google"}


@pytest.mark.parametrize("text, message", [
    ('[[source]]\ntype = "sec_form_d"\ncompanies = { "A" = 1 }\n', "source[0].user_agent: Field required"),
    ('[[source]]\ntype = "sec_form_d"\nuser_agent = "me"\ncompanies = { "A" = 1 }\n', "source[0].user_agent: EDGAR needs"),
    ('[[source]]\ntype = "sec_form_d"\nuser_agent = "A a@b.c"\ncompanies = { "A" = 1 }\nrequests_per_second = 20\n',
     "source[0].requests_per_second: Input should be less than or equal to 10"),
    ('[[source]]\ntype = "huggingface"\norganisations = ["x"]\n', "source[0].organizations: Field required"),
    ('[[source]]\ntype = "huggingface"\norganizations = ["x"]\nendpont = "y"\n', "source[0].endpont: Extra inputs are not permitted"),
    ('[[source]]\ntype = "rss"\n', 'source[0]: type must be "huggingface", "epoch" or "sec_form_d"'),
    ('[[source]]\ntype = "epoch"\n[[source]]\ntype = "epoch"\n', "two sources are named 'epoch'"),
    ('[[source]\n', "not valid TOML"),
])
def test_malformed_sources_file_is_one_line_naming_the_key(tmp_path, text, message):
    path = tmp_path / "s.toml"
    path.write_text(text)
    with pytest.raises(SourcesFileError) as caught:
        load_sources(path)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_watch_command_reports_a_bad_file_in_one_line(tmp_path):
    from tests.conftest import aisignals

    path = tmp_path / "s.toml"
    path.write_text('[[source]]\ntype = "sec_form_d"\ncompanies = { "A" = 1 }\n')
    proc = aisignals("watch", str(path), "--once", "--db", str(tmp_path / "x.duckdb"), check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [f"aisignals: error: {path}: source[0].user_agent: Field required"]


# ---- Hugging Face ------------------------------------------------------------------------------
def test_family_folds_sizes_variants_and_formats():
    assert family("Llama-3.1-70B-Instruct-FP8") == family("Llama-3.1-8B") == "llama-3.1"
    assert family("Qwen2.5-Coder-7B-Instruct-GGUF") == "qwen2.5-coder"
    assert family("Qwen3-30B-A3B-Instruct-2507") == "qwen3-2507"
    assert family("Mixtral-8x7B-Instruct-v0.1") == "mixtral-v0.1"
    assert family("gemma-3-27b-it") == "gemma-3"
    assert family("Nova-Vision-1") != family("Nova-2-7B")


def test_huggingface_first_poll_pagination_and_one_launch_one_release(tmp_path, server):
    serve_huggingface(server, 1, etag='W/"v1"')
    store = Store()
    report = once(only(watcher(tmp_path, server, store), "huggingface"))["huggingface"]
    # two pages: the second only through the Link header; the 2024 repository is before `since`
    assert [r.path for r in server.seen("/api/models")] == ["/api/models", "/api/models?cursor=v1p2"]
    first = server.seen("/api/models")[0]
    assert first.query == {"author": "example-lab", "sort": "createdAt", "direction": "-1", "limit": "4"}
    releases = {e["model_name"]: e for e in store.events.values()}
    assert set(releases) == {"example-lab/Nova-2-7B", "example-lab/Nova-Vision-1", "example-lab/Nova-1-Instruct",
                             "example-lab/Nova-1"}
    nova2 = releases["example-lab/Nova-2-7B"]
    assert nova2["repositories"] == ["example-lab/Nova-2-7B", "example-lab/Nova-2-7B-Instruct",
                                     "example-lab/Nova-2-70B-Instruct", "example-lab/Nova-2-7B-Instruct-GGUF"]
    assert nova2["occurred_at"] == "2026-11-20T09:00:00Z" and nova2["modality"] == "language"
    assert nova2["open_weights"] is True and nova2["company"] == "example-lab" and nova2["kind"] == "model_release"
    assert releases["example-lab/Nova-Vision-1"]["modality"] == "multimodal"
    for event in store.events.values():
        parse_event(orjson.dumps(event))  # valid SPEC §2
    assert (report.fetched, report.new, report.unchanged, report.errors) == (7, 4, 3, [])


def test_huggingface_nothing_new_then_new_items_then_restart(tmp_path, server):
    serve_huggingface(server, 1, etag='W/"v1"')
    store = Store()
    once(only(watcher(tmp_path, server, store), "huggingface"))
    server.forget()
    # nothing new: the conditional request gets a 304, nothing is read further
    report = once(only(watcher(tmp_path, server, store), "huggingface"))["huggingface"]
    assert [r.headers.get("if-none-match") for r in server.seen("/api/models")] == ['W/"v1"']
    assert (report.fetched, report.new) == (0, 0)
    # new repositories on top (a new launch, and a late AWQ copy of the launch already announced);
    # a new watcher (a restart) resumes from the cursor file: it stops paging at the repositories it knows
    serve_huggingface(server, 2, etag='W/"v2"')
    server.forget()
    before = set(store.events)
    report = once(only(watcher(tmp_path, server, store), "huggingface"))["huggingface"]
    added = [store.events[i] for i in set(store.events) - before]
    assert [e["model_name"] for e in added] == ["example-lab/Nova-2.5-8B"]
    assert added[0]["repositories"] == ["example-lab/Nova-2.5-8B", "example-lab/Nova-2.5-8B-FP8"]
    # it reads down to a day below the newest repository it knew, and no further (Nova-1 of October is not read)
    assert (report.fetched, report.new, report.unchanged) == (8, 1, 7)


def test_huggingface_malformed_item_is_a_dead_letter_named_by_source(tmp_path, server):
    from tests.sources_server import DATA

    items = orjson.loads((DATA / "hf_v1_page1.json").read_bytes())
    items[1]["createdAt"] = "yesterday"
    server.route("/api/models", Answer(200, orjson.dumps(items + [17]), {"Content-Type": "application/json"}))
    store = Store()
    report = once(only(watcher(tmp_path, server, store), "huggingface"))["huggingface"]
    assert [o for o, _ in store.dead] == ["huggingface:example-lab/Nova-2-70B-Instruct", "huggingface:example-lab"]
    assert orjson.loads(store.dead[0][1])["occurred_at"] == "yesterday"
    assert report.dead_letters == 2 and not report.failed and report.new == 1
    # the next poll finds them again: they were dead-lettered once, and are not sent again
    report = once(only(watcher(tmp_path, server, store), "huggingface"))["huggingface"]
    assert report.dead_letters == 0 and len(store.dead) == 2 and not report.failed


# ---- politeness ----------------------------------------------------------------------------------
def test_retry_after_is_honoured_on_429(tmp_path, server):
    serve_epoch(server, 1)
    server.route("/data/all_ai_models.csv",
                 Answer(429, b"slow down", {"Retry-After": "1"}),
                 Answer(200, "epoch_models_v1.csv", {"Content-Type": "text/csv"}))
    store = Store()
    report = once(only(watcher(tmp_path, server, store), "epoch"))["epoch"]
    times = [r.at for r in server.seen("/data")]
    assert len(times) == 2 and times[1] - times[0] >= 0.95  # the server's Retry-After, not the 0.05 s backoff
    assert report.errors == [] and report.new > 0


def test_500_then_recovery(tmp_path, server):
    server.route("/data/all_ai_models.csv", Answer(500, b"oops"), Answer(503, b"oops"),
                 Answer(200, "epoch_models_v1.csv", {"Content-Type": "text/csv"}))
    store = Store()
    report = once(only(watcher(tmp_path, server, store), "epoch"))["epoch"]
    assert len(server.seen("/data")) == 3 and report.errors == [] and report.new == 15


def test_persistent_failure_of_one_source_leaves_the_others_complete(tmp_path, server):
    serve_huggingface(server, 1)
    serve_sec(server, 1)
    server.route("/data/all_ai_models.csv", Answer(500, b"down"))
    store, lines = Store(), []
    reports = once(watcher(tmp_path, server, store, lines))
    assert len(server.seen("/data")) == 3  # max_attempts
    assert [e.kind for e in reports["epoch"].errors] == ["http_5xx"] and reports["epoch"].new == 0
    assert lines == [f"source epoch: http_5xx: HTTP 500 from GET {server.base}/data/all_ai_models.csv"
                     " (gave up after 3 attempts)"]
    assert reports["huggingface"].new == 4 and reports["sec_form_d"].new == 3
    assert not (tmp_path / "state" / "epoch.json").exists() or "seen" not in (tmp_path / "state" / "epoch.json").read_text()
    # the source comes back: the next poll delivers it
    serve_epoch(server, 1)
    lines.clear()
    assert once(watcher(tmp_path, server, store, lines))["epoch"].new == 15


def test_rate_limit_and_user_agent(tmp_path, server):
    serve_sec(server, 1)
    store = Store()
    once(only(watcher(tmp_path, server, store), "sec_form_d"))
    seen = server.seen()
    assert len(seen) == 5 and {r.headers["user-agent"] for r in seen} == {SEC_UA}
    # requests_per_second = 10: request starts are 0.1 s apart (arrivals jitter by the connection's latency)
    assert seen[-1].at - seen[0].at >= 0.9 * 0.1 * (len(seen) - 1)


def test_request_budget_keeps_what_was_read(tmp_path, server):
    serve_huggingface(server, 1, etag='W/"v1"')
    store = Store()
    report = once(only(watcher(tmp_path, server, store, huggingface="max_requests = 1\n"), "huggingface"))["huggingface"]
    assert [e.kind for e in report.errors] == ["budget"]
    assert {e["model_name"] for e in store.events.values()} == {"example-lab/Nova-2-7B"}
    # the cursor stayed where it was, and the list's ETag was not kept (a 304 would end the next poll at
    # once): the next poll, with its full budget, reads what the first could not
    report = once(only(watcher(tmp_path, server, store), "huggingface"))["huggingface"]
    assert report.errors == [] and report.new == 3
    assert {e["model_name"] for e in store.events.values()} == {
        "example-lab/Nova-2-7B", "example-lab/Nova-Vision-1", "example-lab/Nova-1-Instruct", "example-lab/Nova-1"}


def test_a_cursor_file_that_is_not_an_object_is_an_error_of_that_source(tmp_path, server):
    """Valid JSON of the wrong shape is reported like unreadable JSON, and the other sources still poll."""
    serve_huggingface(server, 1)
    serve_epoch(server, 1)
    store = Store()
    w = only(watcher(tmp_path, server, store), "huggingface", "epoch")
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "huggingface.json").write_text("null")
    reports = once(w)
    (error,) = reports["huggingface"].errors
    assert "huggingface.json is unreadable (a JSON NoneType, not an object)" in str(error)
    assert reports["epoch"].errors == [] and reports["epoch"].new > 0
    assert (tmp_path / "state" / "huggingface.json").read_text() == "null"  # left as it is


def test_retry_after_parsing():
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480.0 - 0) == 0.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == pytest.approx(10.0)
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


# ---- Epoch ---------------------------------------------------------------------------------------
def test_epoch_rows_not_seen_before(tmp_path, server):
    serve_epoch(server, 1)
    store = Store()
    report = once(only(watcher(tmp_path, server, store), "epoch"))["epoch"]
    # 11 real rows; the 2019 one is before since = 2020-01-01; one row names six organisations
    assert (report.fetched, report.skipped) == (11, 1)
    assert report.new == 15 and all(e["source"] == "epoch" for e in store.events.values())
    # same file again: If-Modified-Since → 304
    server.forget()
    report = once(only(watcher(tmp_path, server, store), "epoch"))["epoch"]
    assert server.seen()[0].headers["if-modified-since"] == "Mon, 23 Nov 2026 06:00:00 GMT"
    assert (report.fetched, report.new) == (0, 0)
    # a new version with two more rows: only those
    serve_epoch(server, 2)
    report = once(only(watcher(tmp_path, server, store), "epoch"))["epoch"]
    assert report.new == 2 and report.unchanged == 10
    assert {"Pangu Ultra", "Llama 4 Behemoth"} <= {e["model_name"] for e in store.events.values()}


def test_epoch_ids_match_the_file_adapter(tmp_path, server):
    from streams.adapters import Accounting, epoch_events
    from tests.sources_server import DATA

    serve_epoch(server, 1)
    store = Store()
    once(only(watcher(tmp_path, server, store, epoch="since = 1900-01-01\n"), "epoch"))
    assert set(store.events) == {e["event_id"] for _, e in epoch_events(DATA / "epoch_models_v1.csv", Accounting())}


def test_epoch_malformed_body_and_unreadable_row(tmp_path, server):
    server.route("/data/all_ai_models.csv", Answer(200, b"<html>maintenance</html>", {"Content-Type": "text/html"}))
    store = Store()
    report = once(only(watcher(tmp_path, server, store), "epoch"))["epoch"]
    assert [e.kind for e in report.errors] == ["malformed"] and "no column 'Model'" in str(report.errors[0])
    from tests.sources_server import DATA

    text = (DATA / "epoch_models_v1.csv").read_text(encoding="utf-8").replace("2025-03-06", "early March", 1)
    server.route("/data/all_ai_models.csv", Answer(200, text.encode(), {"Content-Type": "text/csv"}))
    report = once(only(watcher(tmp_path, server, store), "epoch"))["epoch"]
    assert [o for o, _ in store.dead] == ["epoch:QwQ-32B"] and report.dead_letters == 1 and not report.failed
    assert once(only(watcher(tmp_path, server, store), "epoch"))["epoch"].dead_letters == 0  # once


# ---- SEC Form D ----------------------------------------------------------------------------------
def test_form_d_amounts_count_each_dollar_once(tmp_path, server):
    serve_sec(server, 1)
    store = Store()
    report = once(only(watcher(tmp_path, server, store), "sec_form_d"))["sec_form_d"]
    paths = [r.path for r in server.seen()]
    assert paths[:2] == [f"/submissions/CIK{CIK}.json", f"/submissions/CIK{CIK}-submissions-001.json"]  # older page: since
    assert f"/Archives/edgar/data/{int(CIK)}/000199900125000001/primary_doc.xml" in paths  # xslFormDX01/ dropped
    got = {e["sec_accession"]: (e["amount_usd"], e["occurred_at"], e.get("round")) for e in store.events.values()}
    assert got == {"0001999001-23-000001": (5e6, "2023-02-01", "debt"),
                   "0001999001-25-000001": (10e6, "2025-03-10", None),
                   "0001999001-25-000002": (15e6, "2025-09-15", None)}  # the D/A adds 25M - 10M
    assert {e["event_id"] for e in store.events.values()} == {f"sec-{a}" for a in got}
    assert report.new == 3
    # nothing new: the submissions JSON answers 304 to If-None-Match
    server.forget()
    report = once(only(watcher(tmp_path, server, store), "sec_form_d"))["sec_form_d"]
    assert [r.headers.get("if-none-match") for r in server.seen()] == ['"sub-v1"'] and report.new == 0
    # new filings: a D/A restating 25M (no new money), a new offering (40M), a D/A with an unreadable amount
    serve_sec(server, 2)
    server.forget()
    report = once(only(watcher(tmp_path, server, store), "sec_form_d"))["sec_form_d"]
    assert len(server.seen("/Archives")) == 3  # only the new filings' documents
    assert store.events["sec-0001999001-26-000002"]["amount_usd"] == 40e6 and "sec-0001999001-26-000001" not in store.events
    assert [o for o, _ in store.dead] == ["sec_form_d:0001999001-26-000003"]
    assert orjson.loads(store.dead[0][1])["amount_usd"] == "forty million"
    assert (report.new, report.dead_letters, report.unchanged) == (1, 1, 3)
    total = sum(e["amount_usd"] for e in store.events.values() if e["sec_offering"] == "0001999001-25-000001")
    assert total == 25e6  # the offering's highest reported total, once


def test_form_d_malformed_document_and_failure_mid_company(tmp_path, server):
    serve_sec(server, 1)
    server.route(f"/Archives/edgar/data/{int(CIK)}/000199900125000001/primary_doc.xml", Answer(500, b"down"))
    store, lines = Store(), []
    report = once(only(watcher(tmp_path, server, store, lines), "sec_form_d"))["sec_form_d"]
    # the 2023 filing was processed, the 2025 ones wait (in order: a D/A must not be counted before its D)
    assert set(store.events) == {"sec-0001999001-23-000001"} and [e.kind for e in report.errors] == ["http_5xx"]
    assert lines[0].startswith("source sec_form_d: http_5xx: Example Robotics (CIK 1999001): HTTP 500")
    serve_sec(server, 1)
    server.route(f"/Archives/edgar/data/{int(CIK)}/000199900125000002/primary_doc.xml",
                 Answer(200, b"<html><body>Form D</body></html>", {"Content-Type": "text/html"}))
    report = once(only(watcher(tmp_path, server, store, lines), "sec_form_d"))["sec_form_d"]
    assert "sec-0001999001-25-000001" in store.events and report.errors[0].kind == "invalid_item"
    assert [o for o, _ in store.dead] == ["sec_form_d:0001999001-25-000002"]


def test_metrics_of_sources(tmp_path, server):
    from prometheus_client import generate_latest

    from sinks.metrics import register_sources

    serve_huggingface(server, 1)
    serve_sec(server, 1)
    server.route("/data/all_ai_models.csv", Answer(500, b"down"))
    w = watcher(tmp_path, server, Store())
    register_sources(w.stats)
    before = time.time()
    once(w)
    text = generate_latest().decode()
    assert 'aisignals_source_errors_total{kind="http_5xx",source="epoch"} 1.0' in text
    stamps = {line.split('"')[1]: float(line.split()[-1]) for line in text.splitlines()
              if line.startswith("aisignals_source_last_success_timestamp_seconds{")}
    assert set(stamps) == {"huggingface", "sec_form_d"} and all(s >= before for s in stamps.values())


def test_source_alert_rules_fire_when_a_source_goes_silent():
    """promtool evaluates the shipped rules on series where one source stops succeeding and one never did."""
    import shutil
    import subprocess

    from tests.sources_server import DATA

    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed (.ci/run installs it)")
    proc = subprocess.run([promtool, "test", "rules", str(DATA / "source_rules_test.yml")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_unreachable_source_is_a_network_error_and_the_others_go_on(tmp_path, server):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    serve_epoch(server, 1)
    store, lines = Store(), []
    w = watcher(tmp_path, server, store, lines, huggingface=f'endpoint = "http://127.0.0.1:{closed}"\n')
    reports = once(only(w, "huggingface", "epoch"))
    assert [e.kind for e in reports["huggingface"].errors] == ["network"] and reports["epoch"].new == 15
    assert len(lines) == 1 and lines[0].startswith("source huggingface: network: example-lab: cannot reach 127.0.0.1")


def test_an_amendment_linked_only_by_file_number_counts_its_offering_once():
    """A D/A without previousAccessionNumber belongs to the offering of the filings with its file number:
    it reports only what was sold since, even when the first match in the (reloaded, key-sorted) cursor is
    an earlier amendment rather than the original notice."""
    import json
    from datetime import date

    from streams.sources.base import Poll
    from streams.sources.sec_form_d import SecFormDSource

    def form_d(sold: float, amendment: bool = False, previous: str | None = None) -> bytes:
        linked = f"<previousAccessionNumber>{previous}</previousAccessionNumber>" if previous else ""
        return (f"<edgarSubmission><primaryIssuer/><offeringData><typeOfFiling><newOrAmendment><isAmendment>{str(amendment).lower()}"
                f"</isAmendment>{linked}</newOrAmendment></typeOfFiling><offeringSalesAmounts><totalAmountSold>{sold}"
                "</totalAmountSold></offeringSalesAmounts></offeringData></edgarSubmission>").encode()

    source, poll = SecFormDSource.__new__(SecFormDSource), Poll("sec")
    source.name = "sec"
    cursor = {"known": {}, "counted": {}, "history": True}
    notice, first, second = "0001999001-23-000001", "0000950170-24-000001", "0001999001-25-000001"
    source._filing(poll, "X", 1, {"accessionNumber": notice, "form": "D", "fileNumber": "021-1"}, date(2023, 1, 1),
                   form_d(10e6), cursor)
    source._filing(poll, "X", 1, {"accessionNumber": first, "form": "D/A", "fileNumber": "021-1"}, date(2024, 1, 1),
                   form_d(12e6, True, notice), cursor)
    cursor = json.loads(json.dumps(cursor, sort_keys=True))  # saved and read back, as the cursor store does
    source._filing(poll, "X", 1, {"accessionNumber": second, "form": "D/A", "fileNumber": "021-1"}, date(2025, 1, 1),
                   form_d(13e6, True), cursor)
    amounts = [json.loads(item.raw)["amount_usd"] for item in poll.items]
    assert amounts == [10e6, 2e6, 1e6]  # 13M sold in all, counted once
