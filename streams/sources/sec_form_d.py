"""SEC EDGAR Form D → ``funding``.

For each issuer (``companies = { "Name" = CIK }``) it reads the submissions JSON
(``data.sec.gov/submissions/CIK##########.json``: ``filings.recent`` holds parallel arrays ``form``,
``accessionNumber``, ``filingDate``, ``primaryDocument``…; older filings are in the files listed under
``filings.files``, read on the first poll when ``since`` reaches back to them), and for every new
``D`` or ``D/A`` the filing's primary XML document (``primary_doc.xml``; the ``xslFormDX01/`` prefix in
``primaryDocument`` is EDGAR's rendered view and is dropped).

**Money is counted once per offering.** ``totalAmountSold`` is cumulative: everything sold in the
offering so far. A ``D/A`` restates the whole notice and names the filing it amends
(``previousAccessionNumber``), so amendments chain back to one original offering. An event carries
``amount_usd`` = the filing's ``totalAmountSold`` minus what earlier filings of the same offering
already counted; an amendment that sold nothing more (or restates a lower total) makes no event.
The sum of ``amount_usd`` over an offering therefore equals its highest reported total. An amendment
whose original was never seen (filed before ``since``) counts its whole total once. Event ids are
``sec-<accession number>``; ``occurred_at`` is the filing date (the day the money was reported).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import date

import orjson

from streams.sources.base import LiveSource, Poll
from streams.sources.polite import MALFORMED, PoliteClient, SourceError

FORMS = ("D", "D/A")
COLUMNS = ("accessionNumber", "filingDate", "form", "primaryDocument")


def _columns(block, where: str) -> list[dict]:
    """Rows of EDGAR's column-oriented filings block (``filings.recent`` or an older file)."""
    if not isinstance(block, dict) or not all(isinstance(block.get(c), list) for c in COLUMNS[:3]):
        raise SourceError(MALFORMED, f"{where}: no accessionNumber/filingDate/form arrays")
    n = len(block["accessionNumber"])
    names = [c for c in (*COLUMNS, "fileNumber") if isinstance(block.get(c), list)]
    if any(len(block[c]) != n for c in names):
        raise SourceError(MALFORMED, f"{where}: the filing arrays have different lengths")
    return [{c: block[c][i] for c in names} for i in range(n)]


def _text(root: ET.Element, path: str) -> str | None:
    found = root.find(path)
    return found.text.strip() if found is not None and found.text and found.text.strip() else None


def parse_form_d(content: bytes) -> dict:
    """The fields of a Form D primary document this source uses (namespaces ignored)."""
    root = ET.fromstring(content)
    for element in root.iter():
        if isinstance(element.tag, str) and "}" in element.tag:
            element.tag = element.tag.split("}", 1)[1]
    if root.tag != "edgarSubmission":
        raise ValueError(f"root element is <{root.tag}>, not <edgarSubmission>")
    debt = (_text(root, ".//typesOfSecuritiesOffered/isDebtType") or "").lower() == "true"
    equity_like = any((_text(root, f".//typesOfSecuritiesOffered/{t}") or "").lower() == "true" for t in (
        "isEquityType", "isOptionToAcquireType", "isSecurityToBeAcquiredType", "isPooledInvestmentFundType",
        "isTenantInCommonType", "isMineralPropertyType", "isOtherType"))
    return {
        "sold": _text(root, ".//offeringData/offeringSalesAmounts/totalAmountSold"),
        "offered": _text(root, ".//offeringData/offeringSalesAmounts/totalOfferingAmount"),
        "amendment": (_text(root, ".//typeOfFiling/newOrAmendment/isAmendment") or "").lower() == "true",
        "previous": _text(root, ".//typeOfFiling/newOrAmendment/previousAccessionNumber"),
        "first_sale": _text(root, ".//typeOfFiling/dateOfFirstSale/value"),
        "debt_only": debt and not equity_like,
    }


