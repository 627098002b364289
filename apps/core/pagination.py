"""Pagination used by every list endpoint: strict page parameters and counts that stay cheap on big tables."""

from __future__ import annotations

from django.http import QueryDict
from rest_framework import serializers
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response

from apps.core.counting import DEFAULT_EXACT_COUNT_LIMIT, CountingPaginator
from apps.core.serializers import StrictQuerySerializer

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
# Deeper than this, OFFSET pagination reads and throws away hundreds of millions of rows: filter instead.
MAX_PAGE = 1_000_000


class PageQuerySerializer(StrictQuerySerializer):
    """``page`` and ``page_size``; list endpoints with filters extend it, so one serializer checks the query."""

    page = serializers.IntegerField(
        required=False, min_value=1, max_value=MAX_PAGE,
        help_text="A page number (1 is the first page). A page past the last answers 404.",
    )
    page_size = serializers.IntegerField(
        required=False, min_value=1, max_value=MAX_PAGE_SIZE,
        help_text=f"Results per page (default {DEFAULT_PAGE_SIZE}).",
    )


class StandardPagination(PageNumberPagination):
    """Page-number pagination: ?page=N&page_size=M, strictly checked; ``count_estimated`` flags an estimate."""

    page_size = DEFAULT_PAGE_SIZE
    page_size_query_param = "page_size"
    max_page_size = MAX_PAGE_SIZE
    last_page_strings = ()
    django_paginator_class = CountingPaginator

    def paginate_queryset(self, queryset, request, view=None):
        # Only this class's own parameters: a view's filters are checked by the view's query serializer.
        own = QueryDict(mutable=True)
        for name in ("page", "page_size"):
            if name in request.query_params:
                own.setlist(name, request.query_params.getlist(name))
        query = PageQuerySerializer(data=own)
        query.is_valid(raise_exception=True)
        self._query = query.validated_data
        return super().paginate_queryset(queryset, request, view)

    def get_page_size(self, request) -> int:
        return self._query.get("page_size", self.page_size)

    def get_page_number(self, request, paginator) -> int:
        return self._query.get("page", 1)

    def get_paginated_response(self, data) -> Response:
        return Response({
            "count": self.page.paginator.count,
            "count_estimated": self.page.paginator.count_estimated,
            "next": self.get_next_link(),
            "previous": self.get_previous_link(),
            "results": data,
        })

    def get_paginated_response_schema(self, schema: dict) -> dict:
        return {
            "type": "object",
            "required": ["count", "count_estimated", "next", "previous", "results"],
            "properties": {
                "count": {
                    "type": "integer", "minimum": 0,
                    "description": f"Matching results: exact up to {DEFAULT_EXACT_COUNT_LIMIT:,}, PostgreSQL's "
                                   "estimate above that (then count_estimated is true).",
                },
                "count_estimated": {"type": "boolean", "description": "True when `count` is an estimate."},
                "next": {"type": "string", "format": "uri", "nullable": True, "description": "The next page."},
                "previous": {"type": "string", "format": "uri", "nullable": True,
                             "description": "The previous page."},
                "results": schema,
            },
        }

    def get_schema_operation_parameters(self, view) -> list[dict]:
        parameters = []
        for name, field in PageQuerySerializer().fields.items():
            parameters.append({
                "name": name, "in": "query", "required": False, "description": str(field.help_text),
                "schema": {"type": "integer", "minimum": field.min_value, "maximum": field.max_value},
            })
        return parameters
