from django.urls import path, re_path

from apps.schedules.api import (
    ScheduleBackfillView,
    ScheduleDetailView,
    ScheduleFireListView,
    ScheduleListCreateView,
    SchedulePauseView,
    SchedulePreviewView,
    ScheduleResumeView,
    ScheduleTriggerView,
)
from apps.schedules.models import NAME_PATTERN

app_name = "schedules"
_NAME = rf"(?P<name>{NAME_PATTERN.removeprefix('^').removesuffix('$')})"
urlpatterns = [
    path("", ScheduleListCreateView.as_view(), name="list"),
    # Before the name routes: "preview" is itself a valid name, so that schedule is managed in admin or the CLI.
    path("preview/", SchedulePreviewView.as_view(), name="preview"),
    re_path(rf"^{_NAME}/$", ScheduleDetailView.as_view(), name="detail"),
    re_path(rf"^{_NAME}/pause/$", SchedulePauseView.as_view(), name="pause"),
    re_path(rf"^{_NAME}/resume/$", ScheduleResumeView.as_view(), name="resume"),
    re_path(rf"^{_NAME}/trigger/$", ScheduleTriggerView.as_view(), name="trigger"),
    re_path(rf"^{_NAME}/backfill/$", ScheduleBackfillView.as_view(), name="backfill"),
    re_path(rf"^{_NAME}/fires/$", ScheduleFireListView.as_view(), name="fires"),
]
