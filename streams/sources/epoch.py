"""Epoch AI's models CSV → ``model_release``, through the same adapter as ``backfill --format epoch``.

The file is fetched with ``If-None-Match`` / ``If-Modified-Since`` (a 304 costs nothing); rows whose
events were not sent before become events. Ids are the adapter's (model + organisation), so the live
source and a backfill of a downloaded copy never count a model twice. ``since`` drops rows published
before that day (the first poll otherwise replays the whole history). A row whose publication date
cannot be read becomes a dead letter (once).
"""

from __future__ import annotations

import csv
import hashlib
import io
from datetime import date

from streams.adapters import EPOCH_COLUMNS, Accounting, epoch_rows
from streams.sources.base import LiveSource, Poll
from streams.sources.polite import MALFORMED, PoliteClient, SourceError


class EpochSource(LiveSource):
    type = "epoch"

    async def poll(self, client: PoliteClient, cursor: dict) -> Poll:
        poll = Poll(self.name, cursor=cursor)
        try:
            page = await client.get(self.config.url, conditional=True, accept="text/csv, */*")
        except SourceError as exc:
            poll.errors.append(exc)
            return poll
        if page.not_modified:
            return poll
        try:
            text = page.content.decode("utf-8-sig")
        except UnicodeDecodeError:
            poll.errors.append(SourceError(MALFORMED, f"{page.url} is not UTF-8 text"))
            return poll
        header = next(csv.reader(io.StringIO(text)), [])
        missing = [c for c in EPOCH_COLUMNS if c not in header]
        if missing:
            poll.errors.append(SourceError(MALFORMED, f"{page.url} is not the Epoch models CSV: no column {missing[0]!r}"
                                                      f" (first columns: {', '.join(header[:5]) or 'none'})"))
            return poll
        seen = set(cursor.get("seen") or ())
        rejected = set(cursor.get("rejected") or ())
        since: date | None = self.config.since
        acc = Accounting()

        def unreadable(origin: str, row: dict) -> None:
            model = (row.get("Model") or "").strip()
            when = row.get("Publication date")
            mark = hashlib.sha256(f"{model}\x1f{row.get('Organization')}\x1f{when}".encode()).hexdigest()[:20]
            if mark in rejected:
                return
            rejected.add(mark)
            org = (row.get("Organization") or "").split(",")[0].strip()
            poll.malformed(f"{self.name}:{model}", {"kind": "model_release", "company": org, "model_name": model,
                                                     "occurred_at": when, "source": "epoch"},
                           f"unreadable publication date {when!r}")

        rows: dict[str, str] = {}  # origin → "new" | "known" | "early"
        for origin, event in epoch_rows(io.StringIO(text, newline=""), "epoch", acc, unreadable):
            if since is not None and date.fromisoformat(event["occurred_at"][:10]) < since:
                rows.setdefault(origin, "early")
                continue
            if event["event_id"] in seen:
                rows.setdefault(origin, "known")
                continue
            rows[origin] = "new"
            seen.add(event["event_id"])
            poll.event(f"{self.name}:{event['model_name']}", event)
        poll.fetched = acc.rows
        poll.unchanged = sum(1 for v in rows.values() if v == "known")
        poll.skipped = acc.skipped_total - acc.skipped.get("unreadable publication date", 0) + sum(
            1 for v in rows.values() if v == "early")
        poll.cursor = {"seen": sorted(seen), "rejected": sorted(rejected)}
        return poll
