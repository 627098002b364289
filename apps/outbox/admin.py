"""Outbox admin for operators: status counts, filters, retry, confirmed discard and re-drive; rows are read-only.

The actions need ``change_outboxmessage`` ("operate"); each one is recorded in the operator audit log.
"""

from __future__ import annotations

import json

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse

from apps.core.admin_base import HistoryAdmin, OperatedAdminMixin, age_text
from apps.core.audit import Actor, Via
from apps.core.crypto import EncryptionUnavailable
from apps.outbox.models import InboxEntry, OutboxMessage
from apps.outbox.relay_status import relay_status_text
from apps.outbox.selectors import outbox_stats
from apps.outbox.serializers import parse_payload, payload_text
from apps.outbox.services import (
    DISCARDABLE,
    outbox_discard,
    outbox_redrive_many,
    outbox_retry,
    redrive_subscribers,
)

CONFIRMATION_PREVIEW_ROWS = 100


class ExactValueFilter(admin.SimpleListFilter):
    """A text box filtering one column by exact value.

    Topics, task names and keys are open-ended: a list of distinct values would scan the whole table on
    every page load and grow without bound, while an exact match uses the column's index.
    """

    template = "admin/outbox/exact_value_filter.html"
    field_name = ""

    def lookups(self, request, model_admin):
        return ()

    def has_output(self) -> bool:
        return True

    def queryset(self, request, queryset):
        value = self.value()
        return queryset.filter(**{self.field_name: value}) if value else queryset

    def choices(self, changelist):
        other_params = [
            (name, value)
            for name, values in changelist.filter_params.items() if name != self.parameter_name
            for value in values
        ]
        yield {
            "parameter_name": self.parameter_name,
            "value": self.value() or "",
            "other_params": other_params,
            "clear_query_string": changelist.get_query_string(remove=[self.parameter_name]),
        }


class NameFilter(ExactValueFilter):
    title = "topic / task name"
    parameter_name = field_name = "name"


class KeyFilter(ExactValueFilter):
    title = "key"
    parameter_name = field_name = "key"


def payload_display(message: OutboxMessage, *, reveal_encrypted: bool) -> str:
    """The payload as pretty-printed JSON, or a marker when the viewer may not (or cannot) read it."""
    try:
        text = payload_text(message, reveal_encrypted=reveal_encrypted)
    except EncryptionUnavailable as exc:
        return f"[cannot decrypt: {exc.detail}]"
    if text is None:
        return "[encrypted]"
    return json.dumps(parse_payload(text), indent=2, ensure_ascii=False, sort_keys=True)


