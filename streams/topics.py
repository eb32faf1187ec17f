"""Topic names, partition counts, and explicit creation (the embedded broker must not auto-create)."""

from __future__ import annotations

from dataclasses import dataclass

# record headers
CONTROL = "aisignals-control"  # b"clock" | b"barrier": in-band control records, not events
ORIGIN = "aisignals-origin"  # where a raw line came from, e.g. "file.jsonl:12" or "http"
BATCH = "aisignals-batch"  # id of the backfill a record belongs to
FORMAT = "aisignals-format"  # b"batch": the record holds many raw events (bulk replay); b"lines": see LINES
FIRST_LINE = "aisignals-first-line"  # the line number of an ingest record's first line (FORMAT b"lines")
SENT = "aisignals-sent"  # wall-clock ms when the producer sent the event (for latency metrics)
CUT = "aisignals-cut"  # the length of a raw line sent cut short (streams.events.RAW_LIMIT)
MAX_REQUEST_BYTES = 8 * 1024 * 1024  # the largest produce request of our producers (a pack, a cut line, a batch)
CLOCK, BARRIER = b"clock", b"barrier"
# FORMAT of a record that holds many lines, a line break apart: on the ingest topic, raw lines that follow
# each other in an input file (origin: ORIGIN, the file's name, and FIRST_LINE); on the events topic,
# accepted events (SPEC §2 JSON), only on a backfill's private broker, whose one reader is the sink (on a
# shared cluster a record is one event)
LINES = b"lines"


@dataclass(frozen=True)
class Topics:
    """Every topic of the pipeline. Company-keyed topics have ``partitions`` partitions."""

    prefix: str = "aisignals"
    partitions: int = 4

    @property
    def ingest(self) -> str:
        """Raw events from producers; one partition, so that arrival order is global."""
        return f"{self.prefix}.ingest"

    @property
    def events(self) -> str:
        """Accepted events (SPEC §2 JSON), keyed by company_id; also carries in-band clock records."""
        return f"{self.prefix}.events"

    @property
    def facts(self) -> str:
        """Internal: compact per-partition batches of accepted facts and clock records for the company agents."""
        return f"{self.prefix}.facts"

    @property
    def late(self) -> str:
        return f"{self.prefix}.late"

    @property
    def dead_letters(self) -> str:
        return f"{self.prefix}.deadletters"

    @property
    def indicators(self) -> str:
        return f"{self.prefix}.indicators"

    @property
    def alerts(self) -> str:
        return f"{self.prefix}.alerts"

    def layout(self) -> dict[str, int]:
        n = self.partitions
        return {
            self.ingest: 1,
            self.events: n,
            self.facts: n,
            self.late: 1,
            self.dead_letters: 1,
            self.indicators: n,
            self.alerts: n,
        }
