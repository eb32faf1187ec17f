"""`worker`, `sink` and `serve` with `--bootstrap` while the broker goes away and comes back.

Two ways a broker comes back: with its data (a Kafka cluster with durable storage; shown by cutting
the network path to a running broker and restoring it), and empty (Tansu's memory engine restarted
on the same port). Either way the service reports not-ready, does not crash, and resumes; the tables
end exactly as the conformance vectors say.
"""

from __future__ import annotations

import time

import httpx
import orjson
import pytest

from streams.broker import EmbeddedBroker, free_port
from tests.conftest import CONFORMANCE, aisignals, assert_conformance_tables, conformance_instances, conformance_rows, fetch
from tests.forwarder import Forwarder
from tests.test_cluster_parts_e2e import start, stop, wait_for

pytestmark = pytest.mark.e2e


def halves(tmp_path):
    """The conformance stream in two files, in order: one before the outage, one after."""
    lines = (CONFORMANCE / "stream.jsonl").read_text().splitlines(keepends=True)
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    first.write_text("".join(lines[: len(lines) // 2]))
    second.write_text("".join(lines[len(lines) // 2:]))
    return first, second, lines


def unique_events(path) -> int:
    return len({orjson.loads(line)["event_id"] for line in path.read_text().splitlines() if line.strip()})


def readiness(port: int) -> dict[str, str]:
    """The readiness series of one process's /metrics, by series name."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {line.rsplit(" ", 1)[0]: line.rsplit(" ", 1)[1] for line in text.splitlines()
            if line.startswith(("aisignals_ready{", "aisignals_not_ready_info{", "aisignals_sink_lost_logs_total "))}


def eventually(check, timeout: float = 30.0):
    """The first truthy value of check() within timeout (a process may be between two answers)."""
    deadline, value = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            value = check()
        except (httpx.HTTPError, KeyError):
            value = None
        if value:
            return value
        time.sleep(0.5)
    return value


def test_a_broker_that_comes_back_with_its_data(tmp_path):
    proxy_port = free_port()
    broker = EmbeddedBroker(tmp_path / "tansu.log", advertised_port=proxy_port)
    broker.start()
    proxy = Forwarder(broker.port, proxy_port)
    db, common = tmp_path / "o.duckdb", ["--bootstrap", proxy.address]
    first, second, lines = halves(tmp_path)
    ports = {"worker": free_port(), "sink": free_port(), "http": free_port()}
    sink = start("sink", *common, "--db", str(db), "--metrics-port", str(ports["sink"]))
    worker = start("worker", *common, "--db", str(db), "--metrics-port", str(ports["worker"]))
    serve = start("serve", *common, "--db", str(db), "--port", str(ports["http"]))
    try:
        aisignals("produce", str(first), *common)
        assert wait_for(db, "SELECT count(*) FROM events", unique_events(first)) == unique_events(first)

        proxy.cut()
        for part in ("worker", "sink"):
            down = eventually(lambda: readiness(ports[part])['aisignals_ready{part="broker"}'] == "0.0" and readiness(ports[part]))
            assert down, part
            assert f'aisignals_not_ready_info{{reason="cannot reach the Kafka broker at {proxy.address}"}}' in down
        http = f"http://127.0.0.1:{ports['http']}/"
        r = httpx.get(f"{http}readyz", timeout=10)
        assert r.status_code == 503 and r.json()["broker"] is False
        assert r.json()["reason"] == f"cannot reach the Kafka broker at {proxy.address}"
        metrics = httpx.get(f"{http}metrics", timeout=10).text  # `serve` says so on /metrics too
        assert 'aisignals_ready{part="broker"} 0.0' in metrics and 'role="http"' in metrics
        assert f'aisignals_not_ready_info{{reason="cannot reach the Kafka broker at {proxy.address}"}}' in metrics
        started = time.monotonic()
        r = httpx.post(f"{http}v1/events", content=lines[0], timeout=60)
        assert r.status_code == 503 and "Kafka broker did not take the events" in r.json()["detail"]
        assert time.monotonic() - started < 20  # an answer, not a hang until the client gives up
        time.sleep(5)
        assert (worker.poll(), sink.poll(), serve.poll()) == (None, None, None)  # no crash, no restart loop

        proxy.restore()
        for part in ("worker", "sink"):
            assert eventually(lambda: readiness(ports[part])['aisignals_ready{part="broker"}'] == "1.0"), part
        assert eventually(lambda: httpx.get(f"{http}readyz", timeout=10).status_code == 200)
        aisignals("produce", str(second), *common)
        assert wait_for(db, "SELECT count(*) FROM indicators", conformance_rows()) == conformance_rows()
        assert wait_for(db, "SELECT count(*) FROM alerts", conformance_instances()) == conformance_instances()
    finally:
        outputs = {"worker": stop(worker), "sink": stop(sink)}
        serve.terminate()
        serve.wait(30)
        proxy.close()
        broker.stop()
    assert fetch(db, "SELECT count(*) FROM events")[0][0] == 47
    assert_conformance_tables(db)
    for part, out in outputs.items():
        assert f"not ready: cannot reach the Kafka broker at {proxy.address}" in out, part
        assert "ready again after" in out, f"{part}: {out}"
        assert len(out.splitlines()) < 40, out  # the clients' reconnect errors are not repeated every 100 ms


def test_a_broker_that_comes_back_empty(tmp_path):
    """Tansu's memory engine restarts with no topics, offsets or groups. The topics are created again, the
    sink reads the new logs from their start, the worker keeps its state; what was stored stays.

    After the restart the second half is sent, then the first half again (duplicates, which change
    nothing): the new ingest log grows past the positions read in the old one, so a part that kept its
    old offsets would skip the second half."""
    broker = EmbeddedBroker(tmp_path / "tansu.log")
    broker.start()
    db, common = tmp_path / "e.duckdb", ["--bootstrap", broker.bootstrap]
    first, second, _ = halves(tmp_path)
    ports = {"worker": free_port(), "sink": free_port()}
    sink = start("sink", *common, "--db", str(db), "--metrics-port", str(ports["sink"]))
    worker = start("worker", *common, "--db", str(db), "--metrics-port", str(ports["worker"]))
    again = None
    try:
        aisignals("produce", str(first), *common)
        assert wait_for(db, "SELECT count(*) FROM events", unique_events(first)) == unique_events(first)

        broker.stop()
        for part in ("worker", "sink"):
            assert eventually(lambda: readiness(ports[part])['aisignals_ready{part="broker"}'] == "0.0"), part
        again = EmbeddedBroker(tmp_path / "tansu-again.log", port=broker.port)
        again.start()
        for part in ("worker", "sink"):
            assert eventually(lambda: readiness(ports[part])['aisignals_ready{part="broker"}'] == "1.0"), part

        aisignals("produce", str(second), str(first), *common)
        assert wait_for(db, "SELECT count(*) FROM events", 47) == 47
        assert wait_for(db, "SELECT count(*) FROM indicators", conformance_rows()) == conformance_rows()
        assert wait_for(db, "SELECT count(*) FROM alerts", conformance_instances()) == conformance_instances()
        assert float(readiness(ports["sink"])["aisignals_sink_lost_logs_total"]) > 0
    finally:
        outputs = {"worker": stop(worker), "sink": stop(sink)}
        broker.stop()
        if again is not None:
            again.stop()
    assert_conformance_tables(db)
    assert "the broker lost this log" in outputs["sink"] or "topics created anew" in outputs["sink"]
    # a restart shorter than the 1 s readiness poll shows only in the next topic check
    assert "ready again after" in outputs["worker"] or "topics created anew" in outputs["worker"]
    assert fetch(db, "SELECT count(*), count(DISTINCT event_id) FROM events") == [(47, 47)]