class SecFormDSource(LiveSource):
    type = "sec_form_d"

    async def poll(self, client: PoliteClient, cursor: dict) -> Poll:
        poll = Poll(self.name)
        state = dict(cursor.get("companies") or {})
        for company, cik in self.config.companies.items():
            key = str(cik)
            mine = state.get(key) or {"known": {}, "counted": {}}
            mine = {"known": dict(mine.get("known") or {}), "counted": dict(mine.get("counted") or {}),
                    "history": bool(mine.get("history"))}
            try:
                await self._company(client, poll, company, cik, mine)
            except SourceError as exc:
                poll.errors.append(SourceError(exc.kind, f"{company} (CIK {cik}): {exc}"))
            state[key] = mine  # what was processed stays processed, failure or not
        poll.cursor = {"companies": state}
        return poll

    async def _company(self, client: PoliteClient, poll: Poll, company: str, cik: int, mine: dict) -> None:
        url = self.config.submissions_url.format(cik=f"{cik:010d}")
        page = await client.get(url, conditional=True, accept="application/json")
        if page.not_modified:
            return
        try:
            data = orjson.loads(page.content)
        except orjson.JSONDecodeError:
            raise SourceError(MALFORMED, f"{url} did not answer JSON") from None
        if not isinstance(data, dict) or not isinstance(data.get("filings"), dict):
            raise SourceError(MALFORMED, f"{url} has no 'filings' object")
        rows = _columns(data["filings"].get("recent"), f"{url} filings.recent")
        since: date | None = self.config.since
        if not mine["history"] and since is not None:  # first poll: older pages back to `since`
            base = url.rsplit("/", 1)[0]
            for older in data["filings"].get("files") or []:
                if not isinstance(older, dict) or not isinstance(older.get("name"), str):
                    raise SourceError(MALFORMED, f"{url} filings.files lists something that is not a file")
                if str(older.get("filingTo") or "9999") < since.isoformat():
                    continue
                extra = await client.get(f"{base}/{older['name']}", accept="application/json")
                try:
                    rows += _columns(orjson.loads(extra.content), extra.url)
                except orjson.JSONDecodeError:
                    raise SourceError(MALFORMED, f"{extra.url} did not answer JSON") from None
        filings = sorted((r for r in rows if r.get("form") in FORMS), key=lambda r: (str(r["filingDate"]), r["accessionNumber"]))
        for row in filings:
            accession = row["accessionNumber"]
            if accession in mine["known"]:
                poll.unchanged += 1
                continue
            try:
                filed = date.fromisoformat(str(row["filingDate"]))
            except ValueError:
                raise SourceError(MALFORMED, f"{url}: filing {accession} has filingDate {row['filingDate']!r}") from None
            if since is not None and filed < since:
                poll.skipped += 1
                continue
            poll.fetched += 1
            document = str(row.get("primaryDocument") or "primary_doc.xml").rsplit("/", 1)[-1]
            doc_url = f"{self.config.archives_url.rstrip('/')}/{cik}/{accession.replace('-', '')}/{document}"
            xml = await client.get(doc_url, accept="application/xml, text/xml, */*")  # a failure stops this company here
            self._filing(poll, company, cik, row, filed, xml.content, mine)
        mine["history"] = True  # every filing back to `since` is processed: older files are not read again

    def _filing(self, poll: Poll, company: str, cik: int, row: dict, filed: date, content: bytes, mine: dict) -> None:
        accession, form = row["accessionNumber"], row["form"]
        origin = f"{self.name}:{accession}"
        base = {"event_id": f"sec-{accession}", "kind": "funding", "company": company, "occurred_at": filed.isoformat(),
                "source": "sec_form_d", "sec_cik": f"{cik:010d}", "sec_accession": accession, "sec_form": form}
        try:
            doc = parse_form_d(content)
        except (ET.ParseError, ValueError) as exc:
            mine["known"][accession] = {"offering": accession, "sold": None}
            poll.malformed(origin, content[:60_000], f"primary document is not a Form D: {exc}")
            return
        try:
            sold = float((doc["sold"] or "").replace(",", "").replace("$", ""))
            if sold < 0 or sold != sold:
                raise ValueError
        except ValueError:
            mine["known"][accession] = {"offering": accession, "sold": None}
            poll.malformed(origin, {**base, "amount_usd": doc["sold"]}, f"totalAmountSold is {doc['sold']!r}")
            return
        offering = accession
        if form == "D/A" or doc["amendment"]:
            previous = doc["previous"]
            if previous and previous in mine["known"]:
                offering = mine["known"][previous]["offering"]
            elif previous:
                offering = previous
            elif row.get("fileNumber"):  # no previousAccessionNumber: the offering's file number links them
                offering = next((k["offering"] for k in mine["known"].values() if k.get("file") == row["fileNumber"]), accession)
        counted = float(mine["counted"].get(offering, 0.0))
        mine["known"][accession] = {"offering": offering, "sold": sold, **({"file": row["fileNumber"]} if row.get("fileNumber") else {})}
        if sold <= counted:
            if sold == counted == 0:
                poll.skipped += 1  # nothing sold yet: no funding to report
            else:
                poll.unchanged += 1  # nothing sold since the notice that was counted (or a lower restatement)
            return
        mine["counted"][offering] = sold
        event = {**base, "amount_usd": sold - counted, "offering_amount_sold": sold, "sec_offering": offering}
        if doc["debt_only"]:
            event["round"] = "debt"
        poll.event(origin, event)
