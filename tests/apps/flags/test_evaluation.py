"""Evaluation through the public API against the in-process snapshot: rollout statistics, stickiness,
operators, variants, windows, and the never-raise contract.

Flags are written in the test's transaction and the snapshot is reloaded on the test's connection.
The snapshot's listener thread reads committed data only, so it is held still here (any process's
flag change signals it); test_propagation covers it, and read-your-writes, against real processes.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from datetime import timedelta

import pytest
from django.utils import timezone

from apps.flags import get_details, get_value, is_enabled
from apps.flags import snapshot as flags_snapshot
from apps.flags.engine import bucket
from apps.flags.services import flag_save, flag_update

pytestmark = pytest.mark.django_db

SUBJECTS = 10_000




def _save(key: str, *, rules=(), **fields):
    definition = {"key": key, "enabled": True, "rules": list(rules), **fields}
    flag = flag_save(definition=definition, actor="tests", reason="test fixture")
    flags_snapshot.reload()  # on this test's connection, so it sees the uncommitted flag
    return flag


def _percentage(value, **params):
    return {"kind": "percentage", "params": {"percentage": value, **params}}


def _constraint(attribute, operator, *values):
    constraint = {"attribute": attribute, "operator": operator, "values": list(values)}
    return {"kind": "constraint", "constraints": [constraint]}


def _on_share(key: str, subjects=range(SUBJECTS)) -> float:
    return sum(is_enabled(key, {"user_id": str(subject)}) for subject in subjects) / len(subjects)


def test_thirty_percent_serves_thirty_percent_of_ten_thousand_subjects():
    _save("rollout.thirty", rules=[_percentage(30)])

    share = _on_share("rollout.thirty")

    assert 0.28 <= share <= 0.32, share
    assert get_details("rollout.thirty", context={"user_id": "1"}).reason in ("SPLIT", "DEFAULT")


def test_raising_the_percentage_only_adds_subjects():
    _save("rollout.ramp", rules=[_percentage(20)])
    on_at_20 = {s for s in range(SUBJECTS) if is_enabled("rollout.ramp", {"user_id": str(s)})}

    flag_update(key="rollout.ramp", changes={"percentage": 40}, actor="tests", reason="ramp up")
    flags_snapshot.reload()
    on_at_40 = {s for s in range(SUBJECTS) if is_enabled("rollout.ramp", {"user_id": str(s)})}

    assert on_at_20 <= on_at_40, f"{len(on_at_20 - on_at_40)} subjects lost the feature when the rollout grew"
    assert 0.18 <= len(on_at_20) / SUBJECTS <= 0.22 and 0.38 <= len(on_at_40) / SUBJECTS <= 0.42


def test_buckets_are_pinned_so_restarts_and_deploys_keep_every_answer():
    # Computed once and frozen: a change of hash, seed format or number parsing would reshuffle who
    # has a feature on the next deploy, which is exactly what stickiness forbids.
    _save("checkout.new-flow", rules=[_percentage(30)])

    on = [s for s in range(1, 41) if is_enabled("checkout.new-flow", {"user_id": str(s)})]

    assert on == [1, 5, 7, 8, 12, 33, 34, 37]
    assert bucket("checkout.new-flow:42") == pytest.approx(25.58411644952729, abs=1e-9)
    assert is_enabled("checkout.new-flow", {"user_id": 1}) == is_enabled("checkout.new-flow", {"user_id": "1"})


def test_stickiness_follows_the_chosen_attribute():
    _save("pricing", rules=[_percentage(50, stickiness="tenant")])
    tenants = [f"tenant-{n}" for n in range(200)]

    answers = {t: is_enabled("pricing", {"tenant": t, "user_id": "u1"}) for t in tenants}

    # Every user of a tenant gets the tenant's answer; without the attribute the rule cannot split.
    assert all(is_enabled("pricing", {"tenant": t, "user_id": f"u{n}"}) == answers[t] for t in tenants[:20]
               for n in range(5))
    assert 0.35 < sum(answers.values()) / len(tenants) < 0.65
    details = get_details("pricing", context={"user_id": "u1"})
    assert (details.value, details.reason) == (False, "DEFAULT")


def test_multivariate_split_follows_the_weights():
    _save("checkout.new-flow", kind="multivariate", default_value="control",
          variants=[{"name": "control", "value": "control", "weight": 50},
                    {"name": "blue", "value": {"color": "#00f"}, "weight": 30},
                    {"name": "green", "value": 7, "weight": 20}])

    served = Counter(get_details("checkout.new-flow", context={"user_id": str(s)}).variant for s in range(SUBJECTS))

    assert set(served) == {"control", "blue", "green"}
    for name, weight in (("control", 0.5), ("blue", 0.3), ("green", 0.2)):
        assert abs(served[name] / SUBJECTS - weight) <= 0.02, served
    assert get_value("checkout.new-flow", None, {"user_id": "2"}) == {"color": "#00f"}  # pinned below
    assert [get_details("checkout.new-flow", context={"user_id": str(s)}).variant for s in range(1, 7)] == [
        "green", "blue", "green", "blue", "control", "blue"]
    assert get_details("checkout.new-flow", context={"user_id": "1"}).reason == "SPLIT"


def test_a_rule_can_pin_a_variant_and_a_context_without_subject_gets_the_default():
    _save("banner", kind="multivariate", default_value="none",
          variants=[{"name": "a", "value": "A", "weight": 50}, {"name": "b", "value": "B", "weight": 50}],
          rules=[{**_constraint("staff", "equals", True), "variant": "b"}, {"kind": "everyone"}])

    assert get_details("banner", context={"staff": True, "user_id": "9"})[:3] == ("B", "b", "TARGETING_MATCH")
    assert get_details("banner", context={}).value == "none"


@pytest.mark.parametrize(
    ("constraint", "matching", "not_matching"),
    [
        (("app_version", "semver_gte", "2.9.0"), ["2.10.0", "3.0.0", "2.9.0"], ["2.8.9", "2.9.0-rc.1", "v2.10", "x"]),
        (("app_version", "semver_lt", "2.0.0"), ["1.99.99", "2.0.0-beta"], ["2.0.0", "10.0.0"]),
        (("app_version", "semver_eq", "1.2.3"), ["1.2.3", "1.2.3+build.5"], ["1.2.4", "1.2.3-rc.1"]),
        (("email", "regex", r"@example\.(com|org)$"), ["a@example.com", "b@example.org"], ["a@example.net", 5]),
        (("seats", "gte", 10), [10, "10", 11.5, "1e3"], [9, "9.99", "ten", True, None]),
        (("seats", "lt", 10), [9, -1, "0"], [10, "abc", False]),
        (("plan", "in", "pro", "enterprise"), ["pro", "enterprise"], ["free", "Pro", None]),
        (("plan", "not_in", "free"), ["pro", "team"], ["free"]),
        (("country", "equals", "DE"), ["DE"], ["de", "FR"]),
        (("tenant", "equals", 42), [42, "42"], [43, "042"]),
        (("country", "not_equals", "DE"), ["FR"], ["DE"]),
    ],
)
def test_constraint_operators(constraint, matching, not_matching):
    attribute, operator, *values = constraint
    key = f"op.{operator}.{uuid.uuid4().hex[:8]}"
    _save(key, rules=[_constraint(attribute, operator, *values)])

    assert [is_enabled(key, {attribute: value}) for value in matching] == [True] * len(matching)
    assert [is_enabled(key, {attribute: value}) for value in not_matching] == [False] * len(not_matching)
    # A context without the attribute never matches, not even a negated operator.
    assert is_enabled(key, {}) is False
    assert get_details(key, context={attribute: matching[0]}).reason == "TARGETING_MATCH"


def test_rules_apply_top_down_and_combine_constraint_with_percentage():
    _save("combined", rules=[
        {"kind": "users", "params": {"user_ids": [7]}},
        {"kind": "groups", "params": {"groups": ["beta"]}},
        {"kind": "percentage", "params": {"percentage": 50},
         "constraints": [{"attribute": "plan", "operator": "in", "values": ["pro"]}]},
    ])

    assert get_details("combined", context={"user_id": "7"}).rule_index == 0
    assert get_details("combined", context={"user_id": "8", "groups": ["beta"]}).rule_index == 1
    others = range(100, 1100)
    free = [is_enabled("combined", {"user_id": str(s), "plan": "free"}) for s in others]
    pro = [is_enabled("combined", {"user_id": str(s), "plan": "pro"}) for s in others]
    assert not any(free) and 0.45 < sum(pro) / len(others) < 0.55
    assert get_details("combined", context={"user_id": "7", "plan": "free"}).reason == "TARGETING_MATCH"


def test_unknown_flag_answers_the_default_with_error_and_logs_once(caplog):
    key = f"missing.{uuid.uuid4().hex}"
    with caplog.at_level(logging.INFO, logger="apps.flags"):
        first = get_details(key, "fallback", {"user_id": "1"})
        for _ in range(100):
            assert get_value(key, "fallback") == "fallback"
        assert is_enabled(key) is False

    assert (first.value, first.variant, first.reason, first.error_code) == ("fallback", None, "ERROR", "FLAG_NOT_FOUND")
    logged = [record for record in caplog.records if key in record.getMessage()]
    assert len(logged) == 1, [record.getMessage() for record in logged]


def test_outside_its_window_a_flag_is_disabled():
    now = timezone.now()
    _save("window.future", starts_at=(now + timedelta(hours=1)).isoformat())
    _save("window.past", ends_at=(now - timedelta(seconds=1)).isoformat())
    _save("window.open", starts_at=(now - timedelta(hours=1)).isoformat(),
          ends_at=(now + timedelta(hours=1)).isoformat())
    _save("switched.off", enabled=False, rules=[{"kind": "everyone"}])

    for key in ("window.future", "window.past", "switched.off"):
        details = get_details(key, True, {"user_id": "1"})
        assert (details.value, details.reason) == (False, "DISABLED"), key
    assert get_details("window.open", context={"user_id": "1"})[:3] == (True, None, "STATIC")


def test_a_switched_off_multivariate_flag_without_default_answers_the_callers_default():
    _save("theme", kind="multivariate", enabled=False,
          variants=[{"name": "dark", "value": "dark", "weight": 100}])

    assert get_details("theme", context={"user_id": "1"}).reason == "DISABLED"
    assert get_value("theme", "light", {"user_id": "1"}) == "light"
