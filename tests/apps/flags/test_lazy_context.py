"""The request's flag context reads the user's groups once, and only when a rule (or a copy) needs them."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.http import HttpResponse
from django.test import RequestFactory
from django.test.utils import CaptureQueriesContext

from apps.flags import is_enabled
from apps.flags import snapshot as flags_snapshot
from apps.flags.context import FlagContextMiddleware, captured_context
from apps.flags.services import flag_save

pytestmark = pytest.mark.django_db


def _save(key: str, rules=()) -> None:
    flag_save(definition={"key": key, "enabled": True, "rules": list(rules)}, actor="tests", reason="test fixture")
    flags_snapshot.reload()  # on this test's connection, so it sees the uncommitted flag


def test_groups_are_read_once_per_request_and_only_when_a_rule_needs_them(django_user_model):
    _save("lazy.plain", rules=[{"kind": "users", "params": {"user_ids": [0]}}, {"kind": "everyone"}])
    _save("lazy.by-group", rules=[{"kind": "groups", "params": {"groups": ["beta"]}}])
    user = django_user_model.objects.create_user(username="lazy", password="not-used")
    user.groups.add(Group.objects.create(name="beta"))
    request = RequestFactory().get("/")
    request.user = user
    seen: dict = {}

    def view(request):
        with CaptureQueriesContext(connection) as before_groups:
            seen["plain"] = is_enabled("lazy.plain")
        with CaptureQueriesContext(connection) as groups:
            seen["by_group"] = [is_enabled("lazy.by-group"), is_enabled("lazy.by-group")]
            seen["captured"] = captured_context()
        seen["queries"] = (len(before_groups), len(groups))
        return HttpResponse()

    FlagContextMiddleware(view)(request)

    assert seen["plain"] is True and seen["by_group"] == [True, True]
    assert seen["queries"] == (0, 1)
    assert seen["captured"] == {"user_id": str(user.pk), "staff": False, "groups": ["beta"]}
