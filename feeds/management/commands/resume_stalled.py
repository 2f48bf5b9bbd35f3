from __future__ import annotations

from django.core.management.base import BaseCommand

from feeds import sweeper


class Command(BaseCommand):
    help = (
        "Queue the runs a worker should pick up now: waits that are over, runs whose worker died, lost tasks "
        "and replays. The task cluster does this every minute; run it by hand after restarting workers."
    )

    def handle(self, *args, **options):
        resumed = sweeper.resume_stalled()
        self.stdout.write(f"Queued {len(resumed)} run(s){': ' + ', '.join(map(str, resumed)) if resumed else ''}.")
