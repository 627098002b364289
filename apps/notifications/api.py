"""Webhooks API (/api/webhooks/): endpoints of the caller, their secrets, the delivery log, replay and recover.

Any authenticated user manages their own endpoints; staff read or act on everyone's with the model
permissions admin checks (apps/notifications/selectors.py). Errors are problem+json and bad input
saves nothing; unsafe calls go through the idempotency middleware like every other.
"""

from __future__ import annotations

from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.generics import GenericAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.core.audit import Actor, Via
from apps.core.errors import PermissionDenied
from apps.core.pagination import PageQuerySerializer, StandardPagination
from apps.idempotency.records import response_keep_encrypted
from apps.notifications.events import EVENT_TYPES
from apps.notifications.secrets import endpoint_current_secret
from apps.notifications.selectors import ACT, DELETE, OWNER, endpoint_get, endpoint_scope, message_get, message_list
from apps.notifications.serializers import (
    EndpointCreatedSerializer,
    EndpointPatchSerializer,
    EndpointSerializer,
    EndpointWriteSerializer,
    EventTypeSerializer,
    MessageFilterSerializer,
    MessageSerializer,
    RecoveredSerializer,
    RecoverSerializer,
    ReplaySerializer,
    SecretSerializer,
)
from apps.notifications.services import (
    endpoint_create,
    endpoint_delete,
    endpoint_recover,
    endpoint_secret_rotate,
    endpoint_send_test,
    endpoint_update,
    message_replay,
)

ENDPOINT_ID = OpenApiParameter("endpoint_id", OpenApiTypes.UUID, OpenApiParameter.PATH,
                               description="The endpoint's id.")
MESSAGE_ID = OpenApiParameter("message_id", OpenApiTypes.UUID, OpenApiParameter.PATH,
                              description="The message's id (its webhook-id).")


def _valid(serializer_class, data) -> dict:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


class EndpointListCreateView(GenericAPIView):
    pagination_class = StandardPagination
    serializer_class = EndpointSerializer

    @extend_schema(operation_id="webhooks_endpoints_list", parameters=[PageQuerySerializer],
                   responses=EndpointSerializer(many=True),
                   description="Your endpoints (staff with view_endpoint: every endpoint), newest first.")
    def get(self, request: Request) -> Response:
        _valid(PageQuerySerializer, request.query_params)
        page = self.paginate_queryset(endpoint_scope(user=request.user).select_related("owner"))
        return self.get_paginated_response(EndpointSerializer(page, many=True).data)

    @extend_schema(operation_id="webhooks_endpoints_create", request=EndpointWriteSerializer,
                   responses={201: EndpointCreatedSerializer},
                   description="Create an endpoint; the answer holds its signing secret. A URL the SSRF guard "
                               "refuses or an unknown event type is a 400 and nothing is saved.")
    def post(self, request: Request) -> Response:
        endpoint, secret = endpoint_create(owner=request.user, **_valid(EndpointWriteSerializer, request.data))
        location = request.build_absolute_uri(reverse("webhooks:endpoint", kwargs={"endpoint_id": endpoint.pk}))
        data = {**EndpointSerializer(endpoint).data, "secret": secret}
        return response_keep_encrypted(Response(data, status=status.HTTP_201_CREATED, headers={"Location": location}))


class EndpointDetailView(APIView):
    @extend_schema(operation_id="webhooks_endpoints_retrieve", parameters=[ENDPOINT_ID], responses=EndpointSerializer)
    def get(self, request: Request, endpoint_id) -> Response:
        return Response(EndpointSerializer(endpoint_get(user=request.user, endpoint_id=endpoint_id)).data)

    @extend_schema(operation_id="webhooks_endpoints_partial_update", parameters=[ENDPOINT_ID],
                   request=EndpointPatchSerializer, responses=EndpointSerializer,
                   description="Change an endpoint. Staff with change_endpoint may only enable or disable "
                               "another user's endpoint.")
    def patch(self, request: Request, endpoint_id) -> Response:
        changes = _valid(EndpointPatchSerializer, request.data)
        endpoint = endpoint_get(user=request.user, endpoint_id=endpoint_id, access=ACT)
        if endpoint.owner_id != request.user.pk and set(changes) - {"enabled"}:
            raise PermissionDenied("Only the owner may change this endpoint's settings; staff may enable or "
                                   "disable it.")
        return Response(EndpointSerializer(endpoint_update(endpoint_id=endpoint.pk, changes=changes)).data)

    @extend_schema(operation_id="webhooks_endpoints_destroy", parameters=[ENDPOINT_ID], responses={204: None})
    def delete(self, request: Request, endpoint_id) -> Response:
        endpoint = endpoint_get(user=request.user, endpoint_id=endpoint_id, access=DELETE)
        endpoint_delete(endpoint_id=endpoint.pk)
        return Response(status=status.HTTP_204_NO_CONTENT)


