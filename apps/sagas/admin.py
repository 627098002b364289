"""Saga admin for operators: instances by saga, state, key and age; a timeline per instance; cancel, retry, resolve.

Instances, attempts and signals are the engine's history: read-only here. The actions need
``change_sagainstance`` ("operate") and go through the services, which audit them.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import QuerySet
from django.db.models.functions import Now
from django.http import HttpRequest, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from apps.core.admin_base import HistoryAdmin, OperatedAdminMixin
from apps.core.audit import Actor, Via
from apps.core.errors import TaskplaneError
from apps.sagas.definitions import declared_sagas
from apps.sagas.models import SagaInstance, SagaSignal, SagaStepAttempt
from apps.sagas.presentation import duration_text, timeline_rows
from apps.sagas.selectors import saga_definition_status, saga_timeline
from apps.sagas.services import saga_cancel, saga_resolve, saga_retry

MAX_REASON_LENGTH = 2000
PREVIEW_ROWS = 100
MAX_SELECTED = 200
State = SagaInstance.State


class SagaNameFilter(admin.SimpleListFilter):
    """The declared sagas by name: from the code, so the filter costs no query (any name works in the URL)."""

    title = "saga"
    parameter_name = "name"

    def lookups(self, request, model_admin):
        return [(name, name) for name in sorted(declared_sagas())]

    def queryset(self, request, queryset):
        return queryset.filter(name=self.value()) if self.value() else queryset


class AgeFilter(admin.SimpleListFilter):
    """Instances older than a bound (on the database clock): a running saga that old is worth a look."""

    title = "age"
    parameter_name = "older_than"
    BOUNDS = {"5m": ("older than 5 minutes", timedelta(minutes=5)), "1h": ("older than 1 hour", timedelta(hours=1)),
              "1d": ("older than 1 day", timedelta(days=1)), "7d": ("older than 7 days", timedelta(days=7))}

    def lookups(self, request, model_admin):
        return [(value, label) for value, (label, _) in self.BOUNDS.items()]

    def queryset(self, request, queryset):
        bound = self.BOUNDS.get(self.value() or "")
        return queryset.filter(created_at__lt=Now() - bound[1]) if bound else queryset


class ReasonForm(forms.Form):
    reason = forms.CharField(required=False, max_length=MAX_REASON_LENGTH,
                             widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
                             help_text="Optional; recorded in the operator audit log.")


class ResolveForm(forms.Form):
    note = forms.CharField(max_length=MAX_REASON_LENGTH, widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
                           help_text="Required: what you fixed by hand. Kept on the saga and in the audit log.")


@dataclass(frozen=True)
class SagaAction:
    """An operator action: how admin names it, the form it asks for, the service it calls, where it applies."""

    label: str
    done: str
    form: type[forms.Form]
    call: Callable[[uuid.UUID, Actor, dict], SagaInstance]
    states: tuple[str, ...]


ACTIONS = {
    "cancel": SagaAction("Cancel (compensate now)", "Cancelled", ReasonForm,
                         lambda saga_id, actor, data: saga_cancel(saga_id=saga_id, actor=actor, reason=data["reason"]),
                         (State.RUNNING,)),
    "retry": SagaAction("Retry the failed compensation", "Retried", ReasonForm,
                        lambda saga_id, actor, data: saga_retry(saga_id=saga_id, actor=actor, reason=data["reason"]),
                        (State.COMPENSATION_FAILED,)),
    "resolve": SagaAction("Mark resolved", "Resolved", ResolveForm,
                          lambda saga_id, actor, data: saga_resolve(saga_id=saga_id, actor=actor, note=data["note"]),
                          (State.COMPENSATION_FAILED,)),
}


def json_block(value) -> str:
    """A JSON value pretty-printed in a <pre> block."""
    return format_html('<pre style="white-space: pre-wrap; margin: 0;">{}</pre>',
                       json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True))


@admin.register(SagaInstance)
class SagaInstanceAdmin(OperatedAdminMixin, HistoryAdmin):
    list_display = ("id", "name", "key", "state", "current_step", "created_at", "age", "finished_at")
    list_filter = (SagaNameFilter, "state", AgeFilter, "created_at")
    search_fields = ("key",)  # enables the search box; HistoryAdmin's exact search does the matching
    search_help_text = "Exact business key, saga name or instance id (UUID)."
    exact_search_fields = ("key", "name")
    exact_search_uuid_fields = ("id",)
    fieldsets = (
        (None, {"fields": ("id", "name", "key", "state", "current_step", "pivot_passed", "cancel_requested")}),
        ("Outcome", {"fields": ("failure", "resolution_note", "deadline_at", "created_at", "updated_at",
                                "finished_at")}),
        ("Definition at start", {"fields": ("definition_hash", "definition_steps_display")}),
        ("Data", {"fields": ("input_display", "context_display")}),
    )
    readonly_fields = [name for _, options in fieldsets for name in options["fields"]]
    actions = list(ACTIONS)
    change_form_template = "admin/sagas/sagainstance/change_form.html"

    @admin.display(description="step")
    def current_step(self, instance: SagaInstance) -> str:
        steps = instance.definition_steps or []
        return steps[instance.step_index] if instance.step_index < len(steps) else "—"

    @admin.display(description="age (finished: run time)")
    def age(self, instance: SagaInstance) -> str:
        end = instance.finished_at or timezone.now()
        return duration_text((end - instance.created_at).total_seconds())

    @admin.display(description="steps")
    def definition_steps_display(self, instance: SagaInstance) -> str:
        return ", ".join(instance.definition_steps or [])

    @admin.display(description="input")
    def input_display(self, instance: SagaInstance) -> str:
        return json_block(instance.input)

    @admin.display(description="context")
    def context_display(self, instance: SagaInstance) -> str:
        return json_block(instance.context)

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None:
            operate = self.has_operate_permission(request)
            context.update({
                "saga_definition": saga_definition_status(obj),
                "saga_timeline": timeline_rows(saga_timeline(saga_id=obj.pk)),
                "saga_actions": [(name, action.label, action.form())
                                 for name, action in ACTIONS.items() if operate and obj.state in action.states],
                "changelist_url": reverse("admin:sagas_sagainstance_changelist"),
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            })
        return super().render_change_form(request, context, add=add, change=change, form_url=form_url, obj=obj)

    @admin.action(description="Cancel selected sagas (compensate now)…", permissions=["operate"])
    def cancel(self, request: HttpRequest, queryset: QuerySet[SagaInstance]):
        return self._act(request, queryset, "cancel")

    @admin.action(description="Retry the failed compensation of selected sagas…", permissions=["operate"])
    def retry(self, request: HttpRequest, queryset: QuerySet[SagaInstance]):
        return self._act(request, queryset, "retry")

    @admin.action(description="Mark selected sagas resolved (with a note)…", permissions=["operate"])
    def resolve(self, request: HttpRequest, queryset: QuerySet[SagaInstance]):
        return self._act(request, queryset, "resolve")

    def _act(self, request: HttpRequest, queryset: QuerySet[SagaInstance], action: str):
        # The operator says why (or, to resolve, what was fixed) on a confirmation page, then each selected
        # saga goes through the service on its own: one refused transition does not stop the others.
        chosen = ACTIONS[action]
        form = chosen.form(request.POST if request.POST.get("confirm") == "yes" else None)
        if not (form.is_bound and form.is_valid()):
            return self._confirmation(request, queryset, action, form)
        saga_ids = list(queryset.values_list("id", flat=True)[:MAX_SELECTED + 1])
        if len(saga_ids) > MAX_SELECTED:
            # One service call (one transaction) per saga, all in this request: a bounded batch keeps it short.
            self.message_user(request, f"Select at most {MAX_SELECTED} sagas per action; nothing was done.",
                              messages.ERROR)
            return None
        actor = Actor.from_request(request, via=Via.ADMIN)
        acted = 0
        for saga_id in saga_ids:
            try:
                chosen.call(saga_id, actor, form.cleaned_data)
                acted += 1
            except TaskplaneError as exc:
                self.message_user(request, f"Not {chosen.done.lower()}: {saga_id}: {exc.detail}", messages.ERROR)
        if acted:
            self.message_user(request, f"{chosen.done} {acted} saga(s).", messages.SUCCESS)
        if request.POST.get("from_detail") and len(saga_ids) == 1:
            return HttpResponseRedirect(reverse("admin:sagas_sagainstance_change", args=[saga_ids[0]]))
        return None

    def _confirmation(self, request, queryset, action: str, form: forms.Form) -> TemplateResponse:
        chosen = ACTIONS[action]
        request.current_app = self.admin_site.name
        context = {
            **self.admin_site.each_context(request),
            "title": f"{chosen.label}?",
            "action_name": action,
            "action_label": chosen.label,
            "applies_to": ", ".join(chosen.states),
            "form": form,
            "opts": self.opts,
            "media": self.media,
            "selected_count": queryset.count(),
            "preview": queryset.order_by("-created_at")[:PREVIEW_ROWS],
            "selected_ids": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
            "select_across": request.POST.get("select_across", "0"),
            "from_detail": request.POST.get("from_detail", ""),
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/sagas/sagainstance/action_form.html", context)


@admin.register(SagaStepAttempt)
class SagaStepAttemptAdmin(HistoryAdmin):
    list_display = ("id", "instance_id", "step", "kind", "attempt", "state", "scheduled_at", "started_at",
                    "finished_at")
    list_filter = ("kind", "state")
    search_fields = ("idempotency_key",)
    search_help_text = "Exact idempotency key or instance id (UUID)."
    exact_search_fields = ("idempotency_key",)
    exact_search_uuid_fields = ("instance_id",)
    fields = readonly_fields = (
        "instance", "step", "step_index", "kind", "attempt", "state", "idempotency_key", "token", "task_id",
        "scheduled_at", "started_at", "finished_at", "deadline_at", "result", "error", "signal_topic", "signal_key",
    )


@admin.register(SagaSignal)
class SagaSignalAdmin(HistoryAdmin):
    list_display = ("id", "topic", "key", "received_at", "consumed_by_id")
    search_fields = ("key",)
    search_help_text = "Exact signal key or topic."
    exact_search_fields = ("key", "topic")
    fields = readonly_fields = ("topic", "key", "event_id", "payload", "received_at", "consumed_by")
