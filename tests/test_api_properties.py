"""Property-based API tests: whatever a client sends, the answer is below 500 and every error is problem+json."""

from __future__ import annotations

import json

import pytest
import schemathesis
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.test import Client
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from schemathesis.checks import content_type_conformance, response_schema_conformance, status_code_conformance

pytestmark = pytest.mark.django_db

PROBLEM_CONTENT_TYPE = "application/problem+json"
ORDERS_URL = "/api/orders/"
# One fixture-created API key serves every example of a test; the health check warns about exactly that.
PROPERTY_SETTINGS = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


class InProcessWsgiApp:
    """The project's WSGI handler, safe to call inside the test's transaction.

    Django closes the database connection when a request starts and finishes; inside pytest-django's
    transaction that would throw away the test's rows. Django's test client detaches that handler
    from the request signals for the duration of a request, and so does this wrapper.
    """

    def __init__(self) -> None:
        self.handler = WSGIHandler()

    def __call__(self, environ, start_response):
        request_started.disconnect(close_old_connections)
        request_finished.disconnect(close_old_connections)
        try:
            response = self.handler(environ, start_response)
            # Closing the response sends request_finished, so read and close it while detached.
            body = b"".join(response)
            response.close()
        finally:
            request_started.connect(close_old_connections)
            request_finished.connect(close_old_connections)
        return [body]


# Loaded at collection; pytest-django has configured Django by then and the schema view needs no database.
# (schemathesis.pytest.from_fixture would defer this, but its lazy loader breaks on pytest 9: Node._nodeid.)
schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", InProcessWsgiApp())


def assert_no_server_error_and_errors_are_problems(
    request: str, *, status: int, content_type: str, request_id: str, body: bytes, replayed: bool = False
) -> None:
    """The API's error contract: never a 5xx; every 4xx is problem+json carrying the response's request id.

    An idempotent replay repeats the first response byte for byte, so its body keeps the first request's id.
    """
    event(f"status {status}")  # shown by --hypothesis-show-statistics: which paths the examples reached
    assert status < 500, f"{request} -> {status}: {body[:500]!r}"
    assert request_id, f"{request} -> {status} without X-Request-ID"
    if status >= 400:
        assert content_type.split(";")[0].strip() == PROBLEM_CONTENT_TYPE, f"{request} -> {status} {content_type}"
        problem = json.loads(body)
        assert problem["status"] == status, f"{request} -> {problem}"
        assert replayed or problem["request_id"] == request_id, f"{request} -> {problem}"


def django_answer(response) -> dict:
    """What assert_no_server_error_and_errors_are_problems needs from a Django test-client response."""
    return {
        "status": response.status_code,
        "content_type": response.get("Content-Type", ""),
        "request_id": response.get("X-Request-ID", ""),
        "body": response.content,
        "replayed": response.get("Idempotent-Replayed") == "true",
    }


# 60 per operation: tests/test_schemathesis.py runs every check over every operation against gunicorn too.
@settings(PROPERTY_SETTINGS, max_examples=60)
@schema.parametrize()
def test_schema_driven_requests_never_fail_with_5xx_or_non_problem_errors(case, api_key):
    response = case.call(headers={"Authorization": f"Bearer {api_key}"})

    assert_no_server_error_and_errors_are_problems(
        case.as_curl_command(),
        status=response.status_code,
        content_type=response.headers.get("content-type", [""])[0],
        request_id=response.headers.get("x-request-id", [""])[0],
        body=response.content,
        replayed=response.headers.get("idempotent-replayed", [""])[0] == "true",
    )
    if response.status_code >= 400:
        # Error answers must also be documented: the status listed and the body a valid Problem.
        case.validate_response(
            response, checks=[status_code_conformance, content_type_conformance, response_schema_conformance]
        )


def test_order_list_answer_matches_its_documented_schema(api_key):
    case = schema["/api/orders/"]["GET"].Case()
    response = case.call(headers={"Authorization": f"Bearer {api_key}"})

    assert response.status_code == 200
    case.validate_response(response, checks=[response_schema_conformance])


# --- Plain Hypothesis: arbitrary JSON bodies and header values ----------------------------------


def mostly(usual: st.SearchStrategy, unusual: st.SearchStrategy) -> st.SearchStrategy:
    """Draw ``usual`` four times in five: most examples must get past auth, negotiation and parsing."""
    return st.integers(0, 4).flatmap(lambda n: unusual if n == 0 else usual)


