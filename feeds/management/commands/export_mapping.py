from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from feeds.models import Mapping, Workspace


class Command(BaseCommand):
    help = (
        "Print a workspace's mapping as JSON, as stored (with the golden samples' expected outputs as last "
        "accepted): what load_mapping takes back."
    )

    def add_arguments(self, parser):
        parser.add_argument("--workspace", required=True, help="Workspace name.")
        parser.add_argument("--name", default="default", help="Mapping name (default: default).")

    def handle(self, *args, **options):
        workspace = Workspace.objects.filter(name=options["workspace"]).first()
        if workspace is None:
            raise CommandError(f"No workspace named {options['workspace']!r}.")
        mapping = Mapping.objects.filter(workspace=workspace, name=options["name"]).first()
        if mapping is None:
            raise CommandError(f"{workspace} has no mapping named {options['name']!r}.")
        self.stdout.write(json.dumps(mapping.rules, indent=2, ensure_ascii=False))
