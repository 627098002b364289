"""`make run`'s stack (compose/start/local.sh) serves health with a worker answering, then stops cleanly."""

import os
import signal
import subprocess

import psycopg
import pytest
import requests
from django.conf import settings

from tests.helpers import free_port, group_alive, stop_process_group, wait_until
from tests.processes import ROOT

# Settings variables the parent test process may carry, which the stack must not inherit.
_INHERITED = ("DJANGO_SETTINGS_MODULE", "DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL", "PROMETHEUS_MULTIPROC_DIR")


@pytest.fixture
def smoke_database():
    """A throwaway PostgreSQL database for the stack started against real services."""
    db = settings.DATABASES["default"]
    admin = dict(host=db["HOST"], port=db["PORT"] or 5432, user=db["USER"], dbname="postgres", autocommit=True)
    with psycopg.connect(**admin) as conn:
        conn.execute("DROP DATABASE IF EXISTS taskplane_smoke WITH (FORCE)")
        conn.execute("CREATE DATABASE taskplane_smoke")
    yield f"postgres://{db['USER']}@{db['HOST']}:{db['PORT'] or 5432}/taskplane_smoke"
    with psycopg.connect(**admin) as conn:
        conn.execute("DROP DATABASE IF EXISTS taskplane_smoke WITH (FORCE)")


def _run_stack(tmp_path, extra_env):
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key not in _INHERITED and not key.startswith("TEST_")}
    env.update(TASKPLANE_VAR_DIR=str(tmp_path / "var"), PORT=str(port), DJANGO_SUPERUSER_PASSWORD="smoke-test-pw",
               STOP_TIMEOUT="30", HEARTBEAT_SECONDS="1", **extra_env)
    log_path = tmp_path / "stack.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(["compose/start/local.sh"], cwd=ROOT, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    return process, port, log_path


def _healthy(port):
    response = requests.get(f"http://127.0.0.1:{port}/health/", headers={"Accept": "application/json"}, timeout=10)
    return response.status_code == 200 and response.json()


@pytest.mark.parametrize("services", ["embedded", "postgres+redis"])
def test_stack_serves_health_and_stops_on_sigint(services, tmp_path, request):
    extra = {}
    if services != "embedded":
        extra = {"DATABASE_URL": request.getfixturevalue("smoke_database"),
                 "CELERY_BROKER_URL": "redis://127.0.0.1:6379/12", "REDIS_URL": "redis://127.0.0.1:6379/11"}
    process, port, log_path = _run_stack(tmp_path, extra)
    try:
        checks = wait_until(lambda: _healthy(port), timeout=120, interval=1,
                            message=f"/health/ 200 from the {services} stack (log {log_path})")
        assert checks["Workers()"] == "OK"
        admin = requests.get(f"http://127.0.0.1:{port}/admin/login/", timeout=10)
        assert admin.status_code == 200 and "Django" in admin.text
        assert requests.get(f"http://127.0.0.1:{port}/static/admin/css/base.css", timeout=10).status_code == 200
        # Beat → broker → worker ran the heartbeat, and the worker's metrics show in the web's /metrics.
        wait_until(lambda: b'taskplane_tasks_total{outcome="success",task="core.heartbeat"}'
                   in requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).content,
                   timeout=30, interval=0.5, message="worker task metrics in /metrics")
    finally:
        # What Ctrl-C does: SIGINT to the whole foreground process group.
        returncode = stop_process_group(process, sig=signal.SIGINT, timeout=60)
    output = log_path.read_text()
    assert returncode in (0, 130), output[-3000:]  # 130: stopped by SIGINT, as after Ctrl-C
    assert not group_alive(process.pid), "every process of the stack has exited"
    assert "SIGKILL" not in output, "web, worker and beat stopped within the grace period"
    assert "admin/" in output and "/health/" in output, "the start script prints the URLs"
