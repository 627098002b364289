"""Saga control-plane API for operators: list and inspect instances, cancel, retry a failed compensation, resolve.

Staff only, with the model permissions admin checks: reading needs ``view_sagainstance``; cancel, retry
and resolve need ``change_sagainstance`` (admin's actions need it too), and each is audited by its service.
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework.generics import GenericAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.core.audit import Actor, Via
from apps.core.pagination import StandardPagination
from apps.core.permissions import StaffModelPermissions, model_permission
from apps.core.serializers import StrictSerializer
from apps.sagas.models import SagaInstance
from apps.sagas.selectors import saga_definition_status, saga_get, saga_list, saga_timeline
from apps.sagas.serializers import (
    SagaDetailSerializer,
    SagaFilterSerializer,
    SagaReasonSerializer,
    SagaResolveSerializer,
    SagaSerializer,
)
from apps.sagas.services import saga_cancel, saga_resolve, saga_retry

# Django's uuid path converter matches lowercase hexadecimal only: anything else is a routing 404.
UUID_PATTERN = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
SAGA_ID = OpenApiParameter("saga_id", OpenApiTypes.UUID, OpenApiParameter.PATH, pattern=UUID_PATTERN,
                           description="The saga instance's id (lowercase UUID).")
READ = {"GET": [model_permission(SagaInstance, "view")]}
OPERATE = {"POST": [model_permission(SagaInstance, "change")]}


def saga_detail_data(instance: SagaInstance) -> dict:
    """The detail answer of one instance: its fields, definition status and timeline."""
    context = {"definition": saga_definition_status(instance), "timeline": saga_timeline(saga_id=instance.pk)}
    return SagaDetailSerializer(instance, context=context).data


class SagaListView(GenericAPIView):
    # GenericAPIView only for its pagination hooks, which also document page/page_size in OpenAPI.
    permission_classes = [StaffModelPermissions]
    required_permissions = READ
    pagination_class = StandardPagination
    serializer_class = SagaSerializer

    @extend_schema(operation_id="sagas_list", parameters=[SagaFilterSerializer], responses=SagaSerializer(many=True),
                   description="Saga instances, newest first.")
    def get(self, request: Request) -> Response:
        filters = SagaFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        data = filters.validated_data
        instances = saga_list(name=data.get("name") or None, state=data.get("state") or None,
                              key=data.get("key") or None, created_before=data.get("created_before"),
                              created_after=data.get("created_after"))
        page = self.paginate_queryset(instances)
        return self.get_paginated_response(SagaSerializer(page, many=True).data)


class SagaDetailView(APIView):
    permission_classes = [StaffModelPermissions]
    required_permissions = READ

    @extend_schema(operation_id="sagas_retrieve", parameters=[SAGA_ID], responses=SagaDetailSerializer,
                   description="One instance with its timeline and whether the code still declares its steps.")
    def get(self, request: Request, saga_id) -> Response:
        return Response(saga_detail_data(saga_get(saga_id=saga_id)))


class SagaActionView(APIView):
    """POST /api/sagas/{id}/<action>/: parse the body, call the action's service as the caller, answer the detail."""

    permission_classes = [StaffModelPermissions]
    required_permissions = OPERATE
    body_class: type[StrictSerializer] = SagaReasonSerializer

    def act(self, *, saga_id, actor: Actor, body: dict) -> SagaInstance:
        raise NotImplementedError

    def post(self, request: Request, saga_id) -> Response:
        body = self.body_class(data=request.data)
        body.is_valid(raise_exception=True)
        instance = self.act(saga_id=saga_id, actor=Actor.from_request(request, via=Via.API),
                            body=body.validated_data)
        return Response(saga_detail_data(instance))


def _action_schema(operation_id: str, body: type[StrictSerializer], description: str):
    return extend_schema_view(post=extend_schema(operation_id=operation_id, parameters=[SAGA_ID], request=body,
                                                 responses=SagaDetailSerializer, description=description))


@_action_schema("sagas_cancel", SagaReasonSerializer,
                "Compensate now: the saga runs the compensations of its completed steps and ends cancelled (a "
                "step in flight finishes first). 409 when it is not running or past its pivot. Audited; the body "
                "(optional) gives the reason.")
class SagaCancelView(SagaActionView):
    def act(self, *, saga_id, actor: Actor, body: dict) -> SagaInstance:
        return saga_cancel(saga_id=saga_id, actor=actor, reason=body.get("reason", ""))


@_action_schema("sagas_retry", SagaReasonSerializer,
                "Run the failed compensation of a compensation_failed saga again, with a fresh attempt budget (the "
                "saga is compensating again; running again when what stopped it was a step past the pivot that "
                "the code no longer declared). 409 in any other state, or while that step is still not declared. "
                "Audited; the body (optional) gives the reason.")
class SagaRetryView(SagaActionView):
    def act(self, *, saga_id, actor: Actor, body: dict) -> SagaInstance:
        return saga_retry(saga_id=saga_id, actor=actor, reason=body.get("reason", ""))


@_action_schema("sagas_resolve", SagaResolveSerializer,
                "Mark a compensation_failed saga compensated after fixing by hand what its compensation could not "
                "undo; the note (required) is kept on the instance. 409 in any other state. Audited.")
class SagaResolveView(SagaActionView):
    body_class = SagaResolveSerializer

    def act(self, *, saga_id, actor: Actor, body: dict) -> SagaInstance:
        return saga_resolve(saga_id=saga_id, actor=actor, note=body["note"])
