"""Secrets stay out of reprs and logs; SASL/TLS settings reach every client library."""

from __future__ import annotations

import ssl

from sinks.delivery import Receiver
from streams.security import aiokafka_kwargs, faust_kwargs, kafka_python_kwargs
from streams.settings import Settings


def test_secrets_are_not_in_reprs(monkeypatch):
    monkeypatch.setenv("AISIGNALS_TOKEN", "tok-123")
    monkeypatch.setenv("AISIGNALS_KAFKA_SASL_PASSWORD", "pw-456")
    settings = Settings()
    assert settings.token == "tok-123" and settings.kafka_sasl_password == "pw-456"
    assert "tok-123" not in repr(settings) and "pw-456" not in repr(settings)
    assert "hook-789" not in repr(Receiver("r", "http://x/", secret="hook-789"))


def test_sasl_settings_reach_every_client():
    s = Settings(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism="SCRAM-SHA-512",
                 kafka_sasl_username="svc", kafka_sasl_password="pw")
    for kwargs in (kafka_python_kwargs(s), aiokafka_kwargs(s)):
        assert kwargs["security_protocol"] == "SASL_PLAINTEXT" and kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
        assert kwargs["sasl_plain_username"] == "svc" and kwargs["sasl_plain_password"] == "pw"
    creds = faust_kwargs(s)["broker_credentials"]
    assert creds.username == "svc" and creds.mechanism.value == "SCRAM-SHA-512"


def test_tls_builds_a_verifying_context():
    s = Settings(kafka_security_protocol="SSL")
    context = aiokafka_kwargs(s)["ssl_context"]
    assert isinstance(context, ssl.SSLContext) and context.verify_mode == ssl.CERT_REQUIRED
    assert kafka_python_kwargs(Settings()) == {"security_protocol": "PLAINTEXT"}


def test_unreadable_tls_files_are_one_readable_error(tmp_path):
    import pytest

    from streams.broker import BrokerError

    with pytest.raises(BrokerError, match="cannot load the Kafka TLS files"):
        aiokafka_kwargs(Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=tmp_path / "missing.pem"))
    (tmp_path / "garbage.pem").write_text("not a certificate")
    with pytest.raises(BrokerError, match="cannot load the Kafka TLS files"):
        kafka_python_kwargs(Settings(kafka_security_protocol="SSL", kafka_ssl_certfile=tmp_path / "garbage.pem"))


def test_the_default_compression_is_installed():
    """The stages' aiokafka producers take ``producer_kwargs``: without its codec's library a producer
    fails to start."""
    import aiokafka.codec

    codec = Settings().kafka_compression
    assert Settings().producer_kwargs() == {"compression_type": codec} and codec == "snappy"
    assert getattr(aiokafka.codec, f"has_{codec}")()
    assert Settings(kafka_compression="none").producer_kwargs() == {}
