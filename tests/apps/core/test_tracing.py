"""OpenTelemetry: Django, psycopg, redis, requests and Celery produce spans when tracing is on."""

import json
import subprocess
import sys
import textwrap

from django.conf import settings

from tests.processes import ROOT

SCRIPT = textwrap.dedent(
    """
    import json, threading, http.server
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    exporter = InMemorySpanExporter()
    from apps.core import telemetry
    telemetry.configure(exporter=exporter)
    import django
    django.setup()
    import requests
    from django.core.cache import cache
    from django.db import connection
    from django.test import Client
    from workers import app

    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Client().get("/health/live")
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    cache.set("tracing-test", 1)
    requests.get(f"http://127.0.0.1:{server.server_port}/", timeout=5)
    app.send_task("core.heartbeat", args=["tracing"])
    server.shutdown()
    print(json.dumps([
        {"name": span.name, "scope": span.instrumentation_scope.name, "trace_id": span.context.trace_id}
        for span in exporter.get_finished_spans()
    ]))
    """
)


def test_each_instrumented_library_emits_spans():
    db = settings.DATABASES["default"]
    env = {
        "DJANGO_SETTINGS_MODULE": "settings.test",
        "TEST_DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT'] or 5432}/postgres",
        "PATH": "/usr/bin:/bin",
    }
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    spans = json.loads(result.stdout.strip().splitlines()[-1])
    scopes = {span["scope"].rsplit(".", 1)[-1] for span in spans}

    assert {"django", "psycopg", "redis", "requests", "celery"} <= scopes, spans
    assert any(span["name"].startswith("GET") and span["scope"].endswith("django") for span in spans)
