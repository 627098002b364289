"""Admin for API keys (create shows the key once; audited revoke action), heartbeats and the operator audit log."""

from __future__ import annotations

from django.contrib import admin, messages

from apps.core.admin_base import ReadOnlyAdmin
from apps.core.api_keys import api_key_create, api_keys_revoke
from apps.core.audit import Actor, Via
from apps.core.models import ApiKey, Heartbeat, OperatorAction


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ("prefix", "name", "user", "created_at", "last_used_at", "revoked_at")
    list_filter = ("revoked_at",)
    search_fields = ("prefix", "name", "user__username")
    fields = ("user", "name", "prefix", "created_at", "last_used_at", "revoked_at")
    readonly_fields = ("prefix", "created_at", "last_used_at", "revoked_at")
    raw_id_fields = ("user",)
    actions = ["revoke"]

    def save_model(self, request, obj, form, change):
        if change:
            obj.save(update_fields=["name"])
            return
        created, raw_key = api_key_create(username=obj.user.get_username(), name=obj.name)
        obj.pk, obj.prefix = created.pk, created.prefix
        messages.warning(request, f"New API key (shown once, copy it now): {raw_key}")

    def get_readonly_fields(self, request, obj=None):
        return (*self.readonly_fields, "user") if obj else self.readonly_fields

    @admin.action(description="Revoke selected API keys", permissions=["change"])
    def revoke(self, request, queryset):
        count = api_keys_revoke(key_ids=list(queryset.values_list("pk", flat=True)),
                                actor=Actor.from_request(request, via=Via.ADMIN))
        self.message_user(request, f"Revoked {count} key(s).")


@admin.register(Heartbeat)
class HeartbeatAdmin(ReadOnlyAdmin):
    list_display = ("name", "beat_at")


@admin.register(OperatorAction)
class OperatorActionAdmin(ReadOnlyAdmin):
    """The operator audit log. Flag changes have their own trail: Flags › Flag changes (with before/after)."""

    list_display = ("created_at", "actor", "via", "action", "target_type", "target_id", "reason")
    list_filter = ("action", "via", "created_at")
    search_fields = ("actor", "target_id", "reason")
    search_help_text = "Actor, target id or reason. Flag changes are audited in Flags › Flag changes."
    fields = ("created_at", "actor", "via", "credential", "request_id", "action", "target_type", "target_id",
              "reason", "details")
    readonly_fields = fields
    date_hierarchy = "created_at"
