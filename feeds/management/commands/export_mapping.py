from __future__ import annotations

import json

from django.core.management.base import BaseCommand

from feeds.management.commands._common import mapping_named, workspace_named


class Command(BaseCommand):
    help = (
        "Print a workspace's mapping as JSON, as stored (with the golden samples' expected outputs as last "
        "accepted): what load_mapping takes back."
    )

    def add_arguments(self, parser):
        parser.add_argument("--workspace", required=True, help="Workspace name.")
        parser.add_argument("--name", default="default", help="Mapping name (default: default).")

    def handle(self, *args, **options):
        mapping = mapping_named(workspace_named(options["workspace"]), options["name"])
        self.stdout.write(json.dumps(mapping.rules, indent=2, ensure_ascii=False))
