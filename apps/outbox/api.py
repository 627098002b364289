"""Outbox control-plane API for operators: stats, message list, retry, discard and re-drive.

Staff only, with the model permissions admin checks: reading needs ``view_outboxmessage``; retry,
discard and re-drive need ``change_outboxmessage`` (admin's "operate"), and each is audited.
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.generics import GenericAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.core.audit import Actor, Via
from apps.core.pagination import StandardPagination
from apps.core.permissions import StaffModelPermissions, model_permission
from apps.outbox.models import OutboxMessage
from apps.outbox.selectors import outbox_messages, outbox_stats
from apps.outbox.serializers import (
    OperatorReasonSerializer,
    OutboxMessageFilterSerializer,
    OutboxMessageSerializer,
    OutboxStatsSerializer,
    RedriveRequestSerializer,
    RedriveSerializer,
)
from apps.outbox.services import outbox_discard_one, outbox_redrive, outbox_retry_one

MESSAGE_ID = OpenApiParameter("message_id", OpenApiTypes.INT, OpenApiParameter.PATH, description="Outbox row id.")
READ = {"GET": [model_permission(OutboxMessage, "view")]}
OPERATE = {"POST": [model_permission(OutboxMessage, "change")]}


def _context(request: Request) -> dict:
    # Encrypted payloads hold data their topic's owners chose to protect at rest: only superusers read them.
    return {"reveal_encrypted": bool(request.user.is_superuser)}


def _reason(request: Request) -> str:
    body = OperatorReasonSerializer(data=request.data)
    body.is_valid(raise_exception=True)
    return body.validated_data.get("reason", "")


class OutboxStatsView(APIView):
    permission_classes = [StaffModelPermissions]
    required_permissions = READ

    @extend_schema(operation_id="outbox_stats_retrieve", responses=OutboxStatsSerializer)
    def get(self, request: Request) -> Response:
        return Response(OutboxStatsSerializer(outbox_stats()).data)


class OutboxMessageListView(GenericAPIView):
    # GenericAPIView only for its pagination hooks, which also document page/page_size in OpenAPI.
    permission_classes = [StaffModelPermissions]
    required_permissions = READ
    pagination_class = StandardPagination
    serializer_class = OutboxMessageSerializer

    @extend_schema(
        operation_id="outbox_messages_list",
        parameters=[OutboxMessageFilterSerializer],
        responses=OutboxMessageSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        filters = OutboxMessageFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        data = filters.validated_data
        messages = outbox_messages(
            status=data.get("status"), name=data.get("topic"), key=data.get("key"), kind=data.get("kind")
        )
        page = self.paginate_queryset(messages)
        return self.get_paginated_response(OutboxMessageSerializer(page, many=True, context=_context(request)).data)


class OutboxMessageRetryView(APIView):
    permission_classes = [StaffModelPermissions]
    required_permissions = OPERATE

    @extend_schema(
        operation_id="outbox_messages_retry", parameters=[MESSAGE_ID], request=OperatorReasonSerializer,
        responses=OutboxMessageSerializer,
        description="Put a dead or discarded message back to pending (409 otherwise). Audited; the body "
                    "(optional) gives the reason.",
    )
    def post(self, request: Request, message_id: int) -> Response:
        message = outbox_retry_one(message_id=message_id, actor=Actor.from_request(request, via=Via.API),
                                   reason=_reason(request))
        return Response(OutboxMessageSerializer(message, context=_context(request)).data)


class OutboxMessageDiscardView(APIView):
    permission_classes = [StaffModelPermissions]
    required_permissions = OPERATE

    @extend_schema(
        operation_id="outbox_messages_discard", parameters=[MESSAGE_ID], request=OperatorReasonSerializer,
        responses=OutboxMessageSerializer,
        description="Stop relaying a pending or dead message (409 otherwise). Audited; the body (optional) "
                    "gives the reason.",
    )
    def post(self, request: Request, message_id: int) -> Response:
        message = outbox_discard_one(message_id=message_id, actor=Actor.from_request(request, via=Via.API),
                                     reason=_reason(request))
        return Response(OutboxMessageSerializer(message, context=_context(request)).data)


class OutboxMessageRedriveView(APIView):
    permission_classes = [StaffModelPermissions]
    required_permissions = OPERATE

    @extend_schema(
        operation_id="outbox_messages_redrive", parameters=[MESSAGE_ID], request=RedriveRequestSerializer,
        responses={202: RedriveSerializer},
        description="Deliver a published event to one of its topic's subscribers again, bypassing the "
                    "subscriber's inbox entry (e.g. after a flag-gated subscriber skipped it). Audited; the "
                    "reason is required. 404 if the row is gone (purged), 409 if it is not a published event "
                    "or the subscriber does not subscribe to its topic.",
    )
    def post(self, request: Request, message_id: int) -> Response:
        body = RedriveRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        redrive = outbox_redrive(message_id=message_id, subscriber=body.validated_data["subscriber"],
                                 actor=Actor.from_request(request, via=Via.API),
                                 reason=body.validated_data["reason"])
        return Response(RedriveSerializer(redrive, context=_context(request)).data, status=status.HTTP_202_ACCEPTED)
