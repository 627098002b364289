"""schemathesis hooks for tests/test_schemathesis.py (loaded through SCHEMATHESIS_HOOKS).

One hook drops the few "schema-valid request rejected" that are right answers to a request no
OpenAPI 3.0 schema can rule out. Each is recognised by its problem type and operation, never by
status alone, and is documented where the rule lives:

- ``idempotency-key-reused`` (422, any unsafe operation): the generator sent one Idempotency-Key with
  two different requests; refusing the second is the key's whole point.
- ``invalid-flag-definition`` (400, POST/PATCH /api/flags/): the rules that span fields (a window's
  order, weights summing to 100, unique variant names, a rule's variant, a compilable regex) or, for
  PATCH, the stored flag (apps/flags/openapi.py). Every rule a schema can state is gated before these
  and answers ``invalid-input`` or ``validation-error``, which the hook keeps.
- ``invalid-input`` (400, POST/PATCH /api/flags/) whose every error is a NUL character in an object
  key inside a free-form JSON value: OpenAPI 3.0 has no ``propertyNames`` to say so.

- ``invalid-schedule`` (400, schedule writes, backfill and preview): the meaning of a schedule that
  no schema states (a cron that parses, an IANA zone, a task of the contract, one cadence of three,
  end after start, a backfill range in the past) (apps/schedules/errors.py). Type and bound errors
  answer ``validation-error`` first, which the hook keeps.
- ``unknown-sku`` (400, POST /api/orders/): the SKU is a well-formed string that is not in the catalog,
  which is data, not schema (apps/orders/catalog.py). Type and length errors answer ``validation-error``
  first, which the hook keeps.
- ``invalid-endpoint`` (400, webhook endpoint writes): what no schema states about an endpoint (a URL the
  SSRF guard refuses: scheme, allow-list, a non-public address, a host that does not resolve; an
  unknown event type or pattern; a reserved header or a value with a line break)
  (apps/notifications/errors.py). Type and bound errors answer ``validation-error`` first.

And one "deleted resource still available" that is right too: the DELETE was an idempotent replay
(``Idempotent-Replayed: true``) of an earlier DELETE with the same key and request, so it answered that
first 204 again and deleted nothing, while the resource had been created again in between.
"""

from __future__ import annotations

import json

import schemathesis
from schemathesis.openapi.checks import RejectedPositiveData, UseAfterFree

PROBLEM = "urn:taskplane:problem:"
FLAG_WRITES = {("POST", "/api/flags/"), ("PATCH", "/api/flags/{key}/")}
NUL_IN_NAME = "Names must not contain NUL characters."
# Cases answered with a stored response: one worker runs the whole run in this process.
replayed_cases: set[str] = set()


def _right_answer(status: int, problem: dict, operation: tuple[str, str]) -> bool:
    kind = problem.get("type")
    if (status, kind) == (422, f"{PROBLEM}idempotency-key-reused"):
        return True
    if (status, kind) == (400, f"{PROBLEM}invalid-schedule") and operation[1].startswith("/api/schedules/"):
        return True
    if (status, kind) == (400, f"{PROBLEM}invalid-endpoint") and operation[1].startswith("/api/webhooks/endpoints/"):
        return True
    if (status, kind) == (400, f"{PROBLEM}unknown-sku") and operation == ("POST", "/api/orders/"):
        return True
    if operation not in FLAG_WRITES or status != 400:
        return False
    if kind == f"{PROBLEM}invalid-flag-definition":
        return True
    errors = problem.get("errors") or []
    return kind == f"{PROBLEM}invalid-input" and bool(errors) and all(
        error.get("message") == NUL_IN_NAME for error in errors)


@schemathesis.hook
def after_call(context, case, response) -> None:
    """Remember which cases were idempotent replays."""
    if response.headers.get("idempotent-replayed") == ["true"]:
        replayed_cases.add(case.id)


@schemathesis.hook
def filter_failure(context, failure, case, response) -> bool:
    """Keep every failure but those the module docstring names."""
    if isinstance(failure, UseAfterFree):
        return failure.deleted_case_id not in replayed_cases
    if not isinstance(failure, RejectedPositiveData):
        return True
    try:
        problem = json.loads(response.content)
    except ValueError:
        return True
    return not (isinstance(problem, dict) and _right_answer(response.status_code, problem,
                                                            (case.method.upper(), case.path)))
