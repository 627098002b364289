"""Counts stay cheap on big tables: exact up to a limit, PostgreSQL's estimate above it, and flagged as such.

issue 15 (smaller debts): the outbox admin changelist and /api/outbox/messages/ ran a full-table
COUNT(*) on every page. The tests set the limit low (CountingPaginator.exact_count_limit) so a few
hundred real rows cross it.
"""

from __future__ import annotations

import re
import uuid

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from rest_framework.test import APIClient

from apps.core.api_keys import api_key_create
from apps.core.counting import CountingPaginator, queryset_count
from apps.outbox.models import InboxEntry, OutboxMessage

pytestmark = pytest.mark.django_db

ROWS = 300
LIMIT = 100
# The paginator's count of a whole table (the admin summary bar's own counts are another item of issue 15).
FULL_COUNT = re.compile(r'^SELECT COUNT\(\*\) AS "__count" FROM "outbox_(outboxmessage|inboxentry)"$')


@pytest.fixture
def many_rows():
    OutboxMessage.objects.bulk_create(
        OutboxMessage(kind="event", name="order.placed", key=f"k{n % 7}", queue="q", payload="{}")
        for n in range(ROWS))
    InboxEntry.objects.bulk_create(InboxEntry(consumer="orders.reserve", message_id=uuid.uuid4()) for _ in range(ROWS))
    with connection.cursor() as cursor:  # what autovacuum does for a real table: gives the planner statistics
        cursor.execute("ANALYZE outbox_outboxmessage, outbox_inboxentry")


@pytest.fixture
def low_limit(monkeypatch):
    monkeypatch.setattr(CountingPaginator, "exact_count_limit", LIMIT)


def full_counts(queries) -> list[str]:
    return [query["sql"] for query in queries if FULL_COUNT.match(query["sql"])]


def test_below_the_limit_the_count_is_exact(many_rows):
    counted = queryset_count(queryset=OutboxMessage.objects.filter(key="k1"), exact_limit=LIMIT)

    assert (counted.value, counted.estimated) == (OutboxMessage.objects.filter(key="k1").count(), False)


def test_above_the_limit_the_count_is_the_planners_estimate_and_says_so(many_rows):
    with CaptureQueriesContext(connection) as queries:
        counted = queryset_count(queryset=OutboxMessage.objects.all(), exact_limit=LIMIT)

    assert counted.estimated
    assert LIMIT < counted.value <= 10 * ROWS  # an estimate: right in magnitude, never below what was counted
    assert not full_counts(queries.captured_queries)


@pytest.fixture
def staff_api(django_user_model) -> APIClient:
    User.objects.create_superuser(username="root", password="x")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key_create(username='root')[1]}")
    return client


def test_the_messages_api_pages_a_big_outbox_without_a_full_count(many_rows, low_limit, staff_api):
    with CaptureQueriesContext(connection) as queries:
        first = staff_api.get("/api/outbox/messages/", {"page_size": 200}).json()

    assert first["count_estimated"] is True and first["count"] > LIMIT
    assert not full_counts(queries.captured_queries)
    # Paging past the estimate still works: the last page is the one the rows end on.
    last = staff_api.get(first["next"]).json()
    assert (len(first["results"]), len(last["results"]), last["next"]) == (200, ROWS - 200, None)
    assert staff_api.get("/api/outbox/messages/", {"page_size": 200, "page": 3}).status_code == 404


def test_a_filtered_list_below_the_limit_is_counted_exactly(many_rows, low_limit, staff_api):
    body = staff_api.get("/api/outbox/messages/", {"key": "k3"}).json()

    assert (body["count"], body["count_estimated"]) == (OutboxMessage.objects.filter(key="k3").count(), False)


@pytest.mark.parametrize("model", ["outboxmessage", "inboxentry"])
def test_the_admin_changelist_says_about_instead_of_counting_the_table(many_rows, low_limit, model):
    client = Client()
    client.force_login(User.objects.create_superuser(username="root", password="x"))

    with CaptureQueriesContext(connection) as queries:
        response = client.get(reverse(f"admin:outbox_{model}_changelist"))

    assert response.status_code == 200
    assert response.context["cl"].paginator.count_estimated
    assert re.search(rb"about \d+ (outbox messages|inbox entries)", response.content)
    assert not full_counts(queries.captured_queries)
