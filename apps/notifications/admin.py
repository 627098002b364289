"""Webhooks in admin: endpoints with their health and success rate, messages, deliveries and attempts.

Every row is written by services (an endpoint's secret is encrypted, deliveries follow the claim
rules), so the pages are read-only; the actions (enable, disable, recover, replay) need the change
permission ("operate") and go through the audited services.
"""

from __future__ import annotations

from datetime import timedelta

from django.contrib import admin, messages
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest
from django.utils import timezone

from apps.core.admin_base import HistoryAdmin, OperatedAdminMixin, ReadOnlyAdmin
from apps.core.audit import Actor, Via
from apps.core.errors import TaskplaneError
from apps.notifications.models import Attempt, Delivery, Endpoint, Message
from apps.notifications.services import endpoint_recover, endpoints_set_enabled, message_replay

RECOVER_WINDOW = timedelta(days=7)


class HealthFilter(admin.SimpleListFilter):
    title = "health"
    parameter_name = "health"

    def lookups(self, request, model_admin):
        return [("failing", "failing (no success since a failure)"), ("disabled", "disabled")]

    def queryset(self, request, queryset):
        if self.value() == "failing":
            return queryset.filter(enabled=True, failing_since__isnull=False)
        if self.value() == "disabled":
            return queryset.filter(enabled=False)
        return queryset


@admin.register(Endpoint)
class EndpointAdmin(OperatedAdminMixin, ReadOnlyAdmin):
    list_display = ("url", "owner", "enabled", "failing_since", "disabled_reason", "success_rate", "failed_deliveries",
                    "created_at")
    list_filter = (HealthFilter, "enabled")
    search_fields = ("=url", "=owner__username")
    ordering = ("-created_at",)
    # The secrets are left out on purpose: they are the owner's (shown to them by the API only).
    fields = ("id", "owner", "url", "description", "event_types", "headers", "rate_limit_per_second", "enabled",
              "disabled_reason", "disabled_at", "failing_since", "previous_secret_until", "created_at", "updated_at")
    readonly_fields = fields
    actions = ["enable", "disable", "recover_week"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Endpoint]:
        return super().get_queryset(request).select_related("owner").annotate(
            delivered=Count("deliveries", filter=Q(deliveries__state=Delivery.State.SUCCEEDED)),
            failed=Count("deliveries", filter=Q(deliveries__state=Delivery.State.FAILED)))

    @admin.display(description="success rate")
    def success_rate(self, endpoint: Endpoint) -> str:
        finished = endpoint.delivered + endpoint.failed
        return f"{100 * endpoint.delivered / finished:.0f}% of {finished}" if finished else "–"

    @admin.display(description="failed", ordering="failed")
    def failed_deliveries(self, endpoint: Endpoint) -> int:
        return endpoint.failed

    @admin.action(description="Enable selected endpoints", permissions=["operate"])
    def enable(self, request: HttpRequest, queryset: QuerySet[Endpoint]) -> None:
        count = endpoints_set_enabled(endpoint_ids=queryset.values_list("pk", flat=True), enabled=True,
                                      actor=Actor.from_request(request, via=Via.ADMIN))
        self.message_user(request, f"Enabled {count} endpoint(s).", messages.SUCCESS)

    @admin.action(description="Disable selected endpoints", permissions=["operate"])
    def disable(self, request: HttpRequest, queryset: QuerySet[Endpoint]) -> None:
        count = endpoints_set_enabled(endpoint_ids=queryset.values_list("pk", flat=True), enabled=False,
                                      actor=Actor.from_request(request, via=Via.ADMIN))
        self.message_user(request, f"Disabled {count} endpoint(s).", messages.SUCCESS)

    @admin.action(description="Recover failed messages of the last 7 days", permissions=["operate"])
    def recover_week(self, request: HttpRequest, queryset: QuerySet[Endpoint]) -> None:
        actor, since, total = Actor.from_request(request, via=Via.ADMIN), timezone.now() - RECOVER_WINDOW, 0
        for endpoint_id in queryset.values_list("pk", flat=True):
            try:
                total += endpoint_recover(endpoint_id=endpoint_id, since=since, actor=actor)
            except TaskplaneError as exc:
                self.message_user(request, f"{endpoint_id}: {exc.detail}", messages.WARNING)
        self.message_user(request, f"Re-queued {total} failed delivery(ies).", messages.SUCCESS)


class DeliveryInline(admin.TabularInline):
    model = Delivery
    fields = ("endpoint", "state", "attempts", "next_attempt_at", "last_status", "last_error")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Message)
class MessageAdmin(HistoryAdmin):
    list_display = ("id", "topic", "encrypted", "occurred_at", "created_at")
    list_filter = ("topic",)
    exact_search_uuid_fields = ("id",)
    ordering = ("-created_at",)
    # The payload is left out: it may hold personal data (and is encrypted when its event was).
    fields = ("id", "topic", "encrypted", "occurred_at", "created_at")
    readonly_fields = fields
    inlines = [DeliveryInline]


class AttemptInline(admin.TabularInline):
    model = Attempt
    fields = ("attempted_at", "status_code", "latency_ms", "error", "response_body")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Delivery)
class DeliveryAdmin(OperatedAdminMixin, HistoryAdmin):
    list_display = ("id", "message", "endpoint", "state", "attempts", "next_attempt_at", "last_status", "updated_at")
    list_filter = ("state",)
    list_select_related = ("message", "endpoint")
    exact_search_uuid_fields = ("message_id", "endpoint_id")
    exact_search_integer_fields = ("id",)
    ordering = ("-id",)
    fields = ("message", "endpoint", "state", "attempts", "next_attempt_at", "lease_until", "last_status",
              "last_error", "created_at", "updated_at")
    readonly_fields = fields
    inlines = [AttemptInline]
    actions = ["replay"]

    @admin.action(description="Replay selected deliveries (same webhook-id)", permissions=["operate"])
    def replay(self, request: HttpRequest, queryset: QuerySet[Delivery]) -> None:
        actor, done = Actor.from_request(request, via=Via.ADMIN), 0
        for message_id, endpoint_id in queryset.values_list("message_id", "endpoint_id"):
            try:
                message_replay(message_id=message_id, endpoint_id=endpoint_id, actor=actor)
                done += 1
            except TaskplaneError as exc:
                self.message_user(request, f"{message_id} to {endpoint_id}: {exc.detail}", messages.WARNING)
        self.message_user(request, f"Replayed {done} delivery(ies).", messages.SUCCESS)


@admin.register(Attempt)
class AttemptAdmin(HistoryAdmin):
    list_display = ("id", "delivery", "attempted_at", "status_code", "latency_ms", "error")
    list_select_related = ("delivery",)
    exact_search_integer_fields = ("delivery_id",)
    ordering = ("-attempted_at",)
    fields = ("delivery", "attempted_at", "status_code", "latency_ms", "error", "response_body")
    readonly_fields = fields
