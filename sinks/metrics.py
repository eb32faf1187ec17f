"""Prometheus metrics of every ai-signals process, read at scrape time from the parts' own counters.

Conventions: ``aisignals_`` prefix, ``_total`` counters, ``_seconds`` histograms, bounded labels.
Domain gauges exist only for a bounded top-N of companies.
"""

from __future__ import annotations

from prometheus_client import REGISTRY, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from importlib.metadata import PackageNotFoundError, version

try:
    VERSION = version("ai-signals")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    VERSION = "unknown"

TOP_N = 10


def _histogram(name: str, doc: str, hist) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc)
    family.add_metric([], hist.cumulative(), hist.sum)
    return family


class PipelineCollector(Collector):
    """Collects from whichever parts run in this process (worker, sink, delivery)."""

    def __init__(self, role: str, worker=None, sink=None, delivery=None, readiness=None) -> None:
        self.role, self.worker, self.sink, self.delivery = role, worker, sink, delivery
        self.readiness = readiness  # () -> (ready, {"broker": bool, ..., "reason": str})

    def collect(self):
        info = InfoMetricFamily("aisignals_build", "ai-signals version and the role of this process")
        info.add_metric([], {"version": VERSION, "role": self.role})
        yield info
        if self.readiness is not None:
            yield from self._readiness(*self.readiness())
        if self.worker is not None:
            yield from self._worker(self.worker)
        if self.sink is not None:
            yield from self._sink(self.sink)
        if self.delivery is not None:
            yield from self._delivery(self.delivery)

    def _readiness(self, ready: bool, parts: dict):
        up = GaugeMetricFamily("aisignals_ready", "1 when this part can work (the broker is reachable), by part",
                               labels=["part"])
        for part in ("broker", "worker", "sink"):
            if part in parts:
                up.add_metric([part], float(bool(parts[part])))
        yield up
        reason = InfoMetricFamily("aisignals_not_ready", "Why this process is not ready (empty when it is)")
        reason.add_metric([], {"reason": "" if ready else str(parts.get("reason", ""))})
        yield reason

    def _worker(self, worker):
        st = worker.stats
        ingested = CounterMetricFamily("aisignals_events_ingested", "Accepted events, by kind", labels=["kind"])
        for kind in ("hiring", "departure", "funding", "model_release"):
            ingested.add_metric([kind], st.accepted.get(kind, 0))
        yield ingested
        dead = CounterMetricFamily("aisignals_dead_letters", "Invalid input sent to the dead letters, by reason",
                                   labels=["reason"])
        for reason in ("not_json", "too_large", "not_object", "bad_kind", "bad_time", "invalid_field"):
            dead.add_metric([reason], st.dead_letters.get(reason, 0))
        yield dead
        yield CounterMetricFamily("aisignals_late_events", "Events older than the watermark", value=st.late)
        yield CounterMetricFamily("aisignals_duplicate_events", "Events whose event_id was already seen",
                                  value=st.duplicates)
        yield CounterMetricFamily("aisignals_indicator_rows_emitted", "Indicator rows emitted (inserted or corrected)",
                                  value=st.indicator_rows)
        alerts = CounterMetricFamily("aisignals_alert_changes", "Alert state changes published",
                                     labels=["rule", "severity", "status"])
        for (rule, severity, status), n in sorted(st.alert_changes.items()):
            alerts.add_metric([rule, severity, status], n)
        yield alerts
        yield _histogram("aisignals_processing_latency_seconds", "Event produced → its indicator rows emitted",
                         st.processing_latency)
        yield _histogram("aisignals_alert_latency_seconds", "Event produced → the alert state change it caused",
                         st.alert_latency)
        watermark = GaugeMetricFamily("aisignals_stream_time_seconds", "Greatest accepted occurred_at (Unix time)")
        if worker.sequencer.max_time_us is not None:
            watermark.add_metric([], worker.sequencer.max_time_us / 1e6)
        yield watermark
        drain = GaugeMetricFamily("aisignals_talent_drain_ratio",
                                  f"90-day talent-drain ratio on the latest day, top {TOP_N} companies",
                                  labels=["company"])
        funding = GaugeMetricFamily("aisignals_funding_usd_30d",
                                    f"Funding in the 30 days to the latest day, top {TOP_N} companies",
                                    labels=["company"])
        layoffs = GaugeMetricFamily("aisignals_layoffs_30d",
                                    f"People laid off in the 30 days to the latest day, top {TOP_N} companies",
                                    labels=["company"])
        attrition = GaugeMetricFamily("aisignals_attrition_90d",
                                      f"People who left (any reason but a layoff) in the 90 days to the latest day,"
                                      f" top {TOP_N} companies", labels=["company"])
        latest = []
        for engine in list(worker.engines.values()):
            day = engine.stream_day
            if day is None:
                continue
            for company, timeline in list(engine.timelines.items()):
                latest.append((company, timeline.totals(90, day), timeline.totals(30, day)))
        for company, t90, _ in sorted(latest, key=lambda x: (-x[1].talent_drain_ratio, x[0]))[:TOP_N]:
            drain.add_metric([company], t90.talent_drain_ratio)
        for company, _, t30 in sorted(latest, key=lambda x: (-x[2].funding_micro, x[0]))[:TOP_N]:
            funding.add_metric([company], t30.funding_usd)
        for company, _, t30 in sorted(latest, key=lambda x: (-x[2].layoffs, x[0]))[:TOP_N]:
            layoffs.add_metric([company], t30.layoffs)
        for company, t90, _ in sorted(latest, key=lambda x: (-x[1].attrition, x[0]))[:TOP_N]:
            attrition.add_metric([company], t90.attrition)
        yield drain
        yield funding
        yield layoffs
        yield attrition
        assigned = GaugeMetricFamily("aisignals_assigned_partitions", "Partitions assigned to this worker, by topic",
                                     labels=["topic"])
        try:
            tps = worker.app.consumer.assignment()
        except Exception:  # noqa: BLE001 - not started yet
            tps = set()
        by_topic: dict[str, int] = {}
        for tp in tps:
            by_topic[tp.topic] = by_topic.get(tp.topic, 0) + 1
        for topic, n in sorted(by_topic.items()):
            assigned.add_metric([topic], n)
        yield assigned

    def _sink(self, sink):
        rows = CounterMetricFamily("aisignals_sink_rows_written", "Rows written to DuckDB, by table", labels=["table"])
        for table in ("events", "indicators", "alerts", "dead_letters"):
            rows.add_metric([table], sink.rows_written.get(table, 0))
        yield rows
        yield CounterMetricFamily("aisignals_sink_flushes", "Committed DuckDB flushes", value=sink.flushes)
        yield CounterMetricFamily("aisignals_sink_flush_failures", "Failed DuckDB flushes", value=sink.flush_failures)
        yield CounterMetricFamily("aisignals_sink_lost_logs", "Logs found shorter than what the sink had read,"
                                  " or topics found re-created (the broker lost its data)", value=sink.lost_logs)
        yield _histogram("aisignals_sink_flush_duration_seconds", "Duration of one DuckDB flush", sink.flush_duration)
        lag = GaugeMetricFamily("aisignals_consumer_lag_messages",
                                "Messages behind the high watermark seen in fetch responses", labels=["topic", "partition"])
        for (topic, partition), n in sorted(sink.lag.items()):
            lag.add_metric([topic, str(partition)], n)
        yield lag

    def _delivery(self, delivery):
        fam = CounterMetricFamily("aisignals_webhook_deliveries", "Alert deliveries by receiver and outcome",
                                  labels=["receiver", "outcome"])
        for (receiver, outcome), n in sorted(delivery.counts.items()):
            fam.add_metric([receiver, outcome], n)
        yield fam


