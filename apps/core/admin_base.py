"""Admin base classes and display helpers shared by the apps."""

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


def age_text(seconds: float) -> str:
    """A duration as operators read it: "45 s", "3 min 5 s", "2 h 10 min", "3 d 4 h"."""
    seconds = int(seconds)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {seconds} s"
    return f"{seconds} s"
