"""Template tags: ``{% load flags %}{% flag_enabled "new-checkout" as checkout_on %}``."""

from __future__ import annotations

from typing import Any

from django import template

from apps.flags.context import current_context, request_context
from apps.flags.evaluation import get_value, is_enabled

register = template.Library()


def _context_of(template_context: template.Context) -> dict[str, Any]:
    request = template_context.get("request")
    # Templates rendered outside a request (emails built in a task) use the task's bound context.
    return request_context(request) if request is not None else current_context()


@register.simple_tag(takes_context=True)
def flag_enabled(context: template.Context, key: str) -> bool:
    """True when flag ``key`` is on for the request's user (use with ``as var``)."""
    return is_enabled(key, _context_of(context))


@register.simple_tag(takes_context=True)
def flag_value(context: template.Context, key: str, default: Any = None) -> Any:
    """The value flag ``key`` serves the request's user, or ``default``."""
    return get_value(key, default, _context_of(context))
