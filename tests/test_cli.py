"""Every command fails with one readable line, no traceback."""

from __future__ import annotations

import os

import orjson
import pytest

from aisignals.pipeline import hold_writer_lock

from tests.conftest import CONFORMANCE, aisignals


def one_line_error(proc):
    assert proc.returncode != 0
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def test_missing_file(tmp_path):
    line = one_line_error(aisignals("backfill", str(tmp_path / "nope.jsonl"), "--db", str(tmp_path / "x.duckdb"), check=False))
    assert "no such file" in line


def test_unwritable_db(tmp_path):
    line = one_line_error(aisignals("backfill", str(CONFORMANCE / "stream.jsonl"), "--db",
                                    str(tmp_path / "missing-dir" / "x.duckdb"), check=False))
    assert "does not exist" in line


def test_unreachable_bootstrap(tmp_path):
    line = one_line_error(aisignals("backfill", str(CONFORMANCE / "stream.jsonl"), "--db", str(tmp_path / "x.duckdb"),
                                    "--bootstrap", "127.0.0.1:1", check=False))
    assert "cannot reach" in line


def test_second_writer_of_one_file_is_refused(tmp_path):
    """Two pipelines writing one DuckDB file would interleave their transactions: the second is refused
    while the first holds the file, and the file is free again when the first ends."""
    db = tmp_path / "x.duckdb"
    aisignals("backfill", str(CONFORMANCE / "stream.jsonl"), "--db", str(db))
    held = hold_writer_lock(db)
    try:
        line = one_line_error(aisignals("backfill", str(CONFORMANCE / "stream.jsonl"), "--db", str(db), check=False))
        assert "being written by another aisignals process" in line
    finally:
        os.close(held)
    out = aisignals("backfill", str(CONFORMANCE / "late.jsonl"), "--db", str(db))
    assert "late" in out.stdout


def test_bad_arguments():
    assert "partitions" in one_line_error(aisignals("backfill", "x", "--db", "y", "--partitions", "0", check=False))
    assert "No such command" in one_line_error(aisignals("frobnicate", check=False))


def test_malformed_rules_file(tmp_path):
    rules = tmp_path / "rules.toml"
    rules.write_text("[talent_drain]\nmin_ratio = 'high'\n")
    line = one_line_error(aisignals("backfill", str(CONFORMANCE / "stream.jsonl"), "--db", str(tmp_path / "x.duckdb"),
                                    "--rules", str(rules), check=False))
    assert "talent_drain.min_ratio" in line
    rules.write_text("[talent_drain\n")
    assert "rules.toml" in one_line_error(aisignals("backfill", str(CONFORMANCE / "stream.jsonl"), "--db",
                                                    str(tmp_path / "x.duckdb"), "--rules", str(rules), check=False))


def test_input_that_is_not_utf8(tmp_path):
    """A CSV saved in Latin-1 is named in one line, not a traceback from the decoder."""
    path = tmp_path / "models.csv"
    path.write_bytes("Model,Organization,Publication date\nMod\u00e8le,\u00c9cole IA,2024-01-01\n".encode("latin-1"))
    line = one_line_error(aisignals("backfill", str(path), "--format", "epoch", "--db", str(tmp_path / "x.duckdb"),
                                    check=False))
    assert "models.csv: not UTF-8 text" in line


def test_invalid_setting_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("AISIGNALS_LATENESS_DAYS", "a week")
    line = one_line_error(aisignals("backfill", str(CONFORMANCE / "stream.jsonl"), "--db", str(tmp_path / "x.duckdb"),
                                    check=False))
    assert "lateness_days (AISIGNALS_LATENESS_DAYS)" in line


def test_query_errors(tmp_path):
    assert "no DuckDB file" in one_line_error(aisignals("query", "--db", str(tmp_path / "none.duckdb"), "SELECT 1", check=False))


def test_schema_is_the_models_json_schema():
    schema = orjson.loads(aisignals("schema").stdout)
    assert schema["discriminator"]["propertyName"] == "kind"
    assert set(schema["discriminator"]["mapping"]) == {"hiring", "departure", "funding", "model_release"}


@pytest.mark.e2e
def test_partition_mismatch_on_existing_topics_is_one_line(tmp_path, broker):
    from streams.admin import ensure_topics
    from streams.topics import Topics

    ensure_topics(broker.bootstrap, Topics(partitions=4))
    line = one_line_error(aisignals("backfill", str(CONFORMANCE / "stream.jsonl"), "--db", str(tmp_path / "x.duckdb"),
                                    "--bootstrap", broker.bootstrap, "--partitions", "2", check=False))
    assert "has 4 partitions" in line


def test_busy_consumer_thread_notice_is_not_an_error(caplog):
    import logging

    from aisignals.runtime import quiet_logs

    quiet_logs()
    log = logging.getLogger("faust.transport.drivers.aiokafka")
    with caplog.at_level(logging.ERROR, logger=log.name):
        log.error("[^--AIOKafkaConsumerThread]: Thread keepalive is not responding...")
        log.error("[^--AIOKafkaConsumerThread]: a real error")
    assert [r.getMessage() for r in caplog.records] == ["[^--AIOKafkaConsumerThread]: a real error"]


def test_repeated_client_errors_are_shown_once_a_minute(caplog):
    """A broker outage makes aiokafka log each failed reconnect; one line per message template remains."""
    import logging

    from aisignals.runtime import quiet_logs

    quiet_logs()
    client, ours = logging.getLogger("aiokafka.consumer.fetcher"), logging.getLogger("aisignals")
    with caplog.at_level(logging.ERROR):
        for _ in range(50):
            client.error("Failed fetch messages from %s: %s", 111, "NodeNotReadyError")
            client.error("Unable to update metadata from %s", [111])
            ours.error("the sink says %s", "something")
    messages = [r.getMessage() for r in caplog.records]
    assert messages.count("Failed fetch messages from 111: NodeNotReadyError") == 1
    assert messages.count("Unable to update metadata from [111]") == 1
    assert messages.count("the sink says something") == 50  # the project's own lines are never throttled


@pytest.mark.e2e
def test_topics_created_anew_have_a_new_incarnation(tmp_path):
    """Offsets are stored per incarnation of the topics: the same broker address restarted empty is not
    the same set of logs, and ensure_topics tells them apart by topic id."""
    from streams.admin import ensure_topics, incarnation
    from streams.broker import EmbeddedBroker
    from streams.topics import Topics

    first = EmbeddedBroker(tmp_path / "a.log")
    first.start()
    try:
        before = ensure_topics(first.bootstrap, Topics(partitions=2))
        assert ensure_topics(first.bootstrap, Topics(partitions=2)) == before  # nothing re-created
    finally:
        first.stop()
    again = EmbeddedBroker(tmp_path / "b.log", port=first.port)
    again.start()
    try:
        after = ensure_topics(again.bootstrap, Topics(partitions=2))
    finally:
        again.stop()
    assert set(before) == set(after) == set(Topics(partitions=2).layout())
    assert all(before.values()) and all(before[t] != after[t] for t in before)
    assert incarnation(before) != incarnation(after) and len(incarnation(before)) == 12
    assert incarnation({t: None for t in before}) == ""  # a broker without topic ids: one incarnation