@admin.register(OutboxMessage)
class OutboxMessageAdmin(OperatedAdminMixin, HistoryAdmin):
    list_display = ("id", "kind", "name", "key", "status", "attempts", "created_at", "available_at", "published_at")
    list_filter = ("status", "kind", NameFilter, KeyFilter, "created_at")
    search_help_text = "Exact topic or task name, key, message id (UUID) or row id."
    search_fields = ("name",)  # enables the search box; HistoryAdmin's exact search does the matching
    exact_search_fields = ("name", "key")
    exact_search_uuid_fields = ("message_id",)
    exact_search_integer_fields = ("id",)
    fieldsets = (
        (None, {"fields": ("message_id", "kind", "name", "key", "queue", "status")}),
        ("Delivery", {"fields": ("attempts", "available_at", "created_at", "published_at", "last_error")}),
        ("Content", {"fields": ("encrypted", "headers")}),
    )
    readonly_fields = [name for _, options in fieldsets for name in options["fields"]]
    actions = ["retry", "discard", "redrive"]
    change_list_template = "admin/outbox/outboxmessage/change_list.html"
    change_form_template = "admin/outbox/outboxmessage/change_form.html"
    def changelist_view(self, request, extra_context=None):
        if request.method == "GET":
            stats = outbox_stats()
            extra_context = {
                **(extra_context or {}),
                "outbox_counts": [(status, count, status in stats["counts_estimated"])
                                  for status, count in stats["counts"].items()],
                "outbox_oldest_pending_age": age_text(stats["oldest_pending_age_seconds"]),
                "outbox_published_last_minute": stats["published_last_minute"],
                "outbox_unroutable_events": stats["unroutable_events"],
                "outbox_relays": [(relay, relay_status_text(relay)) for relay in stats["relays"]],
                "outbox_relay_problem": stats["relay_problem"],
            }
        return super().changelist_view(request, extra_context=extra_context)

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None:
            context["payload_display"] = payload_display(obj, reveal_encrypted=request.user.is_superuser)
        return super().render_change_form(request, context, add=add, change=change, form_url=form_url, obj=obj)

    @admin.action(description="Retry selected dead or discarded messages", permissions=["operate"])
    def retry(self, request: HttpRequest, queryset: QuerySet[OutboxMessage]) -> None:
        ids = list(queryset.values_list("id", flat=True))
        count = outbox_retry(message_ids=ids, actor=Actor.from_request(request, via=Via.ADMIN))
        self.message_user(request, f"Re-queued {count} of {len(ids)} selected message(s); "
                                   "only dead or discarded messages are retried.", messages.SUCCESS)

    @admin.action(description="Discard selected pending or dead messages", permissions=["operate"])
    def discard(self, request: HttpRequest, queryset: QuerySet[OutboxMessage]) -> TemplateResponse | None:
        # Discarding stops delivery for good (until someone retries): the operator confirms what it hits first.
        discardable = queryset.filter(status__in=DISCARDABLE)
        if request.POST.get("confirm") != "yes":
            return self._discard_confirmation(request, queryset, discardable)
        count = outbox_discard(message_ids=list(discardable.values_list("id", flat=True)),
                               actor=Actor.from_request(request, via=Via.ADMIN),
                               reason=request.POST.get("reason", "").strip()[:2000])
        self.message_user(request, f"Discarded {count} message(s).", messages.SUCCESS)
        return None

    def _discard_confirmation(self, request, queryset, discardable) -> TemplateResponse:
        discardable_count = discardable.count()
        context = {
            **self._confirmation_context(request, queryset, discardable, discardable_count, action="discard"),
            "title": "Discard outbox messages?",
            "discardable_count": discardable_count,
        }
        return TemplateResponse(request, "admin/outbox/outboxmessage/discard_confirmation.html", context)

    @admin.action(description="Re-drive selected published events to a subscriber…", permissions=["operate"])
    def redrive(self, request: HttpRequest, queryset: QuerySet[OutboxMessage]) -> TemplateResponse | None:
        # Runs the subscriber again for events its inbox already recorded (e.g. skipped while a flag was
        # off): the operator picks the subscriber and says why, then confirms.
        redrivable = queryset.filter(kind=OutboxMessage.Kind.EVENT, status=OutboxMessage.Status.PUBLISHED)
        topics = redrivable.order_by().values_list("name", flat=True).distinct()
        form = RedriveForm(request.POST if request.POST.get("confirm") == "yes" else None,
                           subscribers=redrive_subscribers(topics=topics))
        if form.is_bound and form.is_valid():
            count = outbox_redrive_many(
                message_ids=list(redrivable.values_list("id", flat=True)), subscriber=form.cleaned_data["subscriber"],
                actor=Actor.from_request(request, via=Via.ADMIN), reason=form.cleaned_data["reason"],
            )
            self.message_user(request, f"Re-driven {count} event(s) to {form.cleaned_data['subscriber']}; "
                                       "only published events of its topic are re-driven.", messages.SUCCESS)
            return None
        redrivable_count = redrivable.count()
        context = {
            **self._confirmation_context(request, queryset, redrivable, redrivable_count, action="redrive"),
            "title": "Re-drive events to a subscriber",
            "redrivable_count": redrivable_count,
            "form": form,
        }
        return TemplateResponse(request, "admin/outbox/outboxmessage/redrive_form.html", context)

    def _confirmation_context(self, request, queryset, affected, affected_count: int, *, action: str) -> dict:
        request.current_app = self.admin_site.name
        return {
            **self.admin_site.each_context(request),
            "action_name": action,
            "action_label": {"discard": "Discard", "redrive": "Re-drive"}[action],
            "opts": self.opts,
            "media": self.media,
            "selected_count": queryset.count(),
            "preview_remaining": max(0, affected_count - CONFIRMATION_PREVIEW_ROWS),
            "preview": affected.order_by("id")[:CONFIRMATION_PREVIEW_ROWS],
            "selected_ids": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
            "select_across": request.POST.get("select_across", "0"),
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        }


class RedriveForm(forms.Form):
    subscriber = forms.ChoiceField(help_text="Only subscribers of the selected events' topics are listed.")
    reason = forms.CharField(max_length=2000, widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
                             help_text="Recorded in the operator audit log.")

    def __init__(self, *args, subscribers: list[str], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["subscriber"].choices = [(name, name) for name in subscribers]


@admin.register(InboxEntry)
class InboxEntryAdmin(HistoryAdmin):
    list_display = ("consumer", "message_id", "processed_at")
    list_filter = ("processed_at",)
    search_help_text = "Exact consumer name or message id (UUID)."
    search_fields = ("consumer",)
    exact_search_fields = ("consumer",)
    exact_search_uuid_fields = ("message_id",)
    fields = readonly_fields = ("consumer", "message_id", "processed_at")
