"""Outbox control-plane API for operators: stats, message list, retry and discard (staff only)."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.generics import GenericAPIView
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.core.pagination import StandardPagination
from apps.outbox.selectors import outbox_messages, outbox_stats
from apps.outbox.serializers import OutboxMessageFilterSerializer, OutboxMessageSerializer, OutboxStatsSerializer
from apps.outbox.services import outbox_discard_one, outbox_retry_one

MESSAGE_ID = OpenApiParameter("message_id", OpenApiTypes.INT, OpenApiParameter.PATH, description="Outbox row id.")


def _context(request: Request) -> dict:
    # Encrypted payloads hold data their topic's owners chose to protect at rest: only superusers read them.
    return {"reveal_encrypted": bool(request.user.is_superuser)}


class OutboxStatsView(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(operation_id="outbox_stats_retrieve", responses=OutboxStatsSerializer)
    def get(self, request: Request) -> Response:
        return Response(OutboxStatsSerializer(outbox_stats()).data)


class OutboxMessageListView(GenericAPIView):
    # GenericAPIView only for its pagination hooks, which also document page/page_size in OpenAPI.
    permission_classes = [IsAdminUser]
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
    permission_classes = [IsAdminUser]

    @extend_schema(
        operation_id="outbox_messages_retry", parameters=[MESSAGE_ID], request=None,
        responses=OutboxMessageSerializer,
        description="Put a dead or discarded message back to pending (409 otherwise).",
    )
    def post(self, request: Request, message_id: int) -> Response:
        message = outbox_retry_one(message_id=message_id)
        return Response(OutboxMessageSerializer(message, context=_context(request)).data)


class OutboxMessageDiscardView(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(
        operation_id="outbox_messages_discard", parameters=[MESSAGE_ID], request=None,
        responses=OutboxMessageSerializer,
        description="Stop relaying a pending or dead message (409 otherwise).",
    )
    def post(self, request: Request, message_id: int) -> Response:
        message = outbox_discard_one(message_id=message_id)
        return Response(OutboxMessageSerializer(message, context=_context(request)).data)
