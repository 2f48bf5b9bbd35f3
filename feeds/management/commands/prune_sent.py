from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand

from feeds import sweeper


class Command(BaseCommand):
    help = (
        "Drop the request bodies of deliveries answered more than MPFEED_BODY_RETENTION_DAYS ago and the search "
        "keys of batches older than MPFEED_SEARCH_RETENTION_DAYS, keeping every result (state, answers, record "
        "refs, ids), and the webhook messages sent or given up on more than MPFEED_WEBHOOK_RETENTION_DAYS ago. "
        "Failed deliveries keep their bodies for replays. The task cluster does this every hour."
    )

    def handle(self, *args, **options):
        bodies, keys, messages = sweeper.prune_sent()
        self.stdout.write(
            f"Dropped {bodies} request body(ies) older than {settings.MPFEED_BODY_RETENTION_DAYS:g} day(s), "
            f"{keys} search key(s) older than {settings.MPFEED_SEARCH_RETENTION_DAYS:g} day(s) and "
            f"{messages} webhook message(s) older than {settings.MPFEED_WEBHOOK_RETENTION_DAYS:g} day(s)."
        )
