"""A source from a job's (or run's) settings."""

from __future__ import annotations

import os

from django.conf import settings

from feeds.sources import Source, SourceError

INCREMENTAL_KINDS = ("sql", "http", "inbox")


def build_source(kind: str, config: dict, *, secret: str = "", job_id: int | None = None) -> Source:
    if not isinstance(config, dict):
        raise SourceError("the source settings must be a JSON object")
    if kind == "file":
        from feeds.sources.files import FileSource

        _check_source_root(config.get("path"))
        return FileSource.from_config(config)
    if kind == "sql":
        from feeds.sources.sql import SQLSource

        return SQLSource.from_config(config)
    if kind == "http":
        from feeds.sources.http import HTTPSource

        return HTTPSource.from_config(config, secret or None)
    if kind == "inbox":
        from feeds.sources.inbox import InboxSource

        return InboxSource.from_config(config, job_id=job_id)
    raise SourceError(f"unknown source kind {kind!r}")


def is_incremental(kind: str, config: dict) -> bool:
    """Whether a run starts where the job's last run stopped. Files only when asked ("incremental": true):
    by default each run of a file job reads its files whole."""
    return kind in INCREMENTAL_KINDS or bool(config.get("incremental"))


def _check_source_root(path) -> None:
    """With MPFEED_SOURCE_ROOT set, file sources may only read below it (staff cannot point a job at any
    file the server can read)."""
    root = settings.MPFEED_SOURCE_ROOT
    if not root or not isinstance(path, str):
        return
    real_root = os.path.realpath(root)
    # A glob's folder part decides where it can read; resolve what is there now, links included.
    fixed = path.split("*", 1)[0].split("?", 1)[0].split("[", 1)[0]
    real = os.path.realpath(fixed or ".")
    if os.path.commonpath([real_root, real]) != real_root:
        raise SourceError(f"files may only be read below {root} (MPFEED_SOURCE_ROOT)")
