"""Admin base classes and display helpers shared by the apps."""

from __future__ import annotations

import uuid

from django.contrib import admin
from django.contrib.auth import get_permission_codename
from django.db.models import Q, QuerySet
from django.http import HttpRequest

from apps.core.counting import CountingPaginator


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


class HistoryAdmin(ReadOnlyAdmin):
    """A read-only table that grows with every event (outbox, inbox, saga steps): no full-table count per page.

    Django counts the whole table for the result count, once per filter choice for facets, and again in
    the paginator; CountingPaginator bounds the last and the other two are turned off.

    Search matches exact values only, each answered by an index where ``icontains`` would scan the table:
    ``exact_search_fields`` as text, ``exact_search_uuid_fields`` when the term is a UUID and
    ``exact_search_integer_fields`` when it is a (bigint-sized) number.
    """

    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    paginator = CountingPaginator
    exact_search_fields: tuple[str, ...] = ()
    exact_search_uuid_fields: tuple[str, ...] = ()
    exact_search_integer_fields: tuple[str, ...] = ()

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str):
        term = search_term.strip()
        if not term:
            return queryset, False
        query = Q()
        for field in self.exact_search_fields:
            query |= Q(**{field: term})
        try:
            value = uuid.UUID(term)
        except ValueError:
            pass
        else:
            for field in self.exact_search_uuid_fields:
                query |= Q(**{field: value})
        if term.isdigit() and len(term) <= 18:
            for field in self.exact_search_integer_fields:
                query |= Q(**{field: int(term)})
        return queryset.filter(query) if query else queryset.none(), False


class OperatedAdminMixin:
    """For admins whose actions (retry, discard, cancel…) change rows the pages show read-only.

    The actions declare ``permissions=["operate"]``: the change permission, which the read-only
    detail view never grants by itself.
    """

    def has_operate_permission(self, request: HttpRequest) -> bool:
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.{get_permission_codename('change', opts)}")


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
