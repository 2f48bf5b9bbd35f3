from __future__ import annotations

from pathlib import Path

import orjson
from django.core.management.base import BaseCommand, CommandError

from feeds.management.commands._common import add_file_options, file_config, mapping_named, workspace_named
from feeds.models import SyncJob
from feeds.preview import DEFAULT_LIMIT, preview_job


class Command(BaseCommand):
    help = (
        "Show what a mapping makes of the first records of a file or of a job's source — the batches and every "
        "refused record with its reason — without sending anything. Prints JSON."
    )

    def add_arguments(self, parser):
        parser.add_argument("--workspace", required=True)
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument("--file", help="A data file (.csv, .ndjson, also .gz).")
        source.add_argument("--job", help="A job's name: preview its source.")
        parser.add_argument("--mapping", default="default", help="The workspace's mapping to use.")
        parser.add_argument("--rules", help="A mapping document (.json) to try instead of a stored mapping.")
        parser.add_argument("--limit", type=int, default=DEFAULT_LIMIT)
        add_file_options(parser)

    def handle(self, *args, **options):
        workspace = workspace_named(options["workspace"])
        if options["rules"]:
            try:
                rules = orjson.loads(Path(options["rules"]).read_bytes())
            except (OSError, orjson.JSONDecodeError) as e:
                raise CommandError(f"{options['rules']}: {e}") from None
        else:
            rules = mapping_named(workspace, options["mapping"]).rules
        if options["job"]:
            job = SyncJob.objects.filter(workspace=workspace, name=options["job"]).first()
            if job is None:
                raise CommandError(f"{workspace} has no job named {options['job']!r}.")
        else:
            job = SyncJob(
                workspace=workspace,
                source_kind=SyncJob.SourceKind.FILE,
                source_config=file_config(options["file"], options),
            )
        result = preview_job(job, rules, limit=options["limit"])
        self.stdout.write(orjson.dumps(result.as_dict(), option=orjson.OPT_INDENT_2).decode())
        if result.errors:
            raise SystemExit(1)
