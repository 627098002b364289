"""Flags API: staff list and change definitions (every write audited with a reason); any caller evaluates.

Staff endpoints check the flag model permissions admin checks: reading needs ``view_flag``; creating
or replacing (POST) needs ``add_flag`` and ``change_flag``, PATCH ``change_flag``, DELETE ``delete_flag``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.generics import GenericAPIView
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.core.errors import InvalidInput, NotFound
from apps.core.pagination import PageQuerySerializer, StandardPagination
from apps.core.permissions import StaffModelPermissions, model_permission
from apps.flags.context import request_context
from apps.flags.definitions import definition_of
from apps.flags.engine import ERROR
from apps.flags.evaluation import get_details
from apps.flags.models import KEY_PATTERN, Flag
from apps.flags.openapi import EXAMPLE_KEY
from apps.flags.serializers import (
    EVALUATIONS_SCHEMA,
    EvaluateQuerySerializer,
    FlagDeleteQuerySerializer,
    FlagPatchSerializer,
    FlagSerializer,
    FlagWriteSerializer,
    ReasonSerializer,
    field_errors,
    storage_errors,
)
from apps.flags.services import flag_delete, flag_save, flag_update

KEY_PARAMETER = OpenApiParameter(
    "key", OpenApiTypes.STR, OpenApiParameter.PATH, pattern=KEY_PATTERN, description="The flag's key.",
    examples=[OpenApiExample("the example flag", value=EXAMPLE_KEY)],
)


READ_FLAGS = [model_permission(Flag, "view")]


def _flag_data(flag: Flag) -> dict[str, Any]:
    return {**definition_of(flag), "version": flag.version}


def _body(request: Request) -> Mapping[str, Any]:
    if not isinstance(request.data, Mapping):
        raise serializers.ValidationError({"non_field_errors": ["Send a JSON object."]})
    return request.data


def _checked(serializer_class: type[serializers.Serializer], body: Mapping[str, Any], *,
             also_allowed: frozenset[str] = frozenset()) -> str:
    """Gate ``body`` on its fields' types and storage limits, and return the reason.

    The definition's meaning is validated by the service; this catches what would otherwise reach
    the database and fail there (a 500): over-long text, NUL characters, non-finite numbers.
    """
    fields = serializer_class().fields
    unknown = sorted(set(body) - set(fields) - also_allowed)
    if unknown:  # a typo such as "enabeld" must not be silently ignored on a kill switch
        raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
    errors = storage_errors(dict(body))
    if errors:
        raise InvalidInput("The request has values that cannot be stored; see errors.", errors=errors)
    serializer = serializer_class(data=body)
    if not serializer.is_valid():
        raise InvalidInput("The request has invalid fields; see errors.", errors=field_errors(serializer.errors))
    return serializer.validated_data["reason"]


def _actor(request: Request) -> str:
    return request.user.get_username()


class FlagListCreateView(GenericAPIView):
    # GenericAPIView only for its pagination hooks, which also document page/page_size in OpenAPI.
    permission_classes = [StaffModelPermissions]
    # POST creates the flag or replaces the one with that key: it may do either, so it needs both.
    required_permissions = {"GET": READ_FLAGS,
                            "POST": [model_permission(Flag, "add"), model_permission(Flag, "change")]}
    pagination_class = StandardPagination
    serializer_class = FlagSerializer

    @extend_schema(operation_id="flags_list", responses=FlagSerializer(many=True))
    def get(self, request: Request) -> Response:
        PageQuerySerializer(data=request.query_params).is_valid(raise_exception=True)
        page = self.paginate_queryset(Flag.objects.prefetch_related("rules").order_by("key"))
        return self.get_paginated_response([_flag_data(flag) for flag in page])

    @extend_schema(
        operation_id="flags_create", request=FlagWriteSerializer,
        responses={200: FlagSerializer, 201: FlagSerializer},
        description="Create a flag (201) or replace the flag with this key (200) from a full definition. "
                    "Invalid definitions answer 400 with one error per field; nothing is saved.",
    )
    def post(self, request: Request) -> Response:
        body = _body(request)
        # "version" is what GET answers; a definition fetched and posted back carries it (ignored).
        reason = _checked(FlagWriteSerializer, body, also_allowed=frozenset({"version"}))
        definition = {name: value for name, value in body.items() if name not in ("reason", "version")}
        flag = flag_save(definition=definition, actor=_actor(request), reason=reason)
        location = request.build_absolute_uri(reverse("flags:detail", kwargs={"key": flag.key}))
        created = flag.version == 1  # a flag's first save; replacing bumps the version past 1
        return Response(_flag_data(flag), status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
                        headers={"Location": location})


class FlagEvaluateView(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        operation_id="flags_evaluate", parameters=[EvaluateQuerySerializer], responses={200: EVALUATIONS_SCHEMA},
        description="Evaluate flags for the caller's own context (user id, groups, staff, project attributes).",
    )
    def get(self, request: Request) -> Response:
        query = EvaluateQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        context = request_context(request)
        return Response({key: _evaluation(key, context) for key in query.validated_data["keys"]})


def _evaluation(key: str, context: Mapping[str, Any]) -> dict[str, Any]:
    if not re.fullmatch(KEY_PATTERN, key):
        # Cannot name a flag; answered here so arbitrary client text never reaches the evaluator's
        # once-per-key error log.
        return {"value": None, "variant": None, "reason": ERROR, "error_code": "FLAG_NOT_FOUND"}
    details = get_details(key, None, context)
    return {"value": details.value, "variant": details.variant, "reason": details.reason,
            "error_code": details.error_code}


class FlagDetailView(APIView):
    permission_classes = [StaffModelPermissions]
    required_permissions = {"GET": READ_FLAGS, "PATCH": [model_permission(Flag, "change")],
                            "DELETE": [model_permission(Flag, "delete")]}

    @extend_schema(operation_id="flags_retrieve", parameters=[KEY_PARAMETER], responses=FlagSerializer)
    def get(self, request: Request, key: str) -> Response:
        flag = Flag.objects.prefetch_related("rules").filter(key=key).first()
        if flag is None:
            raise NotFound(f"No flag named {key!r}.")
        return Response(_flag_data(flag))

    @extend_schema(
        operation_id="flags_partial_update", parameters=[KEY_PARAMETER], request=FlagPatchSerializer,
        responses=FlagSerializer,
        description="Change some fields (or the first percentage rule's percentage) and record why.",
    )
    def patch(self, request: Request, key: str) -> Response:
        body = _body(request)
        reason = _checked(FlagPatchSerializer, body)
        changes = {name: value for name, value in body.items() if name != "reason"}
        if not changes:
            raise InvalidInput("Name at least one field to change.")
        flag = flag_update(key=key, changes=changes, actor=_actor(request), reason=reason)
        return Response(_flag_data(flag))

    @extend_schema(
        operation_id="flags_destroy", parameters=[KEY_PARAMETER, FlagDeleteQuerySerializer], request=None,
        responses={204: None},
        description="Delete the flag; evaluations then answer the caller's default with reason ERROR.",
    )
    def delete(self, request: Request, key: str) -> Response:
        body = _body(request)
        query = FlagDeleteQuerySerializer(data=request.query_params, partial=bool(body))
        query.is_valid(raise_exception=True)
        reason = _checked(ReasonSerializer, body) if body else query.validated_data["reason"]
        flag_delete(key=key, actor=_actor(request), reason=reason)
        return Response(status=status.HTTP_204_NO_CONTENT)
