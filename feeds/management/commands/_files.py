"""The options of the commands that read a data file given on the command line (run_sync, preview): how to
read it, as a file job's source settings (feeds/sources/files.py)."""

from __future__ import annotations

import os


def add_file_options(parser) -> None:
    parser.add_argument(
        "--format",
        choices=["csv", "ndjson"],
        help="Default: from the file name (.csv, .tsv, .ndjson, .jsonl, also .gz).",
    )
    parser.add_argument(
        "--delimiter",
        help='CSV only: one character or "tab"; default: sniffed from the header line among , ; TAB | ("," when none).',
    )
    parser.add_argument("--encoding", help="The file's text encoding, e.g. latin-1 or cp1252 (default: utf-8).")


def file_config(path: str, options: dict) -> dict:
    """A file source's settings for `path` and the options given."""
    config = {"path": os.path.abspath(path)}
    for name in ("format", "delimiter", "encoding"):
        if options.get(name):
            config[name] = options[name]
    return config
