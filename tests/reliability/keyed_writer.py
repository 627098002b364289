"""A user's service publishing keyed events while faults strike: `python -m tests.reliability.keyed_writer OUT PREFIX`.

Each transaction publishes a few events, each carrying its key's sequence number; every tenth rolls back on
purpose. A sequence number is never reused, even when a transaction fails, so the order each key reaches a
consumer in can be checked with gaps allowed. Every transaction's outcome goes to OUT as one JSON line:
``committed``, ``rolled_back``, or ``unknown`` (the connection broke during COMMIT: it may have committed).
SIGTERM ends the loop after the transaction in progress.
"""

from __future__ import annotations

import json
import signal
import sys
import time

TOPIC = "reliability.keyed"
KEYS = 8
EVENTS_PER_TRANSACTION = 4
TRANSACTIONS_PER_SECOND = 10
ROLLBACK_EVERY = 10


class _RolledBack(Exception):
    pass


def main(out_path: str, prefix: str) -> None:
    import django

    django.setup()
    from django.db import DatabaseError, connection, transaction

    from apps.outbox import publish

    stopping = False

    def stop(signum, frame) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    keys = [f"{prefix}-k{n}" for n in range(KEYS)]
    sequence = dict.fromkeys(keys, 0)
    started = time.monotonic()
    with open(out_path, "a", buffering=1) as out:
        number = 0
        while not stopping:
            number += 1
            ids: list[str] = []
            committing = False
            try:
                with transaction.atomic():
                    for index in range(EVENTS_PER_TRANSACTION):
                        key = keys[(number * EVENTS_PER_TRANSACTION + index) % KEYS]
                        seq, sequence[key] = sequence[key], sequence[key] + 1
                        ids.append(str(publish(TOPIC, {"key": key, "seq": seq}, key=key).message_id))
                    if number % ROLLBACK_EVERY == 0:
                        raise _RolledBack
                    committing = True
                outcome = "committed"
            except _RolledBack:
                outcome = "rolled_back"
            except DatabaseError as exc:  # the database is restarting: what a service would do, try again
                outcome = "unknown" if committing else "rolled_back"
                print(f"transaction {number} failed ({outcome}): {exc}", file=sys.stderr, flush=True)
                connection.close()
                time.sleep(0.2)
            out.write(json.dumps({"outcome": outcome, "ids": ids}) + "\n")
            # Load shaping, not waiting for a condition: keep to the target rate.
            ahead = number / TRANSACTIONS_PER_SECOND - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
