from __future__ import annotations

from datetime import UTC, datetime

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Q

from feeds import sync
from feeds.models import Delivery, SyncRun, Workspace


def parse_since(value: str) -> datetime:
    """An ISO 8601 date or date and time; without a zone it is UTC."""
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise CommandError(
            f"--since {value!r} is not an ISO 8601 date or time; use e.g. 2026-05-01, 2026-05-01T10:00 "
            "or 2026-05-01T10:00:00+02:00 (without a zone it is UTC)."
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


class Command(BaseCommand):
    help = (
        "Send failed deliveries again (their stored bodies, byte for byte) and queue their runs: one delivery, "
        "the failed deliveries of a run, or those of a workspace created since a time."
    )

    def add_arguments(self, parser):
        which = parser.add_mutually_exclusive_group(required=True)
        which.add_argument("--delivery", type=int, metavar="ID", help="A failed delivery's id.")
        which.add_argument("--run", type=int, metavar="ID", help="A run's id: replay its failed deliveries.")
        which.add_argument("--workspace", metavar="NAME", help="A workspace's name or slug (needs --since).")
        parser.add_argument("--since", metavar="ISO8601", help="With --workspace: deliveries created since then.")

    def handle(self, *args, **options):
        if options["since"] is not None and not options["workspace"]:
            raise CommandError("--since goes with --workspace.")
        if options["delivery"] is not None:
            deliveries = Delivery.objects.filter(pk=options["delivery"])
            delivery = deliveries.first()
            if delivery is None:
                raise CommandError(f"No delivery with id {options['delivery']}.")
            count, queued = sync.replay(deliveries)
            nothing = f"delivery {delivery.pk} is {delivery.get_state_display().lower()}, not failed."
        elif options["run"] is not None:
            run = SyncRun.objects.filter(pk=options["run"]).first()
            if run is None:
                raise CommandError(f"No run with id {options['run']}.")
            count, queued = sync.replay_run(run)
            nothing = f"run #{run.pk} has no failed deliveries."
        else:
            if not options["since"]:
                raise CommandError("--workspace needs --since (an ISO 8601 date or time).")
            since = parse_since(options["since"])
            name = options["workspace"]
            workspace = Workspace.objects.filter(Q(name=name) | Q(slug=name)).first()
            if workspace is None:
                raise CommandError(f"No workspace named {name!r}.")
            count, queued = sync.replay_workspace(workspace, since)
            nothing = f"no delivery of {workspace} failed since {since.isoformat()}."

        if not count:
            self.stdout.write(f"Replayed 0 deliveries: {nothing}")
        elif queued:
            runs = ", ".join(f"#{pk}" for pk in queued)
            self.stdout.write(f"Replayed {count} delivery(ies); queued run(s) {runs}.")
        else:
            self.stdout.write(
                f"Replayed {count} delivery(ies); no run queued: their run is still working and sends them."
            )
