"""schemathesis over /api/schema/ against a real gunicorn server: the schema describes the API exactly.

issue 15 §0: schemathesis 4.32 found schema-valid requests rejected, schema-violating requests
accepted, undocumented statuses (gunicorn's HTML 414) and operations hidden by throttling. This runs
every check over the examples, coverage, fuzzing and stateful phases, bounded to a minute or so, with
a superuser's API key (staff operations are exercised) on PostgreSQL and Redis, and the test settings'
throttle (100000/min) so no operation is answered 429. It must report no failure; the few rejections
no schema can rule out are dropped by tests/schemathesis_hooks.py, by problem type.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from apps.core.api_keys import api_key_create
from tests.helpers import free_port, stop_process_group, wait_until
from tests.processes import ROOT, process_env

pytestmark = pytest.mark.django_db(transaction=True)

# Bounded: about a minute on an idle 2-core machine. The seed makes a failure reproducible (`st run
# --seed`); coverage and examples are exhaustive whatever the seed.
CONFIG_FILE = Path(__file__).with_name("schemathesis.toml")
RUN_OPTIONS = (
    "--checks", "all", "--phases", "examples,coverage,fuzzing,stateful", "--max-examples", "40",
    "--seed", "15", "--workers", "2", "--request-timeout", "30", "--generation-database", "none",
    "--output-sanitize", "false", "--no-color", "--suppress-health-check", "too_slow",
)


@pytest.fixture
def gunicorn_server(tmp_path):
    """gunicorn as `make run` and the container start it (compose/gunicorn.conf.py), on the test database."""
    port = free_port()
    log_path = tmp_path / "gunicorn.log"
    command = [sys.executable, "-m", "gunicorn", "settings.wsgi", "--config", "compose/gunicorn.conf.py",
               "--bind", f"127.0.0.1:{port}", "--workers", "2", "--threads", "4", "--worker-tmp-dir", "/dev/shm", "--graceful-timeout", "5"]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=process_env(LOG_LEVEL="WARNING"), stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: process.poll() is None and requests.get(f"{url}/health/live", timeout=2).ok,
                   timeout=60, message=f"gunicorn to answer (log {log_path})")
        yield url
    finally:
        stop_process_group(process, sig=signal.SIGINT, timeout=20)


def test_schemathesis_finds_no_failure(gunicorn_server, django_user_model):
    django_user_model.objects.create_superuser(username="schemathesis", password="not-used-here")
    key = api_key_create(username="schemathesis")[1]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": os.environ.get("ST_HOOKS", "tests.schemathesis_hooks"), "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-c", "import sys; from schemathesis.cli import schemathesis; sys.exit(schemathesis())",
               "--config-file", str(CONFIG_FILE), "run", f"{gunicorn_server}/api/schema/?format=json", "-H", f"Authorization: Bearer {key}", *RUN_OPTIONS,
               *os.environ.get("ST_ARGS", "").split()]

    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    if os.environ.get("ST_DUMP"):
        Path(os.environ["ST_DUMP"]).write_text(result.stdout + result.stderr)

    assert result.returncode == 0, f"{result.stdout[-30000:]}\n{result.stderr[-3000:]}"
