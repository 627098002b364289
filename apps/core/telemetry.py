"""OpenTelemetry set-up for web and worker processes.

Nothing is instrumented unless tracing is enabled (an OTLP endpoint is configured), so a process
without a collector pays nothing for it.
"""

from __future__ import annotations

import logging
import threading

from django.conf import settings
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter

logger = logging.getLogger(__name__)
_lock = threading.Lock()
_configured = False


def configure_from_settings() -> None:
    """Enable tracing when settings ask for it (called once from the core app's ready())."""
    if settings.TRACING_ENABLED:
        configure()


def configure(exporter: SpanExporter | None = None) -> None:
    """Install the tracer provider and instrument Django, Celery, psycopg, requests and redis.

    ``exporter`` replaces the OTLP exporter (tests pass an in-memory one); it is exported
    synchronously so a test sees spans as soon as they end.
    """
    global _configured
    with _lock:
        if _configured:
            return
        provider = TracerProvider(resource=Resource.create({"service.name": settings.OTEL_SERVICE_NAME}))
        if exporter is not None:
            provider.add_span_processor(SimpleSpanProcessor(exporter))
        elif settings.OTEL_EXPORTER_OTLP_ENDPOINT:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            # The exporter reads OTEL_EXPORTER_OTLP_* itself; the batch processor survives fork.
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(provider)
        _instrument_libraries()
        _configured = True
        logger.info("OpenTelemetry tracing enabled for service %s", settings.OTEL_SERVICE_NAME)


def _instrument_libraries() -> None:
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.django import DjangoInstrumentor
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor
    from opentelemetry.instrumentation.requests import RequestsInstrumentor

    DjangoInstrumentor().instrument()
    CeleryInstrumentor().instrument()
    PsycopgInstrumentor().instrument(skip_dep_check=True)
    RedisInstrumentor().instrument()
    RequestsInstrumentor().instrument()
