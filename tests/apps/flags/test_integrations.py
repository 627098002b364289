"""Gating endpoints by flag (DRF permission, view decorator), the template tag, and the OpenFeature provider.

The views below are served through the project's full middleware stack (this module is the URLconf),
so the request's flag context comes from FlagContextMiddleware, as in production.
"""

from __future__ import annotations

import pytest
from django.http import HttpResponse
from django.template import Context, Template
from django.test import Client, RequestFactory
from django.urls import path
from openfeature import api as openfeature_api
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason
from rest_framework.decorators import api_view, permission_classes
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.test import APIClient
from rest_framework.views import APIView

from apps.flags.context import set_context
from apps.flags.openfeature import TaskplaneProvider, context_from
from apps.flags.permissions import FlagEnabled, flag_required
from apps.flags.services import flag_save

pytestmark = [pytest.mark.django_db, pytest.mark.urls(__name__)]

PROBLEM = "application/problem+json"


class GatedView(APIView):
    permission_classes = [IsAuthenticated, FlagEnabled("beta")]

    def get(self, request):
        return Response({"ok": True})


class ForbiddenWhenOffView(GatedView):
    permission_classes = [IsAuthenticated, FlagEnabled("beta", status=403)]


@api_view(["GET"])
@permission_classes([IsAuthenticated])
@flag_required("beta")
def gated_api_function(request):
    return Response({"ok": True})


@flag_required("beta", status=403)
def gated_page(request):
    return HttpResponse("beta page")


@flag_required("beta")
def gated_api_page(request):
    return HttpResponse("beta")


urlpatterns = [
    path("api/gated/", GatedView.as_view()),
    path("api/gated-403/", ForbiddenWhenOffView.as_view()),
    path("api/gated-function/", gated_api_function),
    path("api/gated-plain/", gated_api_page),
    path("gated-page/", gated_page),
]




def save(key: str = "beta", **fields):
    return flag_save(definition={"key": key, "enabled": True, "rules": [], **fields}, actor="tests", reason="test")


def for_users(*users, key: str = "beta"):
    return save(key, rules=[{"kind": "users", "params": {"user_ids": [user.pk for user in users]}}])


@pytest.fixture
def session_client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


# --- DRF permission class ------------------------------------------------------------------------------


def test_the_permission_lets_through_callers_the_flag_is_on_for(api_client, user):
    for_users(user)

    response = api_client.get("/api/gated/")

    assert (response.status_code, response.json()) == (200, {"ok": True})


@pytest.mark.parametrize(("url", "status"), [("/api/gated/", 404), ("/api/gated-403/", 403)])
def test_the_permission_answers_the_chosen_problem_when_off(api_client, other_user, url, status):
    for_users(other_user)

    response = api_client.get(url)

    assert response.status_code == status
    assert response["Content-Type"] == PROBLEM
    assert response.json()["status"] == status


def test_a_missing_flag_counts_as_off(api_client):
    assert api_client.get("/api/gated/").status_code == 404


def test_anonymous_callers_get_401_before_the_flag_is_consulted():
    save()

    assert APIClient().get("/api/gated/").status_code == 401


def test_the_permission_works_on_a_view_called_directly(user, other_user):
    for_users(user)
    factory = RequestFactory()
    view = GatedView.as_view()

    def call(as_user):
        request = factory.get("/anywhere/")
        request.user = as_user
        request._dont_enforce_csrf_checks = True
        return view(request)

    assert call(user).status_code == 200
    assert call(other_user).status_code == 404


def test_the_factory_checks_its_arguments():
    with pytest.raises(ValueError, match="status"):
        FlagEnabled("beta", status=500)
    with pytest.raises(ValueError, match="key"):
        FlagEnabled("Not A Key")


# --- view decorator -------------------------------------------------------------------------------------


def test_the_decorator_serves_the_view_when_on(session_client, user):
    for_users(user)

    assert session_client.get("/gated-page/").content == b"beta page"
    assert session_client.get("/api/gated-plain/").content == b"beta"
    assert session_client.get("/api/gated-function/").json() == {"ok": True}


def test_the_decorator_answers_403_or_404_when_off(session_client, other_user):
    for_users(other_user)

    page = session_client.get("/gated-page/")
    plain_api = session_client.get("/api/gated-plain/")
    drf_function = session_client.get("/api/gated-function/")

    assert page.status_code == 403
    assert (plain_api.status_code, plain_api["Content-Type"]) == (404, PROBLEM)
    assert (drf_function.status_code, drf_function["Content-Type"]) == (404, PROBLEM)


def test_the_decorator_on_an_api_key_request_sees_the_key_user(api_client, user):
    for_users(user)

    assert api_client.get("/api/gated-function/").status_code == 200


def test_the_decorator_checks_its_arguments():
    with pytest.raises(ValueError, match="status"):
        flag_required("beta", status=302)


# --- template tag ----------------------------------------------------------------------------------------

TEMPLATE = Template('{% load flags %}{% flag_enabled "beta" as beta_on %}{% if beta_on %}ON{% else %}OFF{% endif %}')


def render_for(user) -> str:
    request = RequestFactory().get("/")
    request.user = user
    return TEMPLATE.render(Context({"request": request}))


def test_the_template_tag_uses_the_request_user(user, other_user):
    for_users(user)

    assert (render_for(user), render_for(other_user)) == ("ON", "OFF")