VALID_KEY = object()  # stands for the fixture's real key, which does not exist when strategies are built
# A WSGI server hands header values to Django as latin-1 text (PEP 3333), so header values are drawn from
# latin-1's printable characters (no Cc controls); a trailing newline has its own test at the end.
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_categories=("Cc",)), max_size=80)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**60), max_value=10**60)
    | st.floats()  # NaN and infinities serialize as NaN/Infinity, which strict JSON parsers must reject
    | st.text(max_size=80)
    | st.text(st.sampled_from("\x00a\u00e9\u4e2d\U0001f600 "), max_size=70)  # NUL and multi-byte characters
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=25,
)
# Bodies shaped like an order reach the serializer's fields, the service and the database constraints.
order_like = st.fixed_dictionaries(
    {},
    optional={
        "sku": mostly(st.text(min_size=1, max_size=70), json_values),
        "quantity": mostly(st.integers(min_value=-2, max_value=1002), json_values),
        "status": json_values,
        "id": json_values,
    },
)
bodies = mostly(
    order_like.map(lambda value: json.dumps(value, ensure_ascii=False).encode()),
    json_values.map(lambda value: json.dumps(value).encode()) | st.binary(max_size=40),
)
authorizations = mostly(
    st.just(VALID_KEY),
    st.one_of(
        st.none(),
        header_text,
        header_text.map(lambda text: f"Bearer {text}"),
        header_text.map(lambda text: f"Bearer tp_{text}"),
    ),
)
accepts = mostly(
    st.sampled_from([None, "application/json", "*/*", "application/json; indent=4"]),
    st.sampled_from(["text/html", "application/problem+json", "application/xml", "application/json; indent=x"])
    | header_text,
)
content_types = mostly(
    st.sampled_from(["application/json", "application/json; charset=utf-8", "application/json; charset=latin-1"]),
    st.sampled_from(
        ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", "multipart/form-data; boundary=x"]
    )
    | header_text,
)
request_ids = st.none() | header_text


@settings(PROPERTY_SETTINGS, max_examples=600)
@given(body=bodies, authorization=authorizations, accept=accepts, content_type=content_types, request_id=request_ids)
def test_any_order_post_is_answered_without_5xx_and_errors_are_problems(
    api_key, body, authorization, accept, content_type, request_id
):
    headers = {"Accept": accept, "X-Request-ID": request_id}
    headers["Authorization"] = f"Bearer {api_key}" if authorization is VALID_KEY else authorization
    headers = {name: value for name, value in headers.items() if value is not None}
    client = Client(raise_request_exception=False)

    # generic() sends the bytes untouched; post() would re-encode them with the Content-Type's charset.
    response = client.generic("POST", ORDERS_URL, data=body, content_type=content_type, headers=headers)

    assert_no_server_error_and_errors_are_problems(f"POST {body[:200]!r} {headers}", **django_answer(response))


# Arbitrary page and page_size values, beyond what the schema's integer types let Schemathesis send.
query_values = st.none() | header_text | st.integers(min_value=-(10**30), max_value=10**30).map(str)


@settings(PROPERTY_SETTINGS, max_examples=150)
@given(page=query_values, page_size=query_values)
def test_any_order_list_query_is_answered_without_5xx_and_errors_are_problems(api_client, page, page_size):
    query = {name: value for name, value in {"page": page, "page_size": page_size}.items() if value is not None}

    response = api_client.get(ORDERS_URL, query)

    assert_no_server_error_and_errors_are_problems(f"GET {query}", **django_answer(response))


def test_deeply_nested_json_is_a_client_error(api_client):
    response = api_client.generic("POST", ORDERS_URL, data=b"[" * 100_000, content_type="application/json")

    assert response.status_code == 400
    assert response["Content-Type"] == PROBLEM_CONTENT_TYPE


def test_request_id_with_a_trailing_newline_is_replaced_not_echoed(api_key):
    client = Client(raise_request_exception=False)

    response = client.get(ORDERS_URL, headers={"Authorization": f"Bearer {api_key}", "X-Request-ID": "abc\n"})

    assert response.status_code == 200
    assert len(response["X-Request-ID"]) == 32


# --- Strict input (issue 15 §0): no value is converted to another JSON type, no field is ignored ---------

not_json_integers = (
    st.none() | st.booleans() | st.text(max_size=20)
    | st.floats(allow_nan=False, allow_infinity=False).filter(lambda value: not value.is_integer())
    | st.lists(st.integers(), max_size=2) | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)
)


@settings(PROPERTY_SETTINGS, max_examples=100)
@given(quantity=not_json_integers, extra=st.none() | st.text(min_size=1, max_size=10).filter(
    lambda name: name not in ("sku", "quantity")))
def test_a_quantity_that_is_no_json_integer_or_an_unknown_field_is_a_field_error(api_client, quantity, extra):
    body = {"sku": "PEN-1", "quantity": quantity, **({extra: 1} if extra is not None else {})}

    response = api_client.post(ORDERS_URL, json.dumps(body), content_type="application/json")

    assert response.status_code == 400, (body, response.content)
    fields = {error["field"] for error in response.json()["errors"]}
    assert fields == ({"quantity", extra} if extra is not None else {"quantity"}), (body, fields)
