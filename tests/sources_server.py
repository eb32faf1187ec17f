"""A real local HTTP server that answers with recorded responses (tests/data/sources), standing in for
the Hugging Face Hub, Epoch AI and SEC EDGAR. It honours conditional requests like the real servers
(``If-None-Match`` / ``If-Modified-Since`` equal to the response's ``ETag`` / ``Last-Modified`` → 304)
and records every request it gets."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

DATA = Path(__file__).resolve().parent / "data" / "sources"


@dataclass
class Answer:
    status: int = 200
    body: bytes | str = b""  # bytes, or the name of a file in tests/data/sources
    headers: dict = field(default_factory=dict)  # "{base}" in a value is the server's base URL

    def content(self) -> bytes:
        if isinstance(self.body, str):
            return (DATA / self.body).read_bytes()
        return self.body


@dataclass
class Seen:
    at: float
    path: str
    query: dict
    headers: dict


class RecordedServer:
    def __init__(self) -> None:
        self.routes: dict[str, list[Answer]] = {}
        self.requests: list[Seen] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:  # noqa: N802
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                key = parts.path + (f"?cursor={query['cursor']}" if "cursor" in query else "")
                with server.lock:
                    server.requests.append(Seen(time.monotonic(), key, query, {k.lower(): v for k, v in self.headers.items()}))
                    script = server.routes.get(key)
                    answer = (script.pop(0) if len(script) > 1 else script[0]) if script else Answer(404, b"not found")
                headers = {k: v.replace("{base}", server.base) for k, v in answer.headers.items()}
                status, body = answer.status, answer.content()
                etag, modified = headers.get("ETag"), headers.get("Last-Modified")
                if status == 200 and ((etag and self.headers.get("If-None-Match") == etag)
                                      or (modified and self.headers.get("If-Modified-Since") == modified)):
                    status, body = 304, b""
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def route(self, key: str, *answers: Answer) -> None:
        """Answers for a path, in order; the last one repeats."""
        with self.lock:
            self.routes[key] = list(answers)

    def seen(self, prefix: str = "") -> list[Seen]:
        with self.lock:
            return [r for r in self.requests if r.path.startswith(prefix)]

    def forget(self) -> None:
        with self.lock:
            self.requests.clear()

    def __enter__(self) -> "RecordedServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


CIK = "0001999001"
SEC_UA = "ai-signals tests ops@example.org"


def serve_huggingface(server: RecordedServer, version: int, etag: str | None = None) -> None:
    """The model listing of `example-lab`, newest first, paginated with Link headers (real shape)."""
    pages = {1: ["hf_v1_page1.json", "hf_v1_page2.json"], 2: ["hf_v2_page1.json", "hf_v2_page2.json", "hf_v2_page3.json"]}[version]
    for i, name in enumerate(pages):
        key = "/api/models" if i == 0 else f"/api/models?cursor=v{version}p{i + 1}"
        headers = {"Content-Type": "application/json; charset=utf-8"}
        if i + 1 < len(pages):
            headers["Link"] = f'<{{base}}/api/models?author=example-lab&sort=createdAt&direction=-1&limit=4&cursor=v{version}p{i + 2}>; rel="next"'
        if i == 0 and etag:
            headers["ETag"] = etag
        server.route(key, Answer(200, name, headers))


def serve_epoch(server: RecordedServer, version: int) -> None:
    modified = {1: "Mon, 23 Nov 2026 06:00:00 GMT", 2: "Sun, 29 Nov 2026 06:00:00 GMT"}[version]
    server.route("/data/all_ai_models.csv", Answer(200, f"epoch_models_v{version}.csv",
                                                   {"Content-Type": "text/csv", "Last-Modified": modified}))


def serve_sec(server: RecordedServer, version: int) -> None:
    server.route(f"/submissions/CIK{CIK}.json", Answer(200, f"sec_submissions_v{version}.json",
                                                      {"Content-Type": "application/json", "ETag": f'"sub-v{version}"'}))
    server.route(f"/submissions/CIK{CIK}-submissions-001.json", Answer(200, f"CIK{CIK}-submissions-001.json",
                                                                      {"Content-Type": "application/json"}))
    for path in sorted(DATA.glob("formd_*.xml")):
        accession = path.stem.removeprefix("formd_")
        server.route(f"/Archives/edgar/data/{int(CIK)}/{accession.replace('-', '')}/primary_doc.xml",
                     Answer(200, path.name, {"Content-Type": "text/xml"}))


def sources_toml(base: str, state_dir: Path | None = None, **overrides) -> str:
    """A SOURCES.toml pointing every source at the local server (fast retries for tests)."""
    fast = "max_attempts = 3\nbackoff_seconds = 0.05\nmax_backoff_seconds = 0.2\ntimeout_seconds = 5\nrequests_per_second = 50\n"
    parts = [f'[watch]\nuser_agent = "ai-signals tests (ops@example.org)"\n'
             + (f'state_dir = "{state_dir}"\n' if state_dir else "")]
    parts.append(f'[[source]]\ntype = "huggingface"\norganizations = ["example-lab"]\nendpoint = "{base}"\n'
                 f'page_size = 4\nsince = 2025-01-01\n{fast}{overrides.get("huggingface", "")}')
    parts.append(f'[[source]]\ntype = "epoch"\nurl = "{base}/data/all_ai_models.csv"\nsince = 2020-01-01\n{fast}'
                 f'{overrides.get("epoch", "")}')
    parts.append(f'[[source]]\ntype = "sec_form_d"\nuser_agent = "{SEC_UA}"\ncompanies = {{ "Example Robotics" = {int(CIK)} }}\n'
                 f'submissions_url = "{base}/submissions/CIK{{cik}}.json"\narchives_url = "{base}/Archives/edgar/data"\n'
                 f'since = 2023-01-01\n{fast.replace("requests_per_second = 50", "requests_per_second = 10")}'
                 f'{overrides.get("sec_form_d", "")}')
    return "\n".join(_override(part) for part in parts)


def _override(table: str) -> str:
    """A later `key = value` line replaces an earlier one of the same key."""
    lines: dict[str, str] = {}
    for line in table.splitlines():
        key = line.split("=", 1)[0].strip() if "=" in line and not line.startswith("[") else line
        lines.pop(key, None)
        lines[key] = line
    return "\n".join(lines.values()) + "\n"