class EndpointSecretView(APIView):
    @extend_schema(operation_id="webhooks_endpoints_secret", parameters=[ENDPOINT_ID], responses=SecretSerializer,
                   description="The current signing secret (the owner only).")
    def get(self, request: Request, endpoint_id) -> Response:
        endpoint = endpoint_get(user=request.user, endpoint_id=endpoint_id, access=OWNER)
        return Response({"secret": endpoint_current_secret(endpoint=endpoint),
                         "previous_secret_until": endpoint.previous_secret_until})


class EndpointRotateView(APIView):
    @extend_schema(operation_id="webhooks_endpoints_rotate_secret", parameters=[ENDPOINT_ID], request=None,
                   responses=SecretSerializer,
                   description="A new secret; the previous one keeps signing for WEBHOOKS_SECRET_GRACE_SECONDS "
                               "(the owner only).")
    def post(self, request: Request, endpoint_id) -> Response:
        endpoint = endpoint_get(user=request.user, endpoint_id=endpoint_id, access=OWNER)
        secret = endpoint_secret_rotate(endpoint_id=endpoint.pk)
        endpoint.refresh_from_db()
        return response_keep_encrypted(Response({"secret": secret,
                                                 "previous_secret_until": endpoint.previous_secret_until}))


class EndpointTestView(APIView):
    @extend_schema(operation_id="webhooks_endpoints_test", parameters=[ENDPOINT_ID], request=None,
                   responses={202: MessageSerializer}, description="Send a webhook.test message to this endpoint.")
    def post(self, request: Request, endpoint_id) -> Response:
        endpoint = endpoint_get(user=request.user, endpoint_id=endpoint_id, access=ACT)
        message = endpoint_send_test(endpoint_id=endpoint.pk)
        return Response(MessageSerializer(message_get(user=request.user, message_id=message.pk)).data,
                        status=status.HTTP_202_ACCEPTED)


class EndpointRecoverView(APIView):
    @extend_schema(operation_id="webhooks_endpoints_recover", parameters=[ENDPOINT_ID], request=RecoverSerializer,
                   responses={202: RecoveredSerializer},
                   description="Replay every failed message of this endpoint created since a time (same webhook-id).")
    def post(self, request: Request, endpoint_id) -> Response:
        since = _valid(RecoverSerializer, request.data)["since"]
        endpoint = endpoint_get(user=request.user, endpoint_id=endpoint_id, access=ACT)
        count = endpoint_recover(endpoint_id=endpoint.pk, since=since, actor=Actor.from_request(request, via=Via.API))
        return Response({"recovered": count}, status=status.HTTP_202_ACCEPTED)


class MessageListView(GenericAPIView):
    pagination_class = StandardPagination
    serializer_class = MessageSerializer

    @extend_schema(operation_id="webhooks_messages_list", parameters=[MessageFilterSerializer],
                   responses=MessageSerializer(many=True),
                   description="Messages to endpoints you may read, newest first, with their deliveries and attempts.")
    def get(self, request: Request) -> Response:
        filters = _valid(MessageFilterSerializer, request.query_params)
        page = self.paginate_queryset(message_list(user=request.user, endpoint_id=filters.get("endpoint"),
                                                   state=filters.get("status")))
        return self.get_paginated_response(MessageSerializer(page, many=True).data)


class MessageDetailView(APIView):
    @extend_schema(operation_id="webhooks_messages_retrieve", parameters=[MESSAGE_ID], responses=MessageSerializer)
    def get(self, request: Request, message_id) -> Response:
        return Response(MessageSerializer(message_get(user=request.user, message_id=message_id)).data)


class MessageReplayView(APIView):
    @extend_schema(operation_id="webhooks_messages_replay", parameters=[MESSAGE_ID], request=ReplaySerializer,
                   responses={202: MessageSerializer},
                   description="Send the message to the endpoint again, with the same webhook-id (a new round of "
                               "attempts). 409 while an attempt is in flight, or when the endpoint is disabled.")
    def post(self, request: Request, message_id) -> Response:
        endpoint_id = _valid(ReplaySerializer, request.data)["endpoint"]
        message_get(user=request.user, message_id=message_id)  # 404 unless the caller may read it
        endpoint = endpoint_get(user=request.user, endpoint_id=endpoint_id, access=ACT)
        message_replay(message_id=message_id, endpoint_id=endpoint.pk, actor=Actor.from_request(request, via=Via.API))
        return Response(MessageSerializer(message_get(user=request.user, message_id=message_id)).data,
                        status=status.HTTP_202_ACCEPTED)


class EventTypeListView(APIView):
    @extend_schema(operation_id="webhooks_event_types", responses=EventTypeSerializer(many=True),
                   description="The event types endpoints can subscribe to.")
    def get(self, request: Request) -> Response:
        return Response([{"name": name, "description": text} for name, text in sorted(EVENT_TYPES.items())])
