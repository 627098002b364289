"""Request-path errors found by hand (issue 15 §0): each is a clear problem, logged once, leaking nothing."""

from __future__ import annotations

import logging

import psycopg
import pytest
from django.db import connection
from django.test import Client, override_settings

from apps.core.crypto import EncryptionUnavailable
from apps.idempotency import middleware as idempotency_middleware
from apps.orders import views as order_views
from apps.orders.models import Order

pytestmark = pytest.mark.django_db

ORDERS = "/api/orders/"
QUOTE = "Quote the request_id when reporting it."


def problem(response, status: int) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status and body["request_id"] == response["X-Request-ID"]
    return body


def error_records(caplog) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.levelno >= logging.ERROR]


@pytest.mark.parametrize("debug", [False, True], ids=["production-like", "settings.local-like"])
def test_options_on_the_docs_page_answers_its_methods(client, debug):
    """issue 15 §0: OPTIONS /api/docs/ was a 500 (TemplateDoesNotExist) under every settings module."""
    with override_settings(DEBUG=debug):
        response = client.options("/api/docs/")

    assert response.status_code == 200
    assert response["Allow"] == "GET, HEAD, OPTIONS"


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
@pytest.mark.parametrize("debug", [False, True], ids=["production-like", "settings.local-like"])
def test_an_unsafe_request_without_the_trailing_slash_is_a_308_to_the_slash_url(api_client, method, debug):
    """issue 15 §0: under settings.local (DEBUG) this was a 500 from Django's APPEND_SLASH RuntimeError."""
    with override_settings(DEBUG=debug):
        response = getattr(api_client, method)("/api/orders?x=1", {"sku": "A", "quantity": 1}, format="json")

    body = problem(response, 308)
    assert response["Location"] == "/api/orders/?x=1"
    assert method.upper() in body["detail"]
    assert not Order.objects.exists()


def test_a_get_without_the_trailing_slash_is_still_a_301(api_client):
    response = api_client.get("/api/orders")

    assert (response.status_code, response["Location"]) == (301, "/api/orders/")


def test_following_the_308_repeats_the_request_with_its_body(api_client):
    response = api_client.post("/api/orders", {"sku": "BOOK-1", "quantity": 2}, format="json", follow=True)

    assert response.status_code == 201
    assert Order.objects.get().quantity == 2


def test_an_unexpected_error_in_a_view_is_logged_once_with_its_traceback(api_client, monkeypatch, caplog):
    """issue 15 §0: every 500 was logged twice (the handler's line and django.request's)."""
    def explode(**kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(order_views, "order_place", explode)

    body = problem(api_client.post(ORDERS, {"sku": "A", "quantity": 1}, format="json"), 500)

    assert body["detail"].endswith(QUOTE)
    [record] = error_records(caplog)
    assert "RuntimeError: boom" in record.exc_text  # the masking filter keeps the traceback as text


def test_an_unexpected_error_outside_the_view_is_logged_once_and_asks_for_the_request_id(api_key, monkeypatch,
                                                                                            caplog):
    """issue 15 §0: a 500 from outside DRF (here the idempotency middleware) said only "Internal Server Error"."""
    def explode(**kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(idempotency_middleware, "record_claim", explode)
    client = Client(raise_request_exception=False)

    response = client.post(ORDERS, {"sku": "A", "quantity": 1}, content_type="application/json",
                           headers={"Authorization": f"Bearer {api_key}", "Idempotency-Key": "k-1"})

    body = problem(response, 500)
    assert body["detail"] == f"An unexpected error occurred. {QUOTE}"
    assert len(error_records(caplog)) == 1


def test_a_500_from_a_domain_error_asks_for_the_request_id_too(api_client, monkeypatch, caplog):
    def refuse(**kwargs):
        raise EncryptionUnavailable("No key in FERNET_KEYS decrypts this payload.")

    monkeypatch.setattr(order_views, "order_place", refuse)

    body = problem(api_client.post(ORDERS, {"sku": "A", "quantity": 1}, format="json"), 500)

    assert body["detail"] == f"No key in FERNET_KEYS decrypts this payload. {QUOTE}"
    assert len(error_records(caplog)) == 1


@pytest.mark.parametrize(("raw", "detail"), [
    (b'{"sku": "A", "quantity": ' + b"1" * 5000 + b"}", "JSON parse error: a number has too many digits."),
    (b'{"sku": "\xff", "quantity": 1}', "JSON parse error: the body is not valid utf-8 text."),
    (b'{"sku": "A", "quantity": NaN}', "JSON parse error: NaN and Infinity are not JSON numbers."),
    (b'{"sku": "A", "quantity": 1', "JSON parse error: Expecting ',' delimiter at line 1 column 27."),
    (b"[" * 100_000, "JSON parse error: nested too deeply."),
])
def test_parse_errors_say_what_is_wrong_without_python_internals(api_client, raw, detail):
    """issue 15 §0: parse errors quoted sys.set_int_max_str_digits() and codec messages."""
    body = problem(api_client.generic("POST", ORDERS, raw, content_type="application/json"), 400)

    assert body["detail"] == detail
    assert not Order.objects.exists()


def test_an_unreachable_cache_is_a_503_with_retry_after_not_a_500(api_client, caplog):
    """The throttle's cache is Redis: when it is down the API is unavailable, which is not a bug."""
    unreachable = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                               "LOCATION": "redis://127.0.0.1:1/0", "OPTIONS": {"socket_connect_timeout": 1}}}
    with override_settings(CACHES=unreachable):
        response = api_client.get(ORDERS)

    body = problem(response, 503)
    assert body["type"] == "urn:taskplane:problem:dependency-unavailable"
    assert int(response["Retry-After"]) >= 1
    assert len(error_records(caplog)) == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("where", ["in the view", "in a middleware"])
def test_a_lost_database_connection_is_a_503_with_retry_after(api_key, caplog, where):
    """A database restart mid-request (here: the server ends this connection) is answered 503, not 500.

    In a middleware, the idempotency claim is the first query (Django answers the exception outside DRF).
    """
    client = Client(raise_request_exception=False, headers={"Authorization": f"Bearer {api_key}"})
    assert client.get(ORDERS).status_code == 200  # the test client's requests share this connection
    settings_dict = connection.settings_dict
    with psycopg.connect(host=settings_dict["HOST"], port=settings_dict["PORT"] or 5432,
                         user=settings_dict["USER"], dbname=settings_dict["NAME"], autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [connection.connection.info.backend_pid])

    try:
        if where == "in the view":
            response = client.get(ORDERS)
        else:
            response = client.post(ORDERS, {"sku": "A", "quantity": 1}, content_type="application/json",
                                   headers={"Idempotency-Key": "k-1"})
    finally:
        connection.close()

    body = problem(response, 503)
    assert body["type"] == "urn:taskplane:problem:dependency-unavailable"
    assert response["Retry-After"] == "5"
    assert len(error_records(caplog)) == 1


def test_a_client_error_rewritten_as_a_problem_is_logged_once(api_client, caplog):
    """Guard: a rewritten client error keeps Django's one log line (the rewrite copies its logged mark)."""
    caplog.set_level(logging.WARNING, logger="django.request")

    problem(api_client.get("/api/no-such-thing/"), 404)

    assert [record.getMessage() for record in caplog.records if record.name == "django.request"] == [
        "Not Found: /api/no-such-thing/"]
