from __future__ import annotations

from pathlib import Path

import orjson
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from feeds.management.commands._common import workspace_named
from feeds.mapping import MappingError
from feeds.mapping import warnings as mapping_warnings
from feeds.models import Mapping, MappingConflict, OutputChanged, validate_one_line


class Command(BaseCommand):
    help = "Load a mapping (JSON, see the README) for a workspace; the mapping's version goes up when it changes."

    def add_arguments(self, parser):
        parser.add_argument("file", help="The mapping document, a .json file.")
        parser.add_argument("--workspace", required=True, help="Workspace name.")
        parser.add_argument("--name", default="default", help="Mapping name (default: default).")
        parser.add_argument(
            "--accept-changes",
            action="store_true",
            help="Load even when golden samples come out differently, recording the new outputs as expected.",
        )

    def handle(self, *args, **options):
        workspace = workspace_named(options["workspace"])
        try:
            doc = orjson.loads(Path(options["file"]).read_bytes())
        except FileNotFoundError:
            raise CommandError(f"{options['file']} does not exist.") from None
        except orjson.JSONDecodeError as e:
            raise CommandError(f"{options['file']} is not valid JSON: {e}") from None
        try:
            validate_one_line(options["name"])
        except ValidationError as e:
            raise CommandError(f"--name: {' '.join(e.messages)}") from None
        mapping = Mapping.objects.filter(workspace=workspace, name=options["name"]).first() or Mapping(
            workspace=workspace, name=options["name"]
        )
        try:
            changed = mapping.update_rules(doc, accept_changes=options["accept_changes"])
        except MappingError as e:
            raise CommandError("The mapping is not valid:\n  " + "\n  ".join(e.errors)) from None
        except MappingConflict as e:
            raise CommandError(str(e)) from None
        except OutputChanged as e:
            raise CommandError(
                "The golden samples come out differently; nothing was loaded:\n  "
                + "\n  ".join(e.changes)
                + "\nCheck the changes, then run again with --accept-changes to load and record them."
            ) from None
        for warning in mapping_warnings(mapping.rules):
            self.stdout.write(f"Warning: {warning}")
        state = "loaded" if changed else "unchanged"
        self.stdout.write(f"Mapping {mapping.name!r} for {workspace.name!r} {state} (version {mapping.version}).")
