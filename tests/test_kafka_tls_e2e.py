"""Kafka over TLS with client certificates: every client library (kafka-python admin and producer, the
Faust worker, the aiokafka sink) takes its TLS settings from AISIGNALS_KAFKA_SSL_*.

The embedded broker has no working TLS listener, so a TLS-terminating forwarder stands in front of it
(it requires a client certificate signed by the test's CA); the broker advertises the forwarder, so
every connection goes through TLS.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import sys

import pytest

from streams.broker import EmbeddedBroker, free_port
from tests.conftest import CONFORMANCE, ROOT, assert_conformance_tables, fetch
from tests.forwarder import Forwarder

pytestmark = pytest.mark.e2e


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, a server certificate for 127.0.0.1 and a client certificate, both signed by the CA."""
    d = tmp_path_factory.mktemp("pki")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=aisignals test CA",
            "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"))
    for name, extra in (("server", ["-addext", "subjectAltName=IP:127.0.0.1"]), ("client", [])):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN=aisignals {name}",
                "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.csr"), *extra)
        ext = d / f"{name}.ext"
        ext.write_text("subjectAltName=IP:127.0.0.1\n" if name == "server" else "extendedKeyUsage=clientAuth\n")
        openssl("x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / "ca.pem"), "-CAkey", str(d / "ca.key"),
                "-CAcreateserial", "-days", "2", "-out", str(d / f"{name}.pem"), "-extfile", str(ext))
    return d


@pytest.fixture
def tls_broker(tmp_path, pki):
    port = free_port()
    broker = EmbeddedBroker(tmp_path / "tansu.log", advertised_port=port)
    broker.start()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki / "ca.pem"))
    context.load_cert_chain(str(pki / "server.pem"), str(pki / "server.key"))
    context.verify_mode = ssl.CERT_REQUIRED  # mutual TLS: no client certificate, no connection
    forwarder = Forwarder(broker.port, port, tls=context)
    yield forwarder
    forwarder.close()
    broker.stop()


def backfill(bootstrap: str, db, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "aisignals", "backfill", str(CONFORMANCE / "stream.jsonl"),
                           "--bootstrap", bootstrap, "--db", str(db)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **env})


def test_backfill_over_mutual_tls(tmp_path, pki, tls_broker):
    env = {"AISIGNALS_KAFKA_SECURITY_PROTOCOL": "SSL", "AISIGNALS_KAFKA_SSL_CAFILE": str(pki / "ca.pem"),
           "AISIGNALS_KAFKA_SSL_CERTFILE": str(pki / "client.pem"), "AISIGNALS_KAFKA_SSL_KEYFILE": str(pki / "client.key")}
    db = tmp_path / "tls.duckdb"
    out = backfill(tls_broker.address, db, env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert fetch(db, "SELECT count(*) FROM events")[0][0] == 47
    assert_conformance_tables(db)
    assert tls_broker.handshake_failures == 0


def test_an_untrusted_broker_certificate_is_one_readable_line(tmp_path, pki, tls_broker):
    """The client does not trust the broker's CA: the command stops with one line saying what to check,
    and the client library's reason (certificate verify failed) is printed once, not a traceback."""
    env = {"AISIGNALS_KAFKA_SECURITY_PROTOCOL": "SSL", "AISIGNALS_KAFKA_SSL_CERTFILE": str(pki / "client.pem"),
           "AISIGNALS_KAFKA_SSL_KEYFILE": str(pki / "client.key")}
    out = backfill(tls_broker.address, tmp_path / "x.duckdb", env, timeout=180)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert f"aisignals: error: cannot talk to the Kafka broker at {tls_broker.address}" in out.stderr
    assert "AISIGNALS_KAFKA_* security settings" in out.stderr
    assert out.stderr.count("CERTIFICATE_VERIFY_FAILED") >= 1
    assert len(out.stderr.splitlines()) < 10
