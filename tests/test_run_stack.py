"""`make run`'s stack (compose/start/local.sh) does the README's main job, configured by a .env file alone.

issue 15 §0: with no configuration `make run` was green on /health/ while every order stayed `pending`
(the relay raised on every SQLite cycle), and `manage.py` under real services used the SQLite file
because the README exported the URLs for `make run` only. These tests follow the README as a new user
would: configuration in a .env file (nothing in the environment), `make run`, the README's own
`KEY=$(… create_api_key …)` line, an order POSTed with an Idempotency-Key that must leave `pending`,
and the same key replayed. Both on the embedded default and on PostgreSQL + Redis. The order must be
`confirmed` by the checkout saga (the sandbox payment provider of the web process), and a GIFT-13 order,
whose amount the sandbox declines, `cancelled` with `payment_declined`.
"""

import re
import signal
import subprocess
from urllib.parse import urlsplit

import pytest
import redis
import requests
from django.conf import settings

from tests.helpers import free_port, group_alive, stop_process_group, wait_until
from tests.processes import ROOT
from tests.settings.support import empty_postgres_database, user_environment, write_env_file

_DATABASE_PASSWORD = "stack-test-password-never-printed"
# Dedicated database numbers on the suite's own Redis server (README: the suite empties 11 and 12).
_BROKER_DB, _CACHE_DB = 12, 11


def _redis_url(database: int) -> str:
    """A URL on the same Redis server as settings.REDIS_URL (this run's, not 127.0.0.1:6379), another database."""
    parts = urlsplit(settings.REDIS_URL)
    return parts._replace(path=f"/{database}").geturl()


@pytest.fixture
def stack_database():
    with empty_postgres_database("stack", password=_DATABASE_PASSWORD) as url:
        yield url


@pytest.fixture
def stack_redis():
    """Broker and cache URLs on the suite's Redis server, emptied before the stack starts."""
    urls = {"CELERY_BROKER_URL": _redis_url(_BROKER_DB), "REDIS_URL": _redis_url(_CACHE_DB)}
    for url in urls.values():
        redis.Redis.from_url(url).flushdb()
    return urls


def _readme_key_line() -> str:
    for line in (ROOT / "README.md").read_text().splitlines():
        if line.startswith("KEY=$(") and "create_api_key" in line:
            return line
    raise AssertionError("README.md shows no `KEY=$(… create_api_key …)` line")


def _create_key_as_the_readme_says(env) -> str:
    script = f'{_readme_key_line()}\nprintf %s "$KEY"'
    result = subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("tp_") and "\n" not in result.stdout, (result.stdout, result.stderr)
    return result.stdout


def _healthy(base):
    response = requests.get(f"{base}/health/", headers={"Accept": "application/json"}, timeout=10)
    return response.status_code == 200 and response.json()


def _place_order(base, key, idempotency_key, sku="BOOK-1", quantity=2):
    # The README's curl: Bearer key, JSON body, an Idempotency-Key.
    return requests.post(
        f"{base}/api/orders/", json={"sku": sku, "quantity": quantity}, timeout=30,
        headers={"Authorization": f"Bearer {key}", "Idempotency-Key": idempotency_key},
    )


def _once_final(base, key, order_id):
    """The order once its checkout ended (confirmed or cancelled), else None."""
    body = requests.get(f"{base}/api/orders/{order_id}/", headers={"Authorization": f"Bearer {key}"}, timeout=10).json()
    return body if body["status"] in ("confirmed", "cancelled") else None


