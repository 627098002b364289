"""Render an email from its three templates: emails/<name>/subject.txt, body.txt and body.html."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.template import TemplateDoesNotExist
from django.template.loader import get_template, render_to_string

from apps.core.errors import InvalidInput

PARTS = ("subject.txt", "body.txt", "body.html")


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str


def template_check(*, template: str) -> None:
    """Raise InvalidInput unless all three templates of ``template`` exist (checked when the email is asked for)."""
    if not template or "/" in template or template.startswith("."):
        raise InvalidInput(f"Email template name {template!r} is not valid.")
    for part in PARTS:
        try:
            get_template(f"emails/{template}/{part}")
        except TemplateDoesNotExist as exc:
            raise InvalidInput(f"Email template emails/{template}/{part} does not exist.") from exc


def email_render(*, template: str, context: dict[str, Any]) -> Rendered:
    """Render subject (one line), plain text and HTML bodies."""
    subject, text, html = (render_to_string(f"emails/{template}/{part}", context) for part in PARTS)
    # A header cannot hold a newline (Django would refuse the message): templates often end with one.
    return Rendered(subject=" ".join(subject.split()), text=text, html=html)
