"""Emails in admin: read-only rows (written by services), and an audited "Retry failed" action."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from apps.core.admin_base import OperatedAdminMixin, ReadOnlyAdmin
from apps.core.audit import Actor, Via
from apps.emails.models import Email
from apps.emails.services import email_retry_failed


@admin.register(Email)
class EmailAdmin(OperatedAdminMixin, ReadOnlyAdmin):
    list_display = ("id", "state", "to", "template", "attempts", "last_error", "created_at", "sent_at")
    list_filter = ("state", "template")
    search_fields = ("=to", "=key")
    ordering = ("-id",)
    # The context is left out on purpose: it may hold personal data (and is encrypted at rest).
    fields = ("key", "to", "template", "state", "attempts", "last_error", "encrypted", "lease_until", "created_at",
              "sent_at")
    readonly_fields = fields
    actions = ["retry_failed"]

    @admin.action(description="Retry selected failed emails", permissions=["operate"])
    def retry_failed(self, request: HttpRequest, queryset: QuerySet[Email]) -> None:
        ids = list(queryset.values_list("id", flat=True))
        count = email_retry_failed(email_ids=ids, actor=Actor.from_request(request, via=Via.ADMIN))
        self.message_user(request, f"Re-queued {count} of {len(ids)} selected email(s); only failed emails are "
                                   "retried.", messages.SUCCESS)
