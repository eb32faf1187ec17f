"""HTTP for live sources, politely: a descriptive User-Agent, a request rate and a request budget per
poll, timeouts, conditional requests (``ETag`` / ``Last-Modified``), and retries with exponential
backoff and jitter on 429 and 5xx that honour ``Retry-After`` (tenacity)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import httpx
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

# failure kinds: the values of the ``kind`` label of aisignals_source_errors_total (a bounded set)
NETWORK, HTTP_4XX, HTTP_5XX, RATE_LIMITED, MALFORMED, BUDGET, INVALID_ITEM = (
    "network", "http_4xx", "http_5xx", "rate_limited", "malformed", "budget", "invalid_item")
KINDS = (NETWORK, HTTP_4XX, HTTP_5XX, RATE_LIMITED, MALFORMED, BUDGET, INVALID_ITEM)


class SourceError(Exception):
    """A source could not be read (or not completely); ``kind`` is one of :data:`KINDS`."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind

    def __str__(self) -> str:
        return " ".join(super().__str__().split())


class _Retryable(Exception):
    """A 429 or 5xx answer (or a transport failure) worth another attempt."""

    def __init__(self, kind: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.retry_after = retry_after


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds: a number of seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass
class Fetched:
    """A 200 answer, or ``not_modified`` (304) for a conditional request."""

    status: int
    content: bytes
    headers: httpx.Headers
    url: str

    @property
    def not_modified(self) -> bool:
        return self.status == 304

    def next_link(self) -> str | None:
        """The ``rel="next"`` URL of a ``Link`` header (RFC 8288), as the Hugging Face Hub paginates."""
        link = self.headers.get("link")
        if not link:
            return None
        for part in link.split(","):
            url, _, params = part.partition(";")
            if 'rel="next"' in params.replace(" ", "") or "rel=next" in params.replace(" ", ""):
                return url.strip().strip("<>")
        return None


class PoliteClient:
    """One source's HTTP client. ``validators`` (a dict the caller persists) maps a URL to its last
    ``ETag`` / ``Last-Modified``; they are sent back so an unchanged resource costs a 304."""

    def __init__(self, *, user_agent: str, timeout: float, max_requests: int, requests_per_second: float,
                 max_attempts: int, backoff_seconds: float, max_backoff_seconds: float,
                 max_retry_after_seconds: float, validators: dict | None = None) -> None:
        self.client = httpx.AsyncClient(timeout=timeout, follow_redirects=True,
                                        headers={"User-Agent": user_agent, "Accept-Encoding": "gzip, deflate"})
        self.max_requests = max_requests
        self.interval = 1.0 / requests_per_second
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.max_retry_after_seconds = max_retry_after_seconds
        self.validators: dict = validators if validators is not None else {}
        self.requests = 0
        self._next_start = 0.0
        self._gate = asyncio.Lock()

    async def close(self) -> None:
        await self.client.aclose()

    async def _pace(self) -> None:
        """At most ``requests_per_second`` request starts, and never more than the budget."""
        async with self._gate:
            if self.requests >= self.max_requests:
                raise SourceError(BUDGET, f"request budget of {self.max_requests} per poll used up")
            now = time.monotonic()
            if now < self._next_start:
                await asyncio.sleep(self._next_start - now)
            self._next_start = time.monotonic() + self.interval
            self.requests += 1

    def _wait(self, state) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, _Retryable) and exc.retry_after is not None:
            return exc.retry_after
        return wait_exponential_jitter(multiplier=self.backoff_seconds, max=self.max_backoff_seconds,
                                       jitter=self.backoff_seconds)(state)

    async def get(self, url: str, *, params: dict | None = None, conditional: bool = False,
                  accept: str | None = None) -> Fetched:
        """GET with retries. Raises :class:`SourceError` (kind ``network``, ``http_4xx``, ``http_5xx``,
        ``rate_limited`` or ``budget``) when no usable answer came."""
        full = str(httpx.URL(url, params=params)) if params else url
        headers = {"Accept": accept} if accept else {}
        if conditional:
            known = self.validators.get(full) or {}
            if known.get("etag"):
                headers["If-None-Match"] = known["etag"]
            if known.get("last_modified"):
                headers["If-Modified-Since"] = known["last_modified"]
        try:
            async for attempt in AsyncRetrying(stop=stop_after_attempt(self.max_attempts), wait=self._wait,
                                               retry=retry_if_exception_type(_Retryable), reraise=True):
                with attempt:
                    return await self._once(full, headers, conditional)
        except _Retryable as exc:
            raise SourceError(exc.kind, f"{exc} (gave up after {self.max_attempts} attempts)") from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def _once(self, url: str, headers: dict, conditional: bool) -> Fetched:
        await self._pace()
        try:
            response = await self.client.get(url, headers=headers)
        except httpx.TimeoutException as exc:
            raise _Retryable(NETWORK, f"timed out: GET {url} ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise _Retryable(NETWORK, f"cannot reach {httpx.URL(url).host}: {exc or type(exc).__name__}") from None
        status = response.status_code
        if status == 429 or status >= 500:
            wait = retry_after_seconds(response.headers.get("retry-after"))
            kind = RATE_LIMITED if status == 429 else HTTP_5XX
            if wait is not None and wait > self.max_retry_after_seconds:
                raise SourceError(kind, f"HTTP {status} from GET {url} asks to retry after {wait:.0f} s,"
                                        f" more than max_retry_after_seconds ({self.max_retry_after_seconds:.0f})")
            raise _Retryable(kind, f"HTTP {status} from GET {url}", wait)
        if status == 304 and conditional:
            return Fetched(304, b"", response.headers, url)
        if status != 200:
            raise SourceError(HTTP_4XX if 400 <= status < 500 else HTTP_5XX, f"HTTP {status} from GET {url}")
        if conditional:
            seen = {k: response.headers[h] for k, h in (("etag", "etag"), ("last_modified", "last-modified"))
                    if response.headers.get(h)}
            if seen:
                self.validators[url] = seen
            else:
                self.validators.pop(url, None)
        return Fetched(200, response.content, response.headers, url)
