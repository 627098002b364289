import json

from django.core.management.base import BaseCommand

from apps.outbox.selectors import outbox_stats


class Command(BaseCommand):
    help = "Print outbox counts per status, the oldest pending message's age and the last minute's throughput."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", dest="as_json", help="Print the stats as JSON.")

    def handle(self, *args, as_json: bool, **options):
        stats = outbox_stats()
        if as_json:
            self.stdout.write(json.dumps(stats, sort_keys=True))
            return
        rows = [(status, str(count)) for status, count in stats["counts"].items()]
        rows.append(("oldest pending age", f"{stats['oldest_pending_age_seconds']:.1f} s"))
        rows.append(("published last minute", str(stats["published_last_minute"])))
        label_width = max(len(label) for label, _ in rows)
        value_width = max(len(value) for _, value in rows)
        for label, value in rows:
            self.stdout.write(f"{label:<{label_width}}  {value:>{value_width}}")
