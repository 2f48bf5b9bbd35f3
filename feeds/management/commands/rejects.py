from __future__ import annotations

import orjson
from django.core.management.base import BaseCommand, CommandError

from feeds.models import RejectedRecord, SyncRun


class Command(BaseCommand):
    help = (
        "List a run's rejected records, one JSON object per line: where the record came from (file and line, or "
        "key), the stage that refused it (source, mapping, server), why, and an excerpt of the record."
    )

    def add_arguments(self, parser):
        parser.add_argument("--run", type=int, required=True, help="The run's id (run_sync prints it).")
        parser.add_argument("--limit", type=int, default=1000, help="At most this many (default 1000; 0: all).")

    def handle(self, *args, **options):
        run = SyncRun.objects.filter(pk=options["run"]).first()
        if run is None:
            raise CommandError(f"No run #{options['run']}.")
        rejects = RejectedRecord.objects.filter(run=run).order_by("pk")
        if options["limit"] > 0:
            rejects = rejects[: options["limit"]]
        for reject in rejects.iterator():
            line = {"ref": reject.ref, "stage": reject.stage, "reason": reject.reason, "excerpt": reject.excerpt}
            self.stdout.write(orjson.dumps(line).decode())
