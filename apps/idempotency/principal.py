"""Who a keyed request acts for, decided by the view's own DRF authentication and permission checks.

The middleware needs the principal before the view runs (it scopes the key), and must not judge
the key of a caller the view would refuse (401/403 come before a malformed key's 400). So it runs
the DRF view's own checks first - content negotiation, authentication and permissions, in DRF's
order - and, if they refuse, answers exactly what the view would have answered. Throttles are left
to the view, which counts each request once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.http import HttpRequest, HttpResponse
from rest_framework.views import APIView


@dataclass(frozen=True)
class Preflight:
    """The principal's user id (None: anonymous), or the view's refusal to answer instead."""

    user_id: int | None
    refusal: HttpResponse | None = None


def principal_preflight(
    *, request: HttpRequest, view_func: Callable, view_args: tuple, view_kwargs: dict[str, Any]
) -> Preflight:
    """Authenticate and authorize ``request`` as its view will; a plain Django view acts for the session user."""
    view_class = getattr(view_func, "cls", None)
    if view_class is None or not issubclass(view_class, APIView):
        return Preflight(principal_id(request))
    view = view_class(**getattr(view_func, "initkwargs", {}))
    if hasattr(view_func, "actions"):
        view.action_map = view_func.actions  # a viewset decides its permissions per action
    view.setup(request, *view_args, **view_kwargs)
    view.headers = view.default_response_headers
    drf_request = view.request = view.initialize_request(request, *view_args, **view_kwargs)
    view.throttle_classes = ()
    try:
        view.initial(drf_request, *view_args, **view_kwargs)
    except Exception as exc:
        response = view.finalize_response(drf_request, view.handle_exception(exc), *view_args, **view_kwargs)
        return Preflight(None, refusal=response.render() if callable(getattr(response, "render", None)) else response)
    # DRF put the user it authenticated on the Django request too, where the view will find it again.
    return Preflight(principal_id(request))


def principal_id(request: HttpRequest) -> int | None:
    """The id of the authenticated user on ``request`` (DRF views set it when they authenticate), else None."""
    user = getattr(request, "user", None)
    return user.pk if user is not None and user.is_authenticated else None