def test_the_template_tag_outside_a_request_uses_the_bound_context(user):
    for_users(user)
    set_context({"user_id": str(user.pk)})
    try:
        assert TEMPLATE.render(Context({})) == "ON"
    finally:
        set_context(None)
    assert TEMPLATE.render(Context({})) == "OFF"


def test_flag_value_tag_serves_variants(user):
    save("theme", kind="multivariate", default_value="light",
         variants=[{"name": "dark", "value": "dark", "weight": 100}],
         rules=[{"kind": "users", "params": {"user_ids": [user.pk]}}])
    request = RequestFactory().get("/")
    request.user = user

    rendered = Template('{% load flags %}{% flag_value "theme" "plain" %}|{% flag_value "nope" "plain" %}').render(
        Context({"request": request}))

    assert rendered == "dark|plain"


# --- OpenFeature provider ---------------------------------------------------------------------------------


@pytest.fixture
def client():
    openfeature_api.set_provider(TaskplaneProvider())
    yield openfeature_api.get_client()
    openfeature_api.clear_providers()


def test_openfeature_reads_taskplane_flags_with_the_targeting_key_as_user_id(client, user, other_user):
    for_users(user)

    mine = client.get_boolean_details("beta", False, EvaluationContext(targeting_key=str(user.pk)))
    theirs = client.get_boolean_details("beta", False, EvaluationContext(targeting_key=str(other_user.pk)))

    assert (mine.value, mine.reason, mine.error_code) == (True, Reason.TARGETING_MATCH, None)
    assert (theirs.value, theirs.reason) == (False, Reason.DEFAULT)


def test_openfeature_attributes_reach_constraints(client):
    save(rules=[{"kind": "constraint", "constraints": [
        {"attribute": "plan", "operator": "in", "values": ["pro", "enterprise"]},
        {"attribute": "app_version", "operator": "semver_gte", "values": ["2.4.0"]}]}])

    pro = EvaluationContext(targeting_key="7", attributes={"plan": "pro", "app_version": "2.10.0"})
    old_app = EvaluationContext(targeting_key="7", attributes={"plan": "pro", "app_version": "2.3.0"})

    assert client.get_boolean_value("beta", False, pro) is True
    assert client.get_boolean_value("beta", False, old_app) is False


def test_openfeature_percentage_rollouts_are_split(client):
    save(rules=[{"kind": "percentage", "params": {"percentage": 100}}])

    details = client.get_boolean_details("beta", False, EvaluationContext(targeting_key="42"))

    assert (details.value, details.reason) == (True, Reason.SPLIT)


def test_openfeature_without_a_context_uses_the_bound_one(client, user):
    for_users(user)
    set_context({"user_id": str(user.pk)})
    try:
        assert client.get_boolean_value("beta", False) is True
    finally:
        set_context(None)


def test_openfeature_variants_of_each_type(client, user):
    def variants_flag(key, value):
        save(key, kind="multivariate", default_value=None,
             variants=[{"name": "only", "value": value, "weight": 100}], rules=[{"kind": "everyone"}])

    variants_flag("label", "Buy now")
    variants_flag("limit", 5)
    variants_flag("ratio", 0.25)
    variants_flag("layout", {"columns": 3})
    context = EvaluationContext(targeting_key=str(user.pk))

    label = client.get_string_details("label", "Buy", context)
    assert (label.value, label.variant, label.reason) == ("Buy now", "only", Reason.SPLIT)
    assert client.get_integer_value("limit", 1, context) == 5
    assert client.get_float_value("limit", 1.0, context) == 5.0
    assert client.get_float_value("ratio", 1.0, context) == 0.25
    assert client.get_object_value("layout", {}, context) == {"columns": 3}


def test_openfeature_type_mismatch_answers_the_default(client):
    save("label", kind="multivariate", variants=[{"name": "only", "value": "text", "weight": 100}])
    save("flag")

    context = EvaluationContext(targeting_key="1")

    as_integer = client.get_integer_details("label", 3, context)
    as_string = client.get_string_details("flag", "fallback", context)

    assert (as_integer.value, as_integer.reason, as_integer.error_code) == (3, Reason.ERROR, ErrorCode.TYPE_MISMATCH)
    assert (as_string.value, as_string.error_code) == ("fallback", ErrorCode.TYPE_MISMATCH)


def test_openfeature_unknown_flag_is_flag_not_found_with_the_default(client):
    details = client.get_boolean_details("missing", True)

    assert (details.value, details.reason, details.error_code) == (True, Reason.ERROR, ErrorCode.FLAG_NOT_FOUND)


def test_openfeature_switched_off_multivariate_flag_answers_the_default(client):
    save("theme", kind="multivariate", enabled=False, variants=[{"name": "dark", "value": "dark", "weight": 100}])

    details = client.get_string_details("theme", "light")

    assert (details.value, details.reason, details.error_code) == ("light", Reason.DISABLED, None)


def test_context_from_does_not_lend_the_callers_groups_to_another_subject():
    set_context({"user_id": "1", "groups": ["staff-only"], "staff": True, "tenant": "acme"})
    try:
        own = context_from(EvaluationContext(targeting_key="1", attributes={"plan": "pro"}))
        other = context_from(EvaluationContext(targeting_key="2", attributes={"plan": "free"}))
    finally:
        set_context(None)

    assert own == {"user_id": "1", "groups": ["staff-only"], "staff": True, "tenant": "acme", "plan": "pro"}
    assert other == {"user_id": "2", "plan": "free"}
