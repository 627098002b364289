"""Test-only WSGI entry point: settings.wsgi's Django application, able to die at a chosen moment.

    gunicorn tests.apps.idempotency.crash_wsgi:application

A request carrying ``X-Test-Crash: after-commit`` runs through Django completely (the idempotency
middleware has committed the view's writes and the stored response by then) and then SIGKILLs the
whole gunicorn process group before a single byte of the response reaches the socket: the client
sees the connection drop, exactly as when a server dies between commit and reply. Every other
request is served unchanged.
"""

from __future__ import annotations

import os
import signal

from settings.wsgi import application as django_application

CRASH_HEADER = "HTTP_X_TEST_CRASH"
AFTER_COMMIT = "after-commit"


def application(environ, start_response):
    """Serve with Django; on ``X-Test-Crash: after-commit`` kill the server instead of answering."""
    if environ.get(CRASH_HEADER) != AFTER_COMMIT:
        return django_application(environ, start_response)

    def hold_back(status, headers, exc_info=None):
        # Nothing goes to gunicorn, so not even the status line can be written before the kill.
        return lambda data: None

    django_application(environ, hold_back)
    _kill_server()
    raise AssertionError("unreachable: the server was killed")  # pragma: no cover


def _kill_server() -> None:
    # The test starts gunicorn in a session of its own, so the master leads this worker's process
    # group. Refuse anything else rather than SIGKILL a group this wrapper was not meant to end.
    group = os.getpgrp()
    if group != os.getppid():
        raise RuntimeError("crash_wsgi must run under a gunicorn master that leads its own process group")
    os.killpg(group, signal.SIGKILL)
