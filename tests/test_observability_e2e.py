"""Metrics a real Prometheus scrapes, promtool-valid deploy files, a Grafana dashboard of real metrics,
the built-in dashboard in headless Chromium, and a docker-compose file that holds together."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import httpx
import pytest
import yaml

from streams.settings import Settings
from tests.conftest import CONFORMANCE, ROOT, aisignals, conformance_instances, fetch
from tests.sources_server import Answer, RecordedServer
from tests.test_live_e2e import free_port

DEPLOY = ROOT / "deploy"
ARTIFACTS = ROOT / "artifacts"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed (.ci/run installs it)")
    return path


def metric_names(exposition: str) -> set[str]:
    return {line.split("{")[0].split(" ")[0] for line in exposition.splitlines() if line and not line.startswith("#")}


CONFORMANCE_INSTANCES = conformance_instances()


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    d = tmp_path_factory.mktemp("obs")
    db = d / "obs.duckdb"
    hooks = d / "hooks.toml"  # a receiver nobody listens on: deliveries end in the delivery dead letters
    hooks.write_text(f'[[webhook]]\nname = "nobody"\nurl = "http://127.0.0.1:{free_port()}/"\nmax_attempts = 1\n')
    # live sources that add no events: a Hub organisation with no models, and an Epoch URL that fails,
    # so the source metrics have samples (last success, errors)
    sources_server = RecordedServer().__enter__()
    sources_server.route("/api/models", Answer(200, b"[]", {"Content-Type": "application/json"}))
    sources_server.route("/data/all_ai_models.csv", Answer(500, b"down"))
    sources = d / "sources.toml"
    sources.write_text(f'[[source]]\ntype = "huggingface"\norganizations = ["nobody"]\nendpoint = "{sources_server.base}"\n'
                       f'[[source]]\ntype = "epoch"\nurl = "{sources_server.base}/data/all_ai_models.csv"\nmax_attempts = 1\n')
    proc = subprocess.Popen([sys.executable, "-m", "aisignals", "up", "--no-demo", "--port", "0", "--db", str(db),
                             "--webhooks", str(hooks), "--sources", str(sources)],
                            cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    url = broker = None
    for _ in range(200):
        line = proc.stdout.readline()
        m = re.search(r"dashboard (http://[\d.]+:\d+/) · broker ([\d.]+:\d+)", line or "")
        if m:
            url, broker = m.groups()
            break
    assert url
    import threading
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
    # a backfill into the running pipeline, through the kafka-python producer
    aisignals("produce", str(CONFORMANCE / "stream.jsonl"), str(CONFORMANCE / "bad.jsonl"), "--bootstrap", broker)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if fetch(db, "SELECT count(*) FROM alerts")[0][0] == CONFORMANCE_INSTANCES:
                break
        except Exception:  # noqa: BLE001 - not created yet
            pass
        time.sleep(0.3)
    yield {"url": url, "broker": broker, "db": db, "dir": d}
    proc.send_signal(signal.SIGINT)
    proc.wait(60)
    sources_server.__exit__(None, None, None)


def test_real_prometheus_scrapes_the_pipeline(running):
    config = (DEPLOY / "prometheus.yml").read_text()
    port = running["url"].rstrip("/").rsplit(":", 1)[1]
    config = config.replace('"http:8000"', f'"127.0.0.1:{port}"').replace("scrape_interval: 5s", "scrape_interval: 1s")
    d = running["dir"]
    (d / "prometheus.yml").write_text(config)
    shutil.copytree(DEPLOY / "rules", d / "rules", dirs_exist_ok=True)
    prom_port = free_port()
    prom = subprocess.Popen([tool("prometheus"), f"--config.file={d / 'prometheus.yml'}", f"--storage.tsdb.path={d / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{prom_port}"], stdout=open(d / "prom.log", "wb"),
                            stderr=subprocess.STDOUT)
    try:
        accepted = fetch(running["db"], "SELECT count(*) FROM events WHERE NOT late")[0][0]
        api = f"http://127.0.0.1:{prom_port}/api/v1/query"

        def query(q):
            try:
                result = httpx.get(api, params={"query": q}, timeout=5).json()["data"]["result"]
            except (httpx.HTTPError, KeyError, ValueError):
                return None
            return float(result[0]["value"][1]) if result else None

        deadline = time.monotonic() + 60
        total = samples = None
        while time.monotonic() < deadline:
            total = query("sum(aisignals_events_ingested_total)")
            samples = query("sum(aisignals_processing_latency_seconds_count)")
            if total == accepted and samples:
                break
            time.sleep(0.5)
        assert total == accepted == 47
        assert samples and samples > 0
        assert query('sum(aisignals_dead_letters_total)') == 8
    finally:
        prom.terminate()
        prom.wait(10)


def test_promtool_checks(running):
    promtool = tool("promtool")
    subprocess.run([promtool, "check", "config", str(DEPLOY / "prometheus.yml")], check=True, capture_output=True)
    subprocess.run([promtool, "check", "rules", *map(str, sorted((DEPLOY / "rules").glob("*.yml")))], check=True,
                   capture_output=True)
    exposition = httpx.get(f"{running['url']}metrics", timeout=5).text
    check = subprocess.run([promtool, "check", "metrics"], input=exposition, text=True, capture_output=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_grafana_dashboard_uses_only_exported_metrics(running):
    exported = metric_names(httpx.get(f"{running['url']}metrics", timeout=5).text)
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "aisignals.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert exprs
    # SPEC 1.1: workforce reductions are shown apart from the talent drain
    assert any("aisignals_layoffs_30d" in e for e in exprs) and any("aisignals_attrition_90d" in e for e in exprs)
    assert any('rule="workforce_reduction"' in e for e in exprs)
    for expr in exprs:
        for name in re.findall(r"\baisignals_[a-z0-9_]+", expr):
            assert name in exported, f"{name} (in {expr!r}) is not exported"
    rules = [r["expr"] for f in (DEPLOY / "rules").glob("*.yml") for g in yaml.safe_load(f.read_text())["groups"]
             for r in g["rules"]]
    for expr in rules:
        for name in re.findall(r"\baisignals_[a-z0-9_]+", expr):
            assert name in exported, f"{name} (in a rule) is not exported"


def test_dashboard_in_headless_chromium(running):
    """Debian's Chromium, driven by Playwright (no browser download), renders alert rows and charts."""
    from playwright.sync_api import sync_playwright

    chromium = tool("chromium")
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "dashboard.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS[1:])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(running["url"])
            page.wait_for_function(f"document.querySelectorAll('tr.alert-row').length >= {CONFORMANCE_INSTANCES}",
                                   timeout=30_000)
            page.wait_for_selector("#chart svg polyline", state="attached", timeout=30_000)
            rows = page.locator("tr.alert-row").all_inner_texts()
            polylines = page.locator("#chart svg polyline").count()
            health = page.locator("#health").inner_text()
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert len(rows) == CONFORMANCE_INSTANCES and any("talent_poaching" in r and "alpha-ai" in r for r in rows)
    assert polylines == 4  # hires, attrition, layoffs and drain ratio of the top company
    assert "ready yes" in health.replace("\n", " ")
    assert shot.exists() and shot.stat().st_size > 10_000


