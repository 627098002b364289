"""Parsing the Idempotency-Key header and computing the request fingerprint and scope."""

from __future__ import annotations

import hashlib
import json

from django.http import HttpRequest

from apps.core.errors import InvalidInput

HEADER = "Idempotency-Key"
MAX_LENGTH = 255

# What parse_key accepts (it is the authority; a property test checks they agree): a bare key (printable
# ASCII, no comma, not opening with a quote) or an RFC 8941 string of such characters, where a comma is
# allowed and \" and \\ are the only escapes.
KEY_PATTERN = r'^(?:[ !#-+\--~][ -+\--~]{0,254}|"(?:[ !#-\[\]-~]|\\["\\]){1,255}")$'
# What a client may send, as the OpenAPI schema publishes it (tests/test_openapi.py checks it against
# parse_key): HTTP drops a value's surrounding spaces and tabs, so a bare key starts and ends with a
# visible character (no comma) and may be followed by spaces or tabs; a quoted key is as above.
_BARE = r'[!#-+\--~](?:[ -+\--~]{0,253}[!-+\--~])?'
_QUOTED = r'"(?:[ !#-\[\]-~]|\\["\\]){1,255}"'
HEADER_PATTERN = rf"^(?:{_BARE}|{_QUOTED})[ \t]*$"
REPEATED = (f"Send one {HEADER} header. Servers join repeated headers with a comma, so a bare key cannot "
            "contain one; quote the key to include a comma.")


def parse_key(raw: str) -> str:
    """Return the key from a header value: 1–255 printable ASCII, bare or as a structured-field string.

    Repeated headers reach Django joined with commas (gunicorn, runserver and ASGI alike), so a list
    of keys is refused rather than read as one key.
    """
    if raw.startswith('"'):
        value, rest = _unquote(raw)
        if rest:
            raise InvalidInput(REPEATED if rest.lstrip().startswith(",") else
                               f"{HEADER} has characters after its closing quote.")
    elif "," in raw:
        raise InvalidInput(REPEATED)
    else:
        value = raw
    if not 0 < len(value) <= MAX_LENGTH or not all(" " <= char <= "~" for char in value):
        raise InvalidInput(f"{HEADER} must be 1 to {MAX_LENGTH} printable ASCII characters.")
    return value


def _unquote(raw: str) -> tuple[str, str]:
    """Read the structured-field string (RFC 8941 §3.3.3) that opens ``raw``; return it and what follows."""
    result = []
    index = 1
    while index < len(raw):
        char = raw[index]
        if char == "\\":
            escaped = raw[index + 1:index + 2]
            if escaped not in ('"', "\\"):
                raise InvalidInput(f"{HEADER} has an invalid escape in its quoted form.")
            result.append(escaped)
            index += 2
        elif char == '"':
            return "".join(result), raw[index + 1:]
        else:
            result.append(char)
            index += 1
    raise InvalidInput(f"{HEADER} opens a quoted string but does not close it.")


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
