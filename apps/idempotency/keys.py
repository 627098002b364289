"""Parsing the Idempotency-Key header and computing the request fingerprint and scope."""

from __future__ import annotations

import hashlib
import json

from django.http import HttpRequest

from apps.core.errors import InvalidInput

HEADER = "Idempotency-Key"
MAX_LENGTH = 255


def parse_key(raw: str) -> str:
    """Return the key from a header value: 1–255 printable ASCII, bare or as a structured-field string."""
    value = raw
    if raw.startswith('"'):
        if len(raw) < 2 or not raw.endswith('"'):
            raise InvalidInput(f"{HEADER} opens a quoted string but does not close it.")
        value = _unquote(raw[1:-1])
    if not 0 < len(value) <= MAX_LENGTH or not all(" " <= char <= "~" for char in value):
        raise InvalidInput(f"{HEADER} must be 1 to {MAX_LENGTH} printable ASCII characters.")
    return value


def _unquote(inner: str) -> str:
    """Undo structured-field string escaping (RFC 8941 §3.3.3): only \\" and \\\\ are escapes."""
    result = []
    chars = iter(inner)
    for char in chars:
        if char == "\\":
            escaped = next(chars, "")
            if escaped not in ('"', "\\"):
                raise InvalidInput(f"{HEADER} has an invalid escape in its quoted form.")
            result.append(escaped)
        elif char == '"':
            raise InvalidInput(f"{HEADER} has an unescaped quote in its quoted form.")
        else:
            result.append(char)
    return "".join(result)


def fingerprint(request: HttpRequest) -> str:
    """sha256 over method, path, query string, content type and the canonical body."""
    content_type = request.content_type or ""
    body = request.body
    if content_type == "application/json" and body:
        try:
            body = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
        except (ValueError, RecursionError):
            pass  # not JSON after all: fingerprint the bytes as sent
    digest = hashlib.sha256()
    for part in (request.method, request.path, request.META.get("QUERY_STRING", ""), content_type):
        digest.update(part.encode("utf-8", "surrogateescape"))
        digest.update(b"\n")
    digest.update(body)
    return digest.hexdigest()


def scope_hash(*, principal: str, method: str, path: str, key: str) -> str:
    """The unique scope of a record: the same key from two principals never collides."""
    return hashlib.sha256("\n".join((principal, method, path, key)).encode("utf-8", "surrogateescape")).hexdigest()
