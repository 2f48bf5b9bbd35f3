"""What the management commands share: finding a workspace and its mapping by name, and the options of the
commands that read a data file given on the command line (run_sync, preview) — how to read it, as a file job's
source settings (feeds/sources/files.py)."""

from __future__ import annotations

import os

from django.core.management.base import CommandError

from feeds.models import Mapping, Workspace


def workspace_named(name: str) -> Workspace:
    workspace = Workspace.objects.filter(name=name).first()
    if workspace is None:
        raise CommandError(f"No workspace named {name!r}.")
    return workspace


def mapping_named(workspace: Workspace, name: str, hint: str = "") -> Mapping:
    """The workspace's mapping `name`; `hint` is added to the error when there is none."""
    mapping = Mapping.objects.filter(workspace=workspace, name=name).first()
    if mapping is None:
        raise CommandError(f"{workspace} has no mapping named {name!r}{hint}.")
    return mapping


def add_file_options(parser) -> None:
    parser.add_argument(
        "--format",
        choices=["csv", "ndjson", "json", "xlsx"],
        help="Default: from the file name (.csv, .tsv, .txt, .ndjson, .jsonl, .json, .xlsx, also .gz).",
    )
    parser.add_argument(
        "--delimiter",
        help='CSV only: one character or "tab"; default: sniffed from the header line among , ; TAB | ("," when none).',
    )
    parser.add_argument(
        "--encoding",
        help="The file's text encoding, e.g. latin-1 or utf-16-le (default: auto, from its byte-order mark or its "
        "first 64 KB).",
    )
    parser.add_argument("--sheet", help="xlsx only: the sheet to read (default: the first).")


def file_config(path: str, options: dict) -> dict:
    """A file source's settings for `path` and the options given."""
    config = {"path": os.path.abspath(path)}
    for name in ("format", "delimiter", "encoding", "sheet"):
        if options.get(name):
            config[name] = options[name]
    return config