@pytest.mark.parametrize("services", ["embedded", "postgres+redis"])
def test_readme_main_job_on_the_make_run_stack(services, tmp_path, request):
    """issue 15 §0: a key from the README's command, an order that leaves `pending`, its Idempotency-Key replayed."""
    port = free_port()
    variables = {"TASKPLANE_VAR_DIR": str(tmp_path / "var"), "PORT": str(port), "HEARTBEAT_SECONDS": "1",
                 "DJANGO_SUPERUSER_PASSWORD": "smoke-test-pw", "STOP_TIMEOUT": "30"}
    if services != "embedded":
        variables["DATABASE_URL"] = request.getfixturevalue("stack_database")
        variables.update(request.getfixturevalue("stack_redis"))
    env = user_environment(write_env_file(tmp_path / "dotenv", variables))
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "stack.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(["compose/start/local.sh"], cwd=ROOT, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        checks = wait_until(lambda: _healthy(base), timeout=120, interval=1,
                            message=f"/health/ 200 from the {services} stack (log {log_path})")
        assert checks["Workers()"] == "OK"

        key = _create_key_as_the_readme_says(env)
        first = _place_order(base, key, "6f1c2a")
        assert first.status_code == 201, first.text
        order = first.json()
        assert order["status"] == "pending"
        # The checkout saga on the worker: reserve, charge (the sandbox provider in the web process), confirm.
        placed = wait_until(lambda: _once_final(base, key, order["id"]), timeout=90, interval=0.5,
                            message=f"order {order['id']} to be checked out (log {log_path})")
        assert (placed["status"], placed["cancel_reason"]) == ("confirmed", ""), placed
        # The seeded GIFT-13 costs 13.13: the sandbox declines it, the stock goes back.
        gift = _place_order(base, key, "6f1c2b", sku="GIFT-13", quantity=1)
        assert gift.status_code == 201, gift.text
        declined = wait_until(lambda: _once_final(base, key, gift.json()["id"]), timeout=90, interval=0.5,
                              message=f"the GIFT-13 order to be checked out (log {log_path})")
        assert (declined["status"], declined["cancel_reason"]) == ("cancelled", "payment_declined"), declined

        replay = _place_order(base, key, "6f1c2a")
        assert replay.status_code == 201 and replay.headers.get("Idempotent-Replayed") == "true", replay.text
        assert replay.json() == order, "the replay is the first response, not a second order"
        orders = requests.get(f"{base}/api/orders/", headers={"Authorization": f"Bearer {key}"}, timeout=10).json()
        assert [row["id"] for row in orders["results"]] == [gift.json()["id"], order["id"]]
        products = requests.get(f"{base}/api/products/", headers={"Authorization": f"Bearer {key}"},
                                timeout=10).json()
        stock = {row["sku"]: row["stock"] for row in products["results"]}
        assert stock == {"BOOK-1": 98, "GIFT-13": 100, "PEN-1": 100}, stock

        admin = requests.get(f"{base}/admin/login/", timeout=10)
        assert admin.status_code == 200 and "Django" in admin.text
        assert requests.get(f"{base}/static/admin/css/base.css", timeout=10).status_code == 200
        # Beat → broker → worker ran the heartbeat, and the worker's metrics show in the web's /metrics.
        wait_until(lambda: b'taskplane_tasks_total{outcome="success",task="core.heartbeat"}'
                   in requests.get(f"{base}/metrics", timeout=10).content,
                   timeout=30, interval=0.5, message="worker task metrics in /metrics")
    finally:
        # What Ctrl-C does: SIGINT to the whole foreground process group.
        returncode = stop_process_group(process, sig=signal.SIGINT, timeout=60)
    output = log_path.read_text()
    assert returncode in (0, 130), output[-3000:]  # 130: stopped by SIGINT, as after Ctrl-C
    assert not group_alive(process.pid), "every process of the stack has exited"
    assert "SIGKILL" not in output, "web, worker and beat stopped within the grace period"
    assert "admin/" in output and "/health/" in output, "the start script prints the URLs"
    _assert_says_where_it_runs(output, services, variables)


def _assert_says_where_it_runs(output, services, variables):
    """`make run` and each of its processes name the settings, database and broker, never a credential."""
    if services == "embedded":
        database, broker = f"sqlite {variables['TASKPLANE_VAR_DIR']}/taskplane.sqlite3", "filesystem://localhost//"
    else:
        parts = urlsplit(variables["DATABASE_URL"])
        database, broker = f"postgresql {parts.hostname}:{parts.port}{parts.path}", variables["CELERY_BROKER_URL"]
    banner = output.split("Taskplane is starting:", 1)[1].split("Press Ctrl-C", 1)[0]
    for name, value in (("settings", "settings.local"), ("database", database), ("broker", broker)):
        assert re.search(rf"^ +{name} +{re.escape(value)}$", banner, re.MULTILINE), (name, value, banner)
    for process in ("web", "worker", "beat"):
        lines = [line for line in output.splitlines() if f"{process}" in line and " uses settings " in line]
        assert any(f"database {database}, broker {broker}" in line for line in lines), (process, lines)
    assert _DATABASE_PASSWORD not in output
