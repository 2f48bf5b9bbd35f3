from __future__ import annotations

import os
import time

import orjson
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from feeds import sync
from feeds.management.commands._common import add_file_options, file_config, mapping_named, workspace_named
from feeds.models import SyncJob, SyncRun


class Command(BaseCommand):
    help = (
        "Sync a CSV or NDJSON file into a workspace. Prints one JSON line with the run's id, status and "
        "counters; exits 1 when the run failed or is blocked (or, with --fail-on-rejects, rejected records)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--workspace", required=True, help="Workspace name.")
        parser.add_argument("--file", required=True, help="The data file (.csv or .ndjson, also .gz).")
        add_file_options(parser)
        parser.add_argument("--mapping", default="default", help="Mapping name (default: default).")
        parser.add_argument("--mode", choices=SyncJob.EndpointMode.values, help="Endpoint mode for this file's job.")
        parser.add_argument("--wait", action="store_true", help="Block until the run ends (needs a qcluster).")
        parser.add_argument("--inline", action="store_true", help="Run the task in this process (no cluster needed).")
        parser.add_argument(
            "--fail-on-rejects",
            action="store_true",
            help="Exit 1 also when records were rejected (list them with `manage.py rejects --run ID`).",
        )

    def handle(self, *args, **options):
        workspace = workspace_named(options["workspace"])
        mapping = mapping_named(workspace, options["mapping"], "; load one with load_mapping")
        path = os.path.abspath(options["file"])
        if not os.path.isfile(path):
            raise CommandError(f"{options['file']} is not a file.")
        config = file_config(path, options)
        # The job's name shows in pages, e-mails and logs: one line, whatever the file is called.
        name = "file:" + "".join(c if c.isprintable() else "\N{REPLACEMENT CHARACTER}" for c in path)
        try:
            # Bad settings are said here, not by a failed run, as the job page and the admin say them.
            SyncJob(workspace=workspace).check_source(SyncJob.SourceKind.FILE, config)
        except ValidationError as e:
            raise CommandError(" ".join(e.messages)) from None
        job, _ = SyncJob.objects.get_or_create(
            workspace=workspace,
            name=name[:200],
            defaults={"mapping": mapping, "source_kind": SyncJob.SourceKind.FILE, "source_config": config},
        )
        job.mapping = mapping
        job.set_source(SyncJob.SourceKind.FILE, config)
        if options["mode"]:
            job.endpoint_mode = options["mode"]
        job.save()
        try:
            run = sync.start_run(job, trigger=SyncRun.Trigger.CLI)
        except sync.SyncError as e:
            raise CommandError(str(e)) from None

        if options["inline"]:
            sync.run_inline(run.pk)
        else:
            sync.enqueue_run(run)
            if options["wait"]:
                while True:
                    run.refresh_from_db()
                    if run.status not in SyncRun.WORKING_STATUSES:
                        break
                    time.sleep(0.5)
        run.refresh_from_db()
        self.stdout.write(orjson.dumps(run.summary()).decode())
        if run.status in (*SyncRun.STOPPED_STATUSES, SyncRun.Status.CANCELLED):  # cancelled by staff meanwhile
            raise SystemExit(1)
        if options["fail_on_rejects"] and run.records_rejected:
            raise SystemExit(1)
