"""Admin base classes shared by the apps."""

from __future__ import annotations

from django.contrib import admin


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows written only by services (outbox, inbox, audit trails, heartbeats): viewable, never edited here.

    An edit in admin would bypass the rules the services keep (ordering, dedup, audit), and a
    delete would lose history that operators rely on.
    """

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
