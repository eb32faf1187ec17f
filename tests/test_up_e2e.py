"""A newcomer's first run, end to end: the built wheel installed into a fresh venv, `aisignals up --for N`
started from an empty directory, its dashboard in headless Chromium at 1280×800 while it runs.

Asserted: the wheel builds without warnings from our metadata and holds its data; the real-data replay
happens; the live trickle names no company of the bundled real data; nothing is written to the current
directory; the dashboard's alert feed shows each instance once and agrees with the header, marks
synthetic alerts, and no column is clipped. The screenshot goes to docs/dashboard.png (the README's).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
import venv
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, fetch
from tests.test_synthetic import real_company_ids

pytestmark = pytest.mark.e2e
RUN_SECONDS = 100
SCREENSHOT = ROOT / "docs" / "dashboard.png"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
                  "--disable-quic", "--disable-component-update", "--disable-sync"]
OUR_METADATA_WARNINGS = re.compile(r"deprecat|would be ignored|BuildBackendWarning|SetuptoolsWarning|Editable installation",
                                   re.IGNORECASE)


def clean_env() -> dict[str, str]:
    """The environment of a user's shell: nothing that points Python at this source tree."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "AISIGNALS_", "VIRTUAL_ENV"))}
    return {**env, "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The wheel built from this tree, installed with its dependencies into a fresh venv (pip's cache
    makes the dependencies quick after the first time)."""
    d = tmp_path_factory.mktemp("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--disable-pip-version-check",
                            "-w", str(d / "dist"), str(ROOT)], capture_output=True, text=True, timeout=600, env=clean_env())
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    noise = [line for line in (build.stdout + build.stderr).splitlines() if OUR_METADATA_WARNINGS.search(line)]
    assert not noise, "\n".join(noise[:20])
    wheel = next((d / "dist").glob("ai_signals-*.whl"))
    venv.EnvBuilder(with_pip=True, clear=True).create(d / "venv")
    python = d / "venv" / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)],
                             capture_output=True, text=True, timeout=900, env=clean_env(), cwd=d)
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    assert not [line for line in install.stderr.splitlines() if OUR_METADATA_WARNINGS.search(line)], install.stderr
    where = subprocess.run([str(python), "-c", "import aisignals, importlib.metadata as m;"
                            " print(aisignals.__file__); print(sorted(str(f) for f in m.files('ai-signals')))"],
                           capture_output=True, text=True, cwd=d, env=clean_env(), check=True).stdout
    assert "site-packages" in where.splitlines()[0] and str(ROOT) not in where.splitlines()[0]
    for packaged in ("aisignals/data/real/epoch_notable_ai_models.csv", "aisignals/data/real/aiwatch_positions.csv",
                     "aisignals/data/README.md", "sinks/static/dashboard.html", "processors/rules.toml",
                     "streams/aliases.toml", "licenses/LICENSE", "licenses/NOTICE"):
        assert packaged in where, packaged
    return d / "venv" / "bin"


@pytest.fixture(scope="module")
def up(installed, tmp_path_factory):
    """`aisignals up --for N` from an empty directory, with its DuckDB file somewhere else."""
    cwd = tmp_path_factory.mktemp("empty-cwd")
    db = tmp_path_factory.mktemp("db") / "up.duckdb"
    proc = subprocess.Popen([str(installed / "aisignals"), "up", "--for", str(RUN_SECONDS), "--port", "0", "--db", str(db)],
                            cwd=cwd, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out: list[str] = []
    url = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        out.append(line)
        m = re.search(r"dashboard (http://[\d.]+:\d+/)", line)
        if m:
            url = m.group(1)
            break
    reader = threading.Thread(target=lambda: out.extend(proc.stdout), daemon=True)
    reader.start()
    errors: list[str] = []
    threading.Thread(target=lambda: errors.extend(proc.stderr), daemon=True).start()
    run = {"proc": proc, "url": url, "db": db, "cwd": cwd, "out": out, "err": errors, "reader": reader}
    yield run
    if proc.poll() is None:
        proc.kill()
        proc.wait(30)


def state(url: str) -> dict:
    return httpx.get(f"{url}v1/dashboard/state", timeout=10).json()


def test_dashboard_at_1280_by_800(up):
    """While `up` runs: once the replay is done and the trickle has fired alerts, the page agrees with itself."""
    from playwright.sync_api import sync_playwright

    assert up["url"], "".join(up["out"]) + "".join(up["err"])
    deadline = time.monotonic() + RUN_SECONDS - 15
    s = {}
    while time.monotonic() < deadline:
        s = state(up["url"])
        if s["synthetic_events"] > 0 and any(a["synthetic"] and a["status"] == "firing" for a in s["alerts"]):
            break
        time.sleep(1)
    assert s.get("synthetic_events"), s  # the replay finished and the trickle runs
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("chromium is not installed (scripts/system-deps.sh installs it)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(up["url"])
            page.wait_for_selector("tr.alert-row", timeout=30_000)
            page.wait_for_selector("#chart svg polyline", state="attached", timeout=30_000)
            page.wait_for_timeout(500)
            seen = page.evaluate("""() => {
                const rows = [...document.querySelectorAll('#alerts tr.alert-row')];
                const clipped = [...document.querySelectorAll('#alerts th, #alerts td, main td, main th')]
                    .filter((c) => c.scrollWidth > c.clientWidth + 1 || c.getBoundingClientRect().right > innerWidth)
                    .map((c) => c.textContent);
                const tables = [...document.querySelectorAll('main table')].filter((t) =>
                    t.getBoundingClientRect().right > t.closest('section').getBoundingClientRect().right + 1).length;
                return {
                    header: Number(document.querySelector('#firing').textContent),
                    caption: Number(document.querySelector('#feed-count').textContent),
                    rows: rows.map((r) => ({fingerprint: r.dataset.fingerprint, starts: r.dataset.starts,
                        status: r.dataset.status, company: r.dataset.company,
                        synthetic: r.querySelector('.badge') !== null})),
                    marked: [...document.querySelectorAll('main tr.clickable')].filter((r) => r.querySelector('.badge'))
                        .map((r) => r.dataset.company),
                    unmarked: [...document.querySelectorAll('main tr.clickable')].filter((r) => !r.querySelector('.badge'))
                        .map((r) => r.dataset.company),
                    clipped, tables, pageWidth: document.documentElement.scrollWidth,
                };
            }""")
            SCREENSHOT.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(SCREENSHOT))
        finally:
            browser.close()
    rows = seen["rows"]
    firing = [r for r in rows if r["status"] == "firing"]
    assert rows and firing
    assert seen["header"] == seen["caption"] == len(firing)  # the header counts what the feed lists
    assert len({(r["fingerprint"], r["starts"]) for r in rows}) == len(rows)  # each instance once
    assert len({r["fingerprint"] for r in firing}) == len(firing)  # one firing instance per alert
    assert not seen["clipped"] and not seen["tables"] and seen["pageWidth"] <= 1280, seen
    # synthetic marks: exactly the companies that synthetic events name
    synthetic = {r[0] for r in fetch(up["db"], "SELECT company_id FROM events WHERE source = 'synthetic' UNION "
                                               "SELECT counterparty_id FROM events WHERE source = 'synthetic'")}
    assert seen["marked"] and set(seen["marked"]) <= synthetic
    assert not set(seen["unmarked"]) & synthetic
    assert any(r["synthetic"] for r in firing)
    assert SCREENSHOT.stat().st_size > 20_000


def test_up_replays_real_data_writes_nothing_in_the_cwd_and_invents_nothing_about_real_companies(up):
    proc = up["proc"]
    assert proc.wait(RUN_SECONDS + 120) == 0, "".join(up["err"])
    up["reader"].join(10)
    out, err = "".join(up["out"]), "".join(up["err"])
    assert "ai-signals is up" in out and "stopped" in out, out[-3000:]
    assert "Traceback" not in out + err and "ERROR" not in out + err and "view not updated" not in out, out + err
    assert list(up["cwd"].iterdir()) == []  # the DuckDB file, its WAL, the broker log: all beside --db
    db = up["db"]
    sources = dict(fetch(db, "SELECT source, count(*) FROM events GROUP BY source"))
    assert sources.get("epoch", 0) > 1000 and sources.get("aiwatch", 0) > 10_000  # the bundled real data
    assert sources.get("synthetic", 0) > 0  # then the trickle
    assert fetch(db, "SELECT count(*) FROM indicators")[0][0] > 1000
    assert fetch(db, "SELECT count(*) FROM alerts")[0][0] > 0
    named = {r[0] for r in fetch(db, "SELECT company_id FROM events WHERE source = 'synthetic' UNION "
                                     "SELECT counterparty_id FROM events WHERE source = 'synthetic' AND counterparty_id IS NOT NULL")}
    assert len(named) >= 10
    assert not named & real_company_ids(), sorted(named & real_company_ids())
    investors = {i for (raw,) in fetch(db, "SELECT payload->>'investors' FROM events WHERE source = 'synthetic'"
                                           " AND kind = 'funding'") for i in re.findall(r'"([^"]+)"', raw or "")}
    from streams.companies import normalizer

    assert not {normalizer().company_id(i) for i in investors} & real_company_ids()


def test_backfill_writes_nothing_in_the_cwd(tmp_path):
    """The other command that runs the worker: its files (DuckDB, WAL, broker log) all go beside --db."""
    from tests.conftest import CONFORMANCE

    cwd, elsewhere = tmp_path / "cwd", tmp_path / "db"
    cwd.mkdir()
    elsewhere.mkdir()
    proc = subprocess.run([sys.executable, "-m", "aisignals", "backfill", str(CONFORMANCE / "stream.jsonl"),
                           "--db", str(elsewhere / "b.duckdb")], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert list(cwd.iterdir()) == []
    assert fetch(elsewhere / "b.duckdb", "SELECT count(*) FROM events")[0][0] > 0


def test_rate_0_replays_the_real_data_and_invents_nothing(tmp_path):
    db = tmp_path / "real-only.duckdb"
    proc = subprocess.run([sys.executable, "-m", "aisignals", "up", "--rate", "0", "--for", "45", "--port", "0",
                           "--db", str(db)], cwd=tmp_path, capture_output=True, text=True, timeout=240,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr
    sources = dict(fetch(db, "SELECT source, count(*) FROM events GROUP BY source"))
    assert sources.get("aiwatch", 0) > 10_000 and "synthetic" not in sources, sources
