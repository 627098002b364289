"""Schedules in admin: next fires in the schedule's zone and UTC, last fire, pause/resume with a note,
run now, and each schedule's fire history. Every write goes through the services (validated, audited,
signalled to the firing loops)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from apps.core.admin_base import ReadOnlyAdmin
from apps.core.audit import Actor, Via
from apps.core.errors import TaskplaneError
from apps.schedules.cadence import zone_of
from apps.schedules.models import Schedule, ScheduleFire
from apps.schedules.selectors import schedule_last_fire, schedule_next_fires
from apps.schedules.services import (
    schedule_create,
    schedule_delete,
    schedule_pause,
    schedule_resume,
    schedule_trigger,
    schedule_update,
)
from apps.schedules.validation import WRITABLE, schedule_clean

_FORM_FIELDS = ["name", "task", "args", "kwargs", "cron", "timezone", "interval_seconds", "run_at", "start_at",
                "end_at", "overlap", "catchup_window_seconds", "jitter_seconds", "pause_on_failure", "ordering_key",
                "enabled", "note"]


class NoteActionForm(ActionForm):
    note = forms.CharField(required=False, max_length=2000, help_text="Why (kept on the schedule and audited).")


class ScheduleAdminForm(forms.ModelForm):
    class Meta:
        model = Schedule
        fields = _FORM_FIELDS

    def clean(self):
        cleaned = super().clean()
        data = self.schedule_data()
        try:  # the service's own checks, so the form shows them per field and nothing is half-saved
            schedule_clean(data=data, current=self.instance if self.instance.pk else None)
        except TaskplaneError as exc:
            for error in exc.errors:
                field = error.get("field")
                self.add_error(field if field in self.fields else None, error.get("message"))
        return cleaned

    def schedule_data(self) -> dict[str, Any]:
        """The cleaned values as the services take them (only changed ones when editing)."""
        names = [name for name in _FORM_FIELDS if name in self.cleaned_data]
        if self.instance.pk:
            names = [name for name in names if name in self.changed_data]
        data = {name: self.cleaned_data[name] for name in names if name in WRITABLE}
        if "ordering_key" in data and not data["ordering_key"]:
            data["ordering_key"] = None
        return data


def _fire_rows(schedule: Schedule) -> str:
    zone = zone_of(schedule.timezone)
    rows = format_html_join(
        "", "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
        ((f"{o.at.astimezone(zone):%Y-%m-%d %H:%M:%S %Z}", f"{o.at:%Y-%m-%d %H:%M:%S} UTC",
          "shifted (DST)" if o.shifted else "") for o in schedule_next_fires(schedule=schedule, count=5)),
    )
    return format_html("<table><tr><th>{}</th><th>UTC</th><th></th></tr>{}</table>", schedule.timezone, rows) \
        if rows else "—"


@admin.register(Schedule)
class ScheduleAdmin(admin.ModelAdmin):
    form = ScheduleAdminForm
    action_form = NoteActionForm
    actions = ["pause_selected", "resume_selected", "run_now"]
    list_display = ["name", "task", "cadence", "enabled", "next_fire_at", "last_fire"]
    list_filter = ["enabled", "overlap"]
    search_fields = ["name", "task"]
    readonly_fields = ["next_fires", "last_fire", "fire_history", "next_fire_at", "version", "created_at",
                       "updated_at"]

    @admin.display(description="Next 5 fires (zone and UTC)")
    def next_fires(self, obj: Schedule) -> str:
        return _fire_rows(obj) if obj.pk else "—"

    @admin.display(description="Last fire")
    def last_fire(self, obj: Schedule) -> str:
        last = schedule_last_fire(schedule=obj) if obj.pk else None
        if last is None:
            return "—"
        late = f", {last.lateness_seconds:.3f}s late" if last.lateness_seconds is not None else ""
        return f"{last.nominal_at:%Y-%m-%d %H:%M:%S} UTC: {last.decision}/{last.state}{late}"

    @admin.display(description="Fire history")
    def fire_history(self, obj: Schedule) -> str:
        if not obj.pk:
            return "—"
        url = reverse("admin:schedules_schedulefire_changelist") + f"?schedule__id__exact={obj.pk}"
        return format_html('<a href="{}">{} fire row(s)</a>', url, obj.fires.count())

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # bulk deletes would skip the service and its audit
        return actions

    def save_model(self, request, obj, form, change) -> None:
        actor = Actor.from_request(request, via=Via.ADMIN)
        data = form.schedule_data()
        saved = schedule_update(name=obj.name, changes=data, actor=actor) if change else \
            schedule_create(data=data, actor=actor)
        obj.pk = saved.pk
        obj.refresh_from_db()

    def delete_model(self, request, obj) -> None:
        schedule_delete(name=obj.name, actor=Actor.from_request(request, via=Via.ADMIN))

    def _each(self, request, queryset, action, verb: str) -> None:
        note = request.POST.get("note", "")
        actor = Actor.from_request(request, via=Via.ADMIN)
        for schedule in queryset:
            action(name=schedule.name, actor=actor, **({} if action is schedule_trigger else {"note": note}))
        self.message_user(request, f"{verb} {queryset.count()} schedule(s).", messages.SUCCESS)

    @admin.action(description="Pause (with the note)", permissions=["change"])
    def pause_selected(self, request, queryset) -> None:
        self._each(request, queryset, schedule_pause, "Paused")

    @admin.action(description="Resume (with the note)", permissions=["change"])
    def resume_selected(self, request, queryset) -> None:
        self._each(request, queryset, schedule_resume, "Resumed")

    @admin.action(description="Run now (an extra, manual fire)", permissions=["change"])
    def run_now(self, request, queryset) -> None:
        self._each(request, queryset, schedule_trigger, "Triggered")


@admin.register(ScheduleFire)
class ScheduleFireAdmin(ReadOnlyAdmin):
    list_display = ["schedule", "nominal_at", "decision", "state", "fired_at", "lateness", "task_id"]
    list_filter = ["state", "decision", "schedule"]
    list_select_related = ["schedule"]
    ordering = ["-nominal_at"]

    @admin.display(description="Lateness (s)")
    def lateness(self, obj: ScheduleFire) -> str:
        return "—" if obj.lateness_seconds is None else f"{obj.lateness_seconds:.3f}"
