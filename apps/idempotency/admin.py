from django.contrib import admin

from apps.core.audit import Actor, Via
from apps.idempotency.models import IdempotencyRecord
from apps.idempotency.services import records_purge_selected


@admin.register(IdempotencyRecord)
class IdempotencyRecordAdmin(admin.ModelAdmin):
    list_display = ("key", "user", "method", "path", "state", "response_status", "created_at", "expires_at")
    list_filter = ("state", "method", "response_status", "created_at")
    search_fields = ("key", "path", "user__username")
    date_hierarchy = "created_at"
    actions = ["purge"]
    exclude = ("response_body",)
    readonly_fields = [f.name for f in IdempotencyRecord._meta.fields if f.name != "response_body"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # Purge is the one, audited, way to delete records
        return actions

    def delete_model(self, request, obj):  # the change page's Delete button: the same audited purge
        records_purge_selected(record_ids=[obj.pk], actor=Actor.from_request(request, via=Via.ADMIN))

    @admin.action(description="Purge selected records (their keys can be reused at once)", permissions=["delete"])
    def purge(self, request, queryset):
        deleted = records_purge_selected(record_ids=list(queryset.values_list("pk", flat=True)),
                                         actor=Actor.from_request(request, via=Via.ADMIN))
        self.message_user(request, f"Purged {deleted} record(s).")
