import json

from django.core.management.base import BaseCommand
from django.core.serializers.json import DjangoJSONEncoder

from apps.outbox.relay_status import relay_status_text
from apps.outbox.selectors import outbox_stats


class Command(BaseCommand):
    help = ("Print outbox counts per status, the oldest pending message's age, the last minute's throughput, "
            "and each relay's last successful cycle and last error.")

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", dest="as_json", help="Print the stats as JSON.")

    def handle(self, *args, as_json: bool, **options):
        stats = outbox_stats()
        if as_json:
            self.stdout.write(json.dumps(stats, sort_keys=True, cls=DjangoJSONEncoder))
            return
        rows = [(status, f"~{count}" if status in stats["counts_estimated"] else str(count))
                for status, count in stats["counts"].items()]
        rows.append(("oldest pending age", f"{stats['oldest_pending_age_seconds']:.1f} s"))
        rows.append(("published last minute", str(stats["published_last_minute"])))
        rows.append(("unroutable events", str(stats["unroutable_events"])))
        label_width = max(len(label) for label, _ in rows)
        value_width = max(len(value) for _, value in rows)
        for label, value in rows:
            self.stdout.write(f"{label:<{label_width}}  {value:>{value_width}}")
        for relay in stats["relays"]:
            self.stdout.write(f"relay {relay['slot']} ({relay['holder'] or 'no holder'}): {relay_status_text(relay)}")
        if not stats["relays"]:
            self.stdout.write("relays: none has run yet")
        if stats["relay_problem"]:
            self.stdout.write(self.style.ERROR(f"RELAY FAILING: {stats['relay_problem']}"))
