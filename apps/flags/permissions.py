"""Gating endpoints by flag: a DRF permission class factory and a decorator for function views."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable

from django.core.exceptions import PermissionDenied
from django.http import Http404
from rest_framework import exceptions
from rest_framework.permissions import BasePermission

from apps.flags.context import request_context
from apps.flags.evaluation import is_enabled
from apps.flags.models import KEY_PATTERN

GATE_STATUSES = (403, 404)


def _check_gate(key: str, status: int) -> None:
    if not isinstance(key, str) or not re.fullmatch(KEY_PATTERN, key):
        raise ValueError(f"{key!r} is not a valid flag key")
    if status not in GATE_STATUSES:
        raise ValueError(f"status must be 403 or 404, not {status!r}")


# Named like a class because it is used like one: permission_classes = [IsAuthenticated, FlagEnabled("beta")].
def FlagEnabled(key: str, status: int = 404) -> type[BasePermission]:
    """A DRF permission class that lets a request through only while flag ``key`` is on for its user.

    Off answers 404 (the endpoint does not exist for this caller) or 403. List it after the
    authentication check (``[IsAuthenticated, FlagEnabled("beta")]``) so anonymous callers get 401.
    """
    _check_gate(key, status)

    class FlagEnabledPermission(BasePermission):
        flag_key = key

        def has_permission(self, request, view) -> bool:
            if is_enabled(key, request_context(request)):
                return True
            # Raised rather than returning False: DRF would turn False into 401 for anonymous callers
            # and never into 404, and the caller asked for a definite status.
            if status == 404:
                raise exceptions.NotFound()
            raise exceptions.PermissionDenied("This feature is not available to you.")

    FlagEnabledPermission.__name__ = FlagEnabledPermission.__qualname__ = f"FlagEnabled[{key}]"
    return FlagEnabledPermission


def flag_required(key: str, status: int = 404) -> Callable[[Callable], Callable]:
    """Decorate a function view so it answers 404 (or 403) while flag ``key`` is off for the requester."""
    _check_gate(key, status)

    def decorator(view: Callable) -> Callable:
        @functools.wraps(view)
        def gated(request, *args, **kwargs):
            if not is_enabled(key, request_context(request)):
                # Django's own exceptions: HTML views get the site's 404/403 pages, views under /api/
                # get problem details (from DRF's handler, or from ApiProblemMiddleware outside DRF).
                if status == 404:
                    raise Http404("Not found.")
                raise PermissionDenied("This feature is not available to you.")
            return view(request, *args, **kwargs)

        return gated

    return decorator
