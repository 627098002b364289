"""The evaluation context: who is asking. From the request in web processes, from the message in tasks."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from typing import Any

from django.conf import settings
from django.utils.module_loading import import_string

_context: ContextVar[Mapping[str, Any] | Callable[[], Mapping[str, Any]] | None] = ContextVar("flags_context",
                                                                                            default=None)


def set_context(value: Mapping[str, Any] | Callable[[], Mapping[str, Any]] | None) -> None:
    """Bind the context (or a function that builds it on first use) for this request or task."""
    _context.set(value)


def current_context() -> Mapping[str, Any]:
    """The bound context (built on first use); empty outside requests and tasks."""
    value = _context.get()
    return (value() if callable(value) else value) or {}


def request_context(request) -> Mapping[str, Any]:
    """The context of the user making ``request`` (a Django or DRF request), with or without the middleware."""
    bound = _context.get()
    django_request = getattr(request, "_request", request)
    if isinstance(bound, _RequestContext) and bound.request is django_request:
        return bound()
    return context_for_user(getattr(request, "user", None), request)


def captured_context() -> dict[str, Any]:
    """The bound context as a plain dict (groups read if not yet): what the outbox carries into tasks."""
    return dict(current_context())


def context_for_user(user, request=None) -> Mapping[str, Any]:
    """Context of an authenticated user: id, groups, staff, plus the project's hook (FLAGS_CONTEXT_HOOK).

    The groups are read from the database only when something looks them up (a groups rule, or a
    copy of the whole context), once: most flags never need them (issue 14).
    """
    context: dict[str, Any] = {}
    if user is not None and user.is_authenticated:
        context = {"user_id": str(user.pk), "staff": bool(user.is_staff)}
    if settings.FLAGS_CONTEXT_HOOK:
        context.update(import_string(settings.FLAGS_CONTEXT_HOOK)(request, user) or {})
    if user is not None and user.is_authenticated and "groups" not in context:
        return UserContext(context, user)
    return context


class UserContext(Mapping[str, Any]):
    """A user's context whose ``groups`` entry is read on its first lookup, then kept."""

    def __init__(self, values: dict[str, Any], user) -> None:
        self._values = values
        self._user = user  # None once the groups are read

    def __getitem__(self, key: str) -> Any:
        if key == "groups" and self._user is not None:
            self._values["groups"] = sorted(self._user.groups.values_list("name", flat=True))
            self._user = None
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        yield from self._values
        if self._user is not None:
            yield "groups"

    def __len__(self) -> int:
        return len(self._values) + (self._user is not None)

    def __repr__(self) -> str:
        return f"UserContext({self._values!r}, groups={'unread' if self._user is not None else 'read'})"


class _RequestContext:
    """A request's context, built on first use and rebuilt if the request's user changes.

    API-key requests are authenticated by DRF inside the view, which then replaces ``request.user``
    on the Django request: a context built before that (for the anonymous user) must not stick.
    """

    def __init__(self, request) -> None:
        self.request = request
        self._user: Any = _UNSET
        self._value: Mapping[str, Any] = {}

    def __call__(self) -> Mapping[str, Any]:
        user = getattr(self.request, "user", None)
        if user is not self._user:
            self._user, self._value = user, context_for_user(user, self.request)
        return self._value


_UNSET = object()


class FlagContextMiddleware:
    """Bind a lazily built context for the request's user (groups are read only if a flag is evaluated)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        set_context(_RequestContext(request))
        try:
            return self.get_response(request)
        finally:
            set_context(None)
