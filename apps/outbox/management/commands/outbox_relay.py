import signal
import threading
import time

import psycopg
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError
from django.utils import timezone

from apps.core.startup import log_configuration
from apps.outbox.serving import relay_drain, relay_serve
from apps.outbox.transports import BrokerUnavailable


class Command(BaseCommand):
    help = (
        "Run the outbox relay in the foreground: `--once` publishes what is pending now and exits; otherwise "
        "it serves lease after lease until interrupted (Celery beat normally keeps a relay alive instead)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="Publish what is pending now, then exit.")
        parser.add_argument("--lease", type=float, default=None, metavar="SECONDS",
                            help="Length of one lease (default: OUTBOX_RELAY_LEASE_SECONDS).")
        parser.add_argument("--leases", type=int, default=None, metavar="N",
                            help="Stop after N leases (default: run until interrupted).")

    def handle(self, *args, once: bool, lease: float | None, leases: int | None, **options):
        if lease is not None and lease <= 0:
            raise CommandError("--lease must be a positive number of seconds.")
        if leases is not None and leases < 1:
            raise CommandError("--leases must be at least 1.")
        if once:
            try:
                published = relay_drain()
            except BrokerUnavailable as exc:
                raise CommandError(f"Broker unavailable, nothing was published: {exc}") from exc
            self.stdout.write(f"Published {published} message(s).")
            return
        log_configuration(process="outbox_relay")
        previous = _stop_on_sigterm()
        try:
            self._serve(lease, leases)
        except KeyboardInterrupt:
            self.stdout.write("Relay stopped.")
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    def _serve(self, lease: float | None, leases: int | None) -> None:
        served = 0
        while leases is None or served < leases:
            served += 1
            try:
                outcome = relay_serve(lease_seconds=lease)
            except (DatabaseError, psycopg.Error) as exc:
                # The slot's connection could not be opened; a foreground relay waits for the database.
                outcome = f"database unavailable ({exc})"
            self.stdout.write(f"{timezone.now().isoformat(timespec='seconds')} lease {served}: {outcome}")
            if outcome != "lease-ended" and (leases is None or served < leases):
                # Every slot is held elsewhere, or the database is down: asking again at once would only spin.
                time.sleep(settings.OUTBOX_RELAY_TICK_SECONDS)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _stop_on_sigterm():
    # Containers stop with SIGTERM: treat it like Ctrl-C so the relay's finally blocks release its slot
    # and broker connection (an uncommitted batch rolls back and is sent again by the next relay).
    if threading.current_thread() is not threading.main_thread():
        return None  # signal handlers can only be installed from the main thread
    return signal.signal(signal.SIGTERM, _raise_interrupt)
