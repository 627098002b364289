"""gunicorn's threaded worker, answering the errors gunicorn raises itself as problem+json instead of HTML.

gunicorn refuses some requests before Django sees them: an over-long request line (414), too many or
too large headers (431), a malformed request (400). It has no hook for the body of those answers, so
this worker lets gunicorn decide the status as usual and replaces only the HTML page it would send.
Set by compose/gunicorn.conf.py (``worker_class``).
"""

from __future__ import annotations

import json
import uuid

from gunicorn import util
from gunicorn.workers.gthread import ThreadWorker


class _Captured:
    """Stands in for the client socket while gunicorn writes its error page, to learn the status line."""

    def __init__(self) -> None:
        self.data = b""

    def gettimeout(self) -> float:
        return 0.0  # util.write_nonblock then writes straight through sendall

    def sendall(self, data: bytes) -> None:
        self.data += data


class ProblemThreadWorker(ThreadWorker):
    """gthread worker whose own error answers are RFC 9457 problems with an X-Request-ID."""

    def handle_error(self, req, client, addr, exc) -> None:
        captured = _Captured()
        super().handle_error(req, captured, addr, exc)  # logs, writes the access line, picks the status
        status_line = captured.data.split(b"\r\n", 1)[0].decode("latin-1")  # "HTTP/1.1 414 URI Too Long"
        try:
            _, code, reason = status_line.split(" ", 2)
            status = int(code)
        except ValueError:
            return  # gunicorn wrote nothing (it could not even start an answer): nor do we
        try:
            util.write_nonblock(client, problem_http_response(status, reason, self.cfg))
        except Exception:  # the client may be gone; gunicorn ignores this the same way
            self.log.debug("Failed to send error message.")


def problem_http_response(status: int, reason: str, cfg) -> bytes:
    """A complete HTTP/1.1 response carrying the problem document for a request gunicorn refused."""
    from apps.core.problems import PROBLEM_CONTENT_TYPE, problem_body  # Django is set up in a worker

    request_id = uuid.uuid4().hex
    detail = {
        400: "The request is not valid HTTP/1.1.",
        414: f"The request line (method, path and query) is longer than {cfg.limit_request_line} bytes.",
        431: f"A request header is longer than {cfg.limit_request_field_size} bytes, "
             f"or there are more than {cfg.limit_request_fields} headers.",
    }.get(status)
    body = json.dumps(problem_body(status=status, title=reason, detail=detail, request_id=request_id)).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: {PROBLEM_CONTENT_TYPE}\r\n"
            f"Content-Length: {len(body)}\r\nX-Request-ID: {request_id}\r\n\r\n")
    return head.encode("latin-1") + body