def test_docker_compose_holds_together():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"kafka", "init-topics", "worker-1", "worker-2", "sink", "http", "prometheus", "alertmanager", "grafana"} <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft
    assert services["prometheus"]["image"].startswith("prom/prometheus:")
    assert services["alertmanager"]["image"].startswith("prom/alertmanager:")
    assert services["grafana"]["image"].startswith("grafana/grafana:")
    for name in ("worker-1", "worker-2"):
        assert services[name]["command"][:2] == ["aisignals", "worker"]
    assert "AISIGNALS_TOKEN" in services["http"]["environment"]
    for svc in services.values():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{source} is missing"
    # ports agree with the settings and with the scrape configuration
    assert services["http"]["ports"] == [f"{Settings().port}:{Settings().port}"]
    prom = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    targets = {t for job in prom["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    assert targets == {f"http:{Settings().port}", "worker-1:9101", "worker-2:9101", "sink:9102"}
    assert "9101" in services["worker-1"]["command"] and "9102" in services["sink"]["command"]
    for rule_file in prom["rule_files"]:
        assert (DEPLOY / rule_file).exists()
    grafana_files = [DEPLOY / "grafana/provisioning/datasources/prometheus.yml",
                     DEPLOY / "grafana/provisioning/dashboards/aisignals.yml"]
    assert all(f.exists() for f in grafana_files)
    assert (ROOT / "Dockerfile").exists()
