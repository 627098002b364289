"""Outbox admin: counts and filters on the changelist, retry, confirmed discard, payload visibility, read-only."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from apps.outbox.models import InboxEntry, OutboxMessage
from tests.apps.outbox.support import event, stored

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:outbox_outboxmessage_changelist")


def change_url(message: OutboxMessage) -> str:
    return reverse("admin:outbox_outboxmessage_change", args=[message.pk])


@pytest.fixture
def superuser_client(django_user_model):
    client = Client()
    client.force_login(django_user_model.objects.create_superuser(username="root", password="x"))
    return client


@pytest.fixture
def staff_client(django_user_model):
    """A staff operator who may view and operate the outbox, but is no superuser."""
    user = django_user_model.objects.create_user(username="ops", password="x", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(
        content_type__app_label="outbox", codename__in=["view_outboxmessage", "change_outboxmessage"]
    ))
    client = Client()
    client.force_login(user)
    return client




def listed(response) -> set[int]:
    assert response.status_code == 200, response.content[:2000]
    return {message.pk for message in response.context["cl"].result_list}


def test_changelist_shows_counts_per_status_and_oldest_pending_age(superuser_client):
    old = event()
    OutboxMessage.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(minutes=3, seconds=5))
    event()
    stored(status="dead")
    stored(status="published", published_at=timezone.now())

    response = superuser_client.get(CHANGELIST)

    assert response.status_code == 200
    page = response.content.decode()
    assert 'id="outbox-stats"' in page
    assert response.context["outbox_counts"] == [("pending", 2, False), ("published", 1, False), ("dead", 1, False),
                                                ("discarded", 0, False)]
    assert response.context["outbox_oldest_pending_age"].startswith("3 min")
    assert "oldest pending: <strong>3 min" in page


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"status__exact": "dead"}, {"dead"}),
        ({"kind__exact": "task"}, {"task"}),
        ({"name": "order.shipped"}, {"shipped"}),
        ({"key": "order-1"}, {"placed", "shipped"}),
        ({"key": "order-1", "name": "order.placed"}, {"placed"}),
        ({"q": "order-2"}, {"other"}),
        ({"q": "order.shipped"}, {"shipped"}),
    ],
)
def test_changelist_filters(superuser_client, query, expected):
    rows = {
        "placed": event("order.placed", key="order-1"),
        "shipped": event("order.shipped", key="order-1"),
        "other": event("order.placed", key="order-2"),
        "dead": stored(status="dead"),
        "task": stored(kind="task", name="core.heartbeat", queue="default"),
    }

    assert listed(superuser_client.get(CHANGELIST, query)) == {rows[name].pk for name in expected}


def test_changelist_filters_by_created_date_and_searches_message_id(superuser_client):
    today = event()
    last_year = stored(created_at=timezone.now() - timedelta(days=400))
    midnight = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)

    assert listed(superuser_client.get(CHANGELIST, {"created_at__gte": midnight.isoformat()})) == {today.pk}
    assert listed(superuser_client.get(CHANGELIST, {"q": str(last_year.message_id)})) == {last_year.pk}
    assert listed(superuser_client.get(CHANGELIST, {"q": str(today.pk)})) == {today.pk}


def test_exact_value_filter_keeps_the_other_filters_in_its_form(superuser_client):
    event(key="order-1")

    page = superuser_client.get(CHANGELIST, {"status__exact": "pending", "key": "order-1"}).content.decode()

    assert '<input type="hidden" name="status__exact" value="pending">' in page
    assert 'name="key" value="order-1"' in page


def test_retry_action_requeues_dead_messages_only(staff_client):
    dead = stored(status="dead", attempts=10)
    published = stored(status="published", published_at=timezone.now())

    assert 'value="retry"' in staff_client.get(CHANGELIST).content.decode()  # offered to operators
    response = staff_client.post(CHANGELIST, {"action": "retry", "_selected_action": [dead.pk, published.pk]},
                                 follow=True)

    assert "Re-queued 1 of 2 selected message(s)" in response.content.decode()
    dead.refresh_from_db()
    assert (dead.status, dead.attempts) == ("pending", 0)
    assert OutboxMessage.objects.get(pk=published.pk).status == "published"


def test_discard_asks_for_confirmation_before_acting(staff_client):
    pending, dead = event(), stored(status="dead")
    published = stored(status="published", published_at=timezone.now())
    selection = {"action": "discard", "_selected_action": [pending.pk, dead.pk, published.pk]}

    confirmation = staff_client.post(CHANGELIST, selection)

    assert confirmation.status_code == 200
    page = confirmation.content.decode()
    assert "Discard 2 of the 3 selected message(s)?" in page
    assert 'name="confirm" value="yes"' in page
    assert set(OutboxMessage.objects.values_list("status", flat=True)) == {"pending", "dead", "published"}

    done = staff_client.post(CHANGELIST, {**selection, "confirm": "yes"}, follow=True)

    assert "Discarded 2 message(s)." in done.content.decode()
    statuses = dict(OutboxMessage.objects.values_list("id", "status"))
    assert statuses == {pending.pk: "discarded", dead.pk: "discarded", published.pk: "published"}


def test_view_only_staff_see_no_actions_and_cannot_run_them(django_user_model):
    user = django_user_model.objects.create_user(username="viewer", password="x", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_outboxmessage"))
    client = Client()
    client.force_login(user)
    dead = stored(status="dead")

    page = client.get(CHANGELIST)
    client.post(CHANGELIST, {"action": "retry", "_selected_action": [dead.pk]})

    assert page.status_code == 200
    assert 'value="retry"' not in page.content.decode()
    assert OutboxMessage.objects.get(pk=dead.pk).status == "dead"


def test_encrypted_payload_is_decrypted_for_superusers_only(encrypted_topic, superuser_client, staff_client):
    secret = event(encrypted_topic, {"email": "a@example.com"})
    plain = event("order.placed", {"sku": "SKU-1"})

    as_superuser = superuser_client.get(change_url(secret)).content.decode()
    as_staff = staff_client.get(change_url(secret)).content.decode()
    plain_as_staff = staff_client.get(change_url(plain)).content.decode()

    assert "&quot;email&quot;: &quot;a@example.com&quot;" in as_superuser  # pretty-printed JSON, escaped
    assert "[encrypted]" in as_staff and "a@example.com" not in as_staff
    assert "&quot;sku&quot;: &quot;SKU-1&quot;" in plain_as_staff


def test_detail_is_read_only_and_rows_cannot_be_added_or_deleted(superuser_client):
    message = event()

    detail = superuser_client.get(change_url(message))
    posted = superuser_client.post(change_url(message), {"name": "changed"})

    assert detail.status_code == 200
    assert 'name="_save"' not in detail.content.decode()
    assert posted.status_code == 403
    assert OutboxMessage.objects.get(pk=message.pk).name == "order.placed"
    assert superuser_client.get(reverse("admin:outbox_outboxmessage_add")).status_code == 403
    assert superuser_client.get(reverse("admin:outbox_outboxmessage_delete", args=[message.pk])).status_code == 403


def test_inbox_entries_are_listed_read_only(superuser_client):
    entry = InboxEntry.objects.create(consumer="orders.start_checkout", message_id=event().message_id)

    listing = superuser_client.get(reverse("admin:outbox_inboxentry_changelist"), {"q": "orders.start_checkout"})
    detail = superuser_client.get(reverse("admin:outbox_inboxentry_change", args=[entry.pk]))

    assert {row.pk for row in listing.context["cl"].result_list} == {entry.pk}
    assert detail.status_code == 200 and 'name="_save"' not in detail.content.decode()
    assert superuser_client.get(reverse("admin:outbox_inboxentry_add")).status_code == 403
