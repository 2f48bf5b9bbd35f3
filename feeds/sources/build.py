"""A source from a job's (or run's) settings."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings

from feeds.sources import Source, SourceError

INCREMENTAL_KINDS = ("sql", "http", "inbox")


def build_source(kind: str, config: dict, *, secret: str = "", job_id: int | None = None) -> Source:
    if not isinstance(config, dict):
        raise SourceError("the source settings must be a JSON object")
    if kind == "file":
        from feeds.sources.files import FileSource

        return FileSource.from_config(config, root=source_root())
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


def source_root() -> Path:
    """The folder file sources read from (MPFEED_SOURCE_ROOT), created when missing: nothing outside it is read,
    whatever form, command or admin page made the job."""
    root = Path(settings.MPFEED_SOURCE_ROOT)
    root.mkdir(mode=0o750, parents=True, exist_ok=True)
    return root