class SourcesCollector(Collector):
    """Live sources (``watch``, ``up --sources``): failures by kind and the last successful poll."""

    def __init__(self, stats) -> None:
        self.stats = stats

    def collect(self):
        errors = CounterMetricFamily("aisignals_source_errors", "Live-source failures, by source and kind",
                                     labels=["source", "kind"])
        for (source, kind), n in sorted(self.stats.errors.items()):
            errors.add_metric([source, kind], n)
        yield errors
        last = GaugeMetricFamily("aisignals_source_last_success_timestamp_seconds",
                                 "Unix time of the last poll of a live source that completed without failure",
                                 labels=["source"])
        for source in self.stats.sources:
            if source in self.stats.last_success:
                last.add_metric([source], self.stats.last_success[source])
        yield last


_sources: list[SourcesCollector] = []


def register_replacing(slot: list, collector) -> None:
    """Register ``collector`` on the default registry in place of the one ``slot`` held (a process that
    starts a part twice, as tests do, keeps one set of series)."""
    for old in slot:
        REGISTRY.unregister(old)
    slot[:] = [collector]
    REGISTRY.register(collector)


def register_sources(stats) -> SourcesCollector:
    """Expose live-source metrics on the default registry (replacing an earlier registration)."""
    collector = SourcesCollector(stats)
    register_replacing(_sources, collector)
    return collector


_registered: list[PipelineCollector] = []


def register(role: str, worker=None, sink=None, delivery=None, readiness=None) -> PipelineCollector:
    """Expose this process's parts on the default registry (replacing an earlier registration)."""
    for old in _registered:
        REGISTRY.unregister(old)
    _registered.clear()
    collector = PipelineCollector(role, worker, sink, delivery, readiness)
    REGISTRY.register(collector)
    _registered.append(collector)
    return collector


def serve_metrics(port: int, host: str = "127.0.0.1") -> None:
    """A bare /metrics endpoint for processes without the HTTP API (``worker``, ``sink``)."""
    start_http_server(port, addr=host)


