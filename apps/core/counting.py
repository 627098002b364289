"""Row counts that stay cheap on big tables: exact up to a limit, PostgreSQL's planner estimate above it.

A ``COUNT(*)`` reads every matching row; on an outbox of millions that is seconds per page. Counting at
most ``limit + 1`` rows bounds the cost, and past the limit the planner's estimate is as useful to a
person paging through as the exact figure. Whoever shows a count says when it is an estimate.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property

from django.core.paginator import EmptyPage, Page, PageNotAnInteger, Paginator
from django.db import connections
from django.db.models import QuerySet

DEFAULT_EXACT_COUNT_LIMIT = 10_000


@dataclass(frozen=True)
class RowCount:
    value: int
    estimated: bool


def queryset_count(*, queryset: QuerySet, exact_limit: int = DEFAULT_EXACT_COUNT_LIMIT) -> RowCount:
    """Count ``queryset``: exactly up to ``exact_limit`` rows, above that the PostgreSQL planner's estimate."""
    unordered = queryset.order_by()
    bounded = unordered[: exact_limit + 1].count()
    if bounded <= exact_limit:
        return RowCount(bounded, estimated=False)
    connection = connections[queryset.db]
    if connection.vendor != "postgresql":
        return RowCount(unordered.count(), estimated=False)  # no planner estimate to read (SQLite)
    # The estimate can lag behind the table; it is never reported below what was just counted.
    return RowCount(max(_planner_rows(unordered), exact_limit + 1), estimated=True)


def _planner_rows(queryset: QuerySet) -> int:
    sql, params = queryset.query.sql_with_params()
    with connections[queryset.db].cursor() as cursor:
        # Django compiled ``sql``; the values travel as bound parameters.
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
        plan = cursor.fetchone()[0]
    if isinstance(plan, str | bytes):
        plan = json.loads(plan)
    return int(plan[0]["Plan"]["Plan Rows"])


class CountingPaginator(Paginator):
    """Django paginator counting with queryset_count; with an estimate, pages past it are still served.

    Used by the API's StandardPagination and by admin changelists of big tables (``paginator = ...``).
    """

    exact_count_limit = DEFAULT_EXACT_COUNT_LIMIT

    @cached_property
    def row_count(self) -> RowCount:
        """The count and whether it is an estimate."""
        if not isinstance(self.object_list, QuerySet):
            return RowCount(len(self.object_list), estimated=False)
        return queryset_count(queryset=self.object_list, exact_limit=self.exact_count_limit)

    @cached_property
    def count(self) -> int:
        return self.row_count.value

    @property
    def count_estimated(self) -> bool:
        """True when ``count`` is the planner's estimate rather than an exact count."""
        return self.row_count.estimated

    def validate_number(self, number):
        if not self.count_estimated:
            return super().validate_number(number)
        # The estimate may be low: any page from 1 on is tried, and an empty one is past the end.
        try:
            number = int(number)
        except (TypeError, ValueError) as exc:
            raise PageNotAnInteger(self.error_messages["invalid_page"]) from exc
        if number < 1:
            raise EmptyPage(self.error_messages["min_page"])
        return number

    def page(self, number):
        if not self.count_estimated:
            return super().page(number)
        number = self.validate_number(number)
        bottom = (number - 1) * self.per_page
        rows = list(self.object_list[bottom : bottom + self.per_page + 1])  # one more says if a next page exists
        if not rows and number > 1:
            raise EmptyPage(self.error_messages["no_results"])
        return EstimatedPage(rows[: self.per_page], number, self, has_next=len(rows) > self.per_page)


class EstimatedPage(Page):
    """A page of a CountingPaginator whose count is an estimate: it knows its neighbours from the rows."""

    def __init__(self, object_list, number, paginator, *, has_next: bool) -> None:
        super().__init__(object_list, number, paginator)
        self._has_next = has_next

    def has_next(self) -> bool:
        return self._has_next

    def end_index(self) -> int:
        return (self.number - 1) * self.paginator.per_page + len(self.object_list)
