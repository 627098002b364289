"""Property tests of the Idempotency-Key middleware through the whole in-process stack (DRF test client).

Whatever key, method, path and body a client sends: never a 5xx, every 4xx is problem+json, a valid
key is echoed, and a retry with the same key (bare or as a structured-field string) replays the first
answer byte for byte.
"""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from apps.core.errors import InvalidInput
from apps.idempotency.keys import KEY_PATTERN, MAX_LENGTH, parse_key
from apps.idempotency.models import IdempotencyRecord
from apps.orders.models import Order

pytestmark = pytest.mark.django_db

PROBLEM = "application/problem+json"
NOT_STORED = {401, 403, 429}
PROPERTY_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    # One fixture-made API client serves every example; that is the point, not an accident.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

printable_ascii = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
# Printable latin-1: what a WSGI server can hand Django in a header value (C0/C1 controls excluded).
printable_latin1 = st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_categories=("Cc",))


def quoted(value: str) -> str:
    """The RFC 8941 string form of ``value``."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


valid_keys = st.text(printable_ascii, min_size=1, max_size=MAX_LENGTH)
raw_keys = st.one_of(
    st.none(),
    st.text(printable_latin1, max_size=40),
    st.text(st.sampled_from('"\\ a~'), max_size=12),  # quote and backslash soup
    valid_keys,
    valid_keys.map(quoted),
    st.text(printable_ascii, min_size=MAX_LENGTH - 2, max_size=MAX_LENGTH + 3),  # around the length limit
    st.text(printable_latin1, min_size=1000, max_size=3000),
)
# Weighted towards the one operation that runs (POST /api/orders/); the rest answer 405 from the view.
methods = st.sampled_from(["POST", "POST", "POST", "PUT", "PATCH", "DELETE"])
paths = st.sampled_from(["/api/orders/", "/api/orders/", "/api/orders/1/"])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
valid_orders = st.fixed_dictionaries({
    "sku": st.text(st.characters(exclude_categories=("Cs", "Cc")), min_size=1, max_size=64),
    "quantity": st.integers(min_value=1, max_value=1000),
})
orders = st.fixed_dictionaries({
    "sku": st.one_of(st.text(max_size=70), st.integers(), st.none()),
    "quantity": st.one_of(st.integers(min_value=-5, max_value=1005), st.text(max_size=5), st.none()),
})
bodies = st.one_of(
    st.tuples(valid_orders.map(json.dumps), st.just("application/json")),
    st.tuples(valid_orders.map(json.dumps), st.just("application/json; charset=utf-8")),
    st.tuples(orders.map(json.dumps), st.just("application/json")),
    st.tuples(json_values.map(json.dumps), st.just("application/json")),
    st.tuples(st.binary(max_size=200), st.sampled_from(["application/json", "text/plain", ""])),
)


def _key_is_valid(raw: str) -> bool:
    try:
        parse_key(raw)
    except InvalidInput:
        return False
    return True


def _send(client, method: str, path: str, body: bytes | str, content_type: str, raw_key: str | None):
    headers = {} if raw_key is None else {"HTTP_IDEMPOTENCY_KEY": raw_key}
    return client.generic(method, path, data=body, content_type=content_type, **headers)


@PROPERTY_SETTINGS
@given(raw_key=raw_keys, method=methods, path=paths, body=bodies)
def test_any_request_is_below_500_errors_are_problems_and_valid_keys_are_echoed(
    api_client, raw_key, method, path, body
):
    response = _send(api_client, method, path, *body, raw_key)
    event(f"status {response.status_code}")

    assert response.status_code < 500, response.content
    if response.status_code >= 400:
        assert response["Content-Type"] == PROBLEM, (response.status_code, response.content)
    if raw_key is not None and _key_is_valid(raw_key):
        assert response["Idempotency-Key"] == raw_key
    elif raw_key is not None:
        assert response.status_code == 400
        assert response.json()["type"] == "urn:taskplane:problem:idempotency-key-malformed"


@PROPERTY_SETTINGS
@given(key=valid_keys, quote_first=st.booleans(), method=methods, path=paths, body=bodies)
def test_a_retry_with_the_same_key_in_either_form_replays_the_first_answer(
    api_client, key, quote_first, method, path, body
):
    IdempotencyRecord.objects.all().delete()  # a fresh key for every example
    # A bare value opening with a quote reads as the quoted form; a bare comma reads as two keys.
    bare_works = not key.startswith('"') and "," not in key
    forms = [quoted(key), key] if quote_first or not bare_works else [key, quoted(key)]
    orders_before = Order.objects.count()

    first = _send(api_client, method, path, *body, forms[0])
    retry = _send(api_client, method, path, *body, forms[1] if bare_works else forms[0])
    event(f"status {first.status_code}")

    assert first.status_code < 500 and not first.has_header("Idempotent-Replayed")
    assert first["Idempotency-Key"] == forms[0]
    assert retry.status_code == first.status_code
    if first.status_code not in NOT_STORED:
        assert retry["Idempotent-Replayed"] == "true"
        assert retry.content == first.content
        assert retry["Content-Type"] == first["Content-Type"]
    assert Order.objects.count() - orders_before == (1 if first.status_code == 201 else 0)


@PROPERTY_SETTINGS
@given(raw=raw_keys.filter(lambda raw: raw is not None))
def test_the_schema_pattern_accepts_exactly_the_keys_the_middleware_accepts(raw):
    """KEY_PATTERN (published in the OpenAPI schema) and parse_key agree on every header value."""
    assert bool(re.fullmatch(KEY_PATTERN, raw)) == _key_is_valid(raw), raw


# --- Known defects (found by the properties above and by probing around them) -----------------------


@PROPERTY_SETTINGS
@given(authorization=st.sampled_from(["Basic Zm9vOmJhcg==", "Token abc", "Digest username=x", "Negotiate YQ=="]))
def test_a_session_user_sending_another_auth_scheme_is_still_protected(user, authorization):
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_login(user)
    client.credentials(HTTP_AUTHORIZATION=authorization)
    Order.objects.all().delete()
    IdempotencyRecord.objects.all().delete()
    body = json.dumps({"sku": "BOOK-1", "quantity": 1})

    responses = [_send(client, "POST", "/api/orders/", body, "application/json", "session-key")
                 for _ in range(2)]

    assert [r.status_code for r in responses] == [201, 201]
    assert Order.objects.count() == 1
    assert responses[1]["Idempotent-Replayed"] == "true"


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
def test_a_replayed_405_keeps_its_allow_header(api_client, method):
    first = _send(api_client, method, "/api/orders/1/", "{}", "application/json", f"allow-{method}")
    retry = _send(api_client, method, "/api/orders/1/", "{}", "application/json", f"allow-{method}")

    assert first.status_code == retry.status_code == 405
    assert retry["Idempotent-Replayed"] == "true"
    assert retry.get("Allow") == first["Allow"]


@pytest.mark.parametrize("raw_key", [
    None,
    "big-body",
])
def test_a_body_over_the_upload_limit_is_a_4xx_problem_with_or_without_a_key(api_client, settings, raw_key):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    body = json.dumps({"sku": "BOOK-1", "quantity": 1, "padding": "x" * 2000})

    response = _send(api_client, "POST", "/api/orders/", body, "application/json", raw_key)

    assert 400 <= response.status_code < 500, response.content
    assert response["Content-Type"] == PROBLEM
    assert not Order.objects.exists()
