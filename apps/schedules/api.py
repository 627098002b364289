"""Schedules staff API: define, edit, pause, resume, run now, backfill, fire history, and cron previews.

Staff only, with the model permissions admin checks: reading needs ``view_schedule``; creating needs
``add_schedule``; editing, pausing, resuming, triggering and backfilling need ``change_schedule``;
deleting needs ``delete_schedule``. Every write is audited (apps/core/audit.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.generics import GenericAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.core.audit import Actor, Via
from apps.core.pagination import PageQuerySerializer, StandardPagination
from apps.core.permissions import StaffModelPermissions, model_permission
from apps.schedules.models import NAME_PATTERN, Schedule
from apps.schedules.selectors import cron_preview, schedule_fires, schedule_get, schedule_list
from apps.schedules.serializers import (
    BackfillResultSerializer,
    BackfillSerializer,
    FireSerializer,
    NoteSerializer,
    PreviewQuerySerializer,
    PreviewSerializer,
    SchedulePatchSerializer,
    ScheduleSerializer,
    ScheduleWriteSerializer,
)
from apps.schedules.services import (
    schedule_backfill,
    schedule_create,
    schedule_delete,
    schedule_pause,
    schedule_resume,
    schedule_trigger,
    schedule_update,
)

NAME = OpenApiParameter("name", OpenApiTypes.STR, OpenApiParameter.PATH, pattern=NAME_PATTERN,
                        description="The schedule's name.")
VIEW = [model_permission(Schedule, "view")]
CHANGE = [model_permission(Schedule, "change")]


def _body(request: Request) -> Mapping[str, Any]:
    data = request.data if request.data is not None else {}
    if not isinstance(data, Mapping):
        raise serializers.ValidationError({"non_field_errors": ["Send a JSON object."]})
    return data


def _parsed(serializer_class: type[serializers.Serializer], request: Request, **options: Any) -> dict[str, Any]:
    body = serializer_class(data=_body(request), **options)
    body.is_valid(raise_exception=True)
    return dict(body.validated_data)


def _actor(request: Request) -> Actor:
    return Actor.from_request(request, via=Via.API)


class ScheduleListCreateView(GenericAPIView):
    permission_classes = [StaffModelPermissions]
    required_permissions = {"GET": VIEW, "POST": [model_permission(Schedule, "add")]}
    pagination_class = StandardPagination
    serializer_class = ScheduleSerializer

    @extend_schema(operation_id="schedules_list", parameters=[PageQuerySerializer],
                   responses=ScheduleSerializer(many=True))
    def get(self, request: Request) -> Response:
        PageQuerySerializer(data=request.query_params).is_valid(raise_exception=True)
        page = self.paginate_queryset(schedule_list())
        return self.get_paginated_response(ScheduleSerializer(page, many=True).data)

    @extend_schema(operation_id="schedules_create", request=ScheduleWriteSerializer,
                   responses={201: ScheduleSerializer},
                   description="Create a schedule. Invalid input (bad cron, unknown zone or task, interval < 1, "
                               "end before start, more than one cadence) answers 400 with field errors; nothing "
                               "is saved. The firing loops see it within their wake-up (a change signal).")
    def post(self, request: Request) -> Response:
        data = _parsed(ScheduleWriteSerializer, request)
        schedule = schedule_create(data=data, actor=_actor(request))
        location = request.build_absolute_uri(reverse("schedules:detail", kwargs={"name": schedule.name}))
        return Response(ScheduleSerializer(schedule).data, status=status.HTTP_201_CREATED,
                        headers={"Location": location})


class SchedulePreviewView(APIView):
    permission_classes = [StaffModelPermissions]
    required_permissions = {"GET": VIEW}

    @extend_schema(operation_id="schedules_preview", parameters=[PreviewQuerySerializer],
                   responses=PreviewSerializer,
                   description="The next `count` fire instants of a cron expression in a time zone, in UTC, "
                               "computed by the code the firing loop uses (DST rules in docs/schedules.md).")
    def get(self, request: Request) -> Response:
        query = PreviewQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        data = query.validated_data
        fires = cron_preview(cron=data["cron"], timezone=data["timezone"], start=data.get("start"),
                             count=data["count"])
        return Response(PreviewSerializer({"cron": data["cron"], "timezone": data["timezone"], "fires": fires}).data)


class ScheduleDetailView(APIView):
    permission_classes = [StaffModelPermissions]
    required_permissions = {"GET": VIEW, "PATCH": CHANGE, "DELETE": [model_permission(Schedule, "delete")]}

    @extend_schema(operation_id="schedules_retrieve", parameters=[NAME], responses=ScheduleSerializer)
    def get(self, request: Request, name: str) -> Response:
        return Response(ScheduleSerializer(schedule_get(name=name)).data)

    @extend_schema(operation_id="schedules_partial_update", parameters=[NAME], request=SchedulePatchSerializer,
                   responses=ScheduleSerializer,
                   description="Change some fields; a changed cadence restarts from now. Seen by the firing "
                               "loops within their wake-up.")
    def patch(self, request: Request, name: str) -> Response:
        changes = _parsed(SchedulePatchSerializer, request, partial=True)
        return Response(ScheduleSerializer(schedule_update(name=name, changes=changes, actor=_actor(request))).data)

    @extend_schema(operation_id="schedules_destroy", parameters=[NAME], request=None, responses={204: None},
                   description="Delete the schedule and its fire history; task rows already enqueued still run.")
    def delete(self, request: Request, name: str) -> Response:
        schedule_delete(name=name, actor=_actor(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


class SchedulePauseView(APIView):
    permission_classes = [StaffModelPermissions]
    required_permissions = {"POST": CHANGE}

    @extend_schema(operation_id="schedules_pause", parameters=[NAME], request=NoteSerializer,
                   responses=ScheduleSerializer, description="Stop firing; the note says why (audited).")
    def post(self, request: Request, name: str) -> Response:
        note = _parsed(NoteSerializer, request)["note"]
        return Response(ScheduleSerializer(schedule_pause(name=name, note=note, actor=_actor(request))).data)


class ScheduleResumeView(APIView):
    permission_classes = [StaffModelPermissions]
    required_permissions = {"POST": CHANGE}

    @extend_schema(operation_id="schedules_resume", parameters=[NAME], request=NoteSerializer,
                   responses=ScheduleSerializer,
                   description="Fire again from the next occurrence after now (audited).")
    def post(self, request: Request, name: str) -> Response:
        note = _parsed(NoteSerializer, request)["note"]
        return Response(ScheduleSerializer(schedule_resume(name=name, note=note, actor=_actor(request))).data)


class ScheduleTriggerView(APIView):
    permission_classes = [StaffModelPermissions]
    required_permissions = {"POST": CHANGE}

    @extend_schema(operation_id="schedules_trigger", parameters=[NAME], request=NoteSerializer,
                   responses={202: FireSerializer},
                   description="Run now: an extra fire outside the cadence, recorded as manual (audited).")
    def post(self, request: Request, name: str) -> Response:
        _parsed(NoteSerializer, request)
        fire = schedule_trigger(name=name, actor=_actor(request))
        return Response(FireSerializer(fire).data, status=status.HTTP_202_ACCEPTED)


class ScheduleBackfillView(APIView):
    permission_classes = [StaffModelPermissions]
    required_permissions = {"POST": CHANGE}

    @extend_schema(operation_id="schedules_backfill", parameters=[NAME], request=BackfillSerializer,
                   responses={202: BackfillResultSerializer},
                   description="Fire every nominal time of a past range once (occurrences recorded as missed "
                               "included); times already fired are left alone. Audited.")
    def post(self, request: Request, name: str) -> Response:
        data = _parsed(BackfillSerializer, request)
        counts = schedule_backfill(name=name, start=data["start"], end=data["end"], overlap=data.get("overlap"),
                                   actor=_actor(request))
        return Response(BackfillResultSerializer(counts).data, status=status.HTTP_202_ACCEPTED)


class ScheduleFireListView(GenericAPIView):
    permission_classes = [StaffModelPermissions]
    required_permissions = {"GET": VIEW}
    pagination_class = StandardPagination
    serializer_class = FireSerializer

    @extend_schema(operation_id="schedules_fires_list", parameters=[NAME, PageQuerySerializer],
                   responses=FireSerializer(many=True), description="The fire history, newest first.")
    def get(self, request: Request, name: str) -> Response:
        PageQuerySerializer(data=request.query_params).is_valid(raise_exception=True)
        page = self.paginate_queryset(schedule_fires(name=name))
        return self.get_paginated_response(FireSerializer(page, many=True).data)
