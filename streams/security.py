"""Kafka client keyword arguments from the settings, in each client library's own terms: connection
security (SASL and TLS), and the codec of the stages' producers.

Secrets are read from the settings (``AISIGNALS_KAFKA_SASL_PASSWORD`` …) and never logged: the
settings object hides them from its repr.
"""

from __future__ import annotations

import ssl

from streams.autocreate import refuse_auto_create
from streams.broker import BrokerError
from streams.settings import Settings


def _ssl_context(settings: Settings) -> ssl.SSLContext | None:
    if settings.kafka_security_protocol not in ("SSL", "SASL_SSL"):
        return None
    try:
        context = ssl.create_default_context(cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None)
        if settings.kafka_ssl_certfile:
            context.load_cert_chain(str(settings.kafka_ssl_certfile),
                                    str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None)
    except (OSError, ssl.SSLError) as exc:  # a missing or unreadable file, a key that does not match
        raise BrokerError(f"cannot load the Kafka TLS files: {exc}") from None
    return context


def client_kwargs(settings: Settings) -> dict:
    """For kafka-python and aiokafka clients alike (both take these keyword arguments)."""
    out: dict = {"security_protocol": settings.kafka_security_protocol}
    if settings.kafka_security_protocol.startswith("SASL"):
        out.update(sasl_mechanism=settings.kafka_sasl_mechanism, sasl_plain_username=settings.kafka_sasl_username,
                   sasl_plain_password=settings.kafka_sasl_password)
    context = _ssl_context(settings)
    if context is not None:
        out["ssl_context"] = context
    return out


kafka_python_kwargs = client_kwargs  # producer, admin


def aiokafka_kwargs(settings: Settings) -> dict:
    """For aiokafka clients (Faust's, the worker's outputs, the sink, HTTP, tail), which from then on do
    not auto-create topics (``streams.autocreate``)."""
    refuse_auto_create()
    return client_kwargs(settings)


def stage_producer_kwargs(settings: Settings) -> dict:
    """For the stages' own aiokafka producers (the sequencer's, the company engines'): the connection and
    the codec of what they send (``Settings.kafka_compression``)."""
    return {**aiokafka_kwargs(settings), **settings.producer_kwargs()}


def faust_kwargs(settings: Settings) -> dict:
    """For the Faust app (``broker_credentials``)."""
    import faust

    protocol = settings.kafka_security_protocol
    context = _ssl_context(settings)
    if protocol.startswith("SASL"):
        return {"broker_credentials": faust.SASLCredentials(
            username=settings.kafka_sasl_username, password=settings.kafka_sasl_password,
            mechanism=settings.kafka_sasl_mechanism, ssl_context=context)}
    if context is not None:
        return {"broker_credentials": context}
    return {}
