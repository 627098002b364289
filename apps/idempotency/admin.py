from django.contrib import admin

from apps.idempotency.models import IdempotencyRecord


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

    @admin.action(description="Purge selected records (their keys can be reused at once)")
    def purge(self, request, queryset):
        deleted, _ = queryset.delete()
        self.message_user(request, f"Purged {deleted} record(s).")
