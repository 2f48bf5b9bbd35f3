"""Every source kind in one place: what it is called, how it is built from a job's settings, an example and help
for the people writing those settings, whether runs go on from the last one, what is checked while the
settings are edited, a default schedule, and what the engine deletes of a source whose records it forwarded. The model's choices, the job page, the admin, the commands and the engine all read them here,
so a new kind of source is one entry in `KINDS` (and its reader module).

Readers are imported when a source is built, not here: this module is imported by the models.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from feeds.sources import Source, SourceError


@dataclass(frozen=True)
class SourceKind:
    """One kind of source. `build(config, secret, job_id)` raises SourceError (for people) for settings that
    cannot work; `check(config)` says, while the settings are edited, what a run would only find out when it
    starts (an unknown database, say)."""

    value: str
    label: str
    build: Callable[[dict, str, int | None], Source]
    example: dict
    help: str
    # Runs start where the job's last run stopped: always, or only when `incremental_setting` is true.
    incremental: bool = False
    incremental_setting: str | None = None
    takes_secret: bool = False  # an Authorization header, write-only, kept on the job
    remote: bool = False  # reading it asks a partner's system (a query, an API call): previews say so first
    check: Callable[[dict], None] | None = None
    # A job of this kind given no schedule runs every this many minutes (None: on demand only).
    default_schedule_minutes: int | None = None
    # Kinds that hold records for the job (the inbox): `has_new(job_id, cursor)` says whether any came after the
    # job's position (None: a scheduled run always looks), `drop_forwarded(job_id, cursor)` deletes those a run
    # forwarded, up to its position (None: nothing of the source is deleted).
    has_new: Callable[[int, dict | None], bool] | None = None
    drop_forwarded: Callable[[int, dict], None] | None = None

    @property
    def name(self) -> str:
        """The member's name in the model's choices (SyncJob.SourceKind.FILE)."""
        return self.value.upper()

    def is_incremental(self, config: dict) -> bool:
        return self.incremental or bool(self.incremental_setting and config.get(self.incremental_setting))

    def example_text(self) -> str:
        return json.dumps(self.example, indent=2)


def source_root() -> Path:
    """The folder file sources read from (MPFEED_SOURCE_ROOT), created when missing: nothing outside it is read,
    whatever form, command or admin page made the job."""
    root = Path(settings.MPFEED_SOURCE_ROOT)
    root.mkdir(mode=0o750, parents=True, exist_ok=True)
    return root


def _file(config: dict, secret: str, job_id: int | None) -> Source:
    from feeds.sources.files import FileSource

    return FileSource.from_config(config, root=source_root())


def _check_file(config: dict) -> None:
    """A path that matches no file is refused when the job is saved, not found out by its first run: a plain
    path must be an existing file, and a glob's folder must exist. A glob that matches nothing in an existing
    folder is refused too, except for an incremental job, whose files may arrive later (each run reads the
    ones added since the last)."""
    from feeds.sources.files import FileSource

    source = FileSource.from_config(config, root=source_root())
    found = source.files()  # SourceError: no such file, a folder, no glob folder, outside the root
    if not found and not source.incremental:
        raise SourceError(
            f"{config['path']} matches no file in the source folder {source.root or source_root()} (MPFEED_SOURCE_ROOT); "
            'for a job whose files arrive later, set "incremental": true'
        )


def _sql(config: dict, secret: str, job_id: int | None) -> Source:
    from feeds.sources.sql import SQLSource

    return SQLSource.from_config(config)


def _check_sql(config: dict) -> None:
    from feeds.sources.sql import source_databases

    databases = source_databases()
    if config.get("database") not in databases:
        known = ", ".join(sorted(databases)) or "none are configured"
        raise SourceError(f"unknown source database {config.get('database')!r} (MPFEED_SOURCE_DATABASES: {known})")


def _http(config: dict, secret: str, job_id: int | None) -> Source:
    from feeds.sources.http import HTTPSource

    return HTTPSource.from_config(config, secret or None)


def _inbox(config: dict, secret: str, job_id: int | None) -> Source:
    from feeds.sources.inbox import InboxSource

    return InboxSource.from_config(config, job_id=job_id)


def _inbox_has_new(job_id: int, cursor: dict | None) -> bool:
    from feeds.sources.inbox import has_new

    return has_new(job_id, cursor)


def _inbox_drop_forwarded(job_id: int, cursor: dict) -> None:
    from feeds.sources.inbox import drop_forwarded

    drop_forwarded(job_id, cursor)


# In the order the job page offers them (README, "Sources").
KINDS = (
    SourceKind(
        "file",
        "Files (CSV, JSON, Excel, gzip)",
        _file,
        example={"path": "exports/orders-*.csv.gz", "format": "csv", "delimiter": "auto", "encoding": "auto"},
        help=(
            "path: one file or a glob (** for subfolders) in the source folder (MPFEED_SOURCE_ROOT), relative to "
            "it or absolute; nothing outside it is read, links included. Files are read in name order. format: csv "
            "(also .tsv and .txt, e.g. Excel's Unicode text), ndjson, json (an array of objects, or objects one "
            "after the other) or xlsx; by default from the extension. delimiter: one character, tab or auto. "
            "encoding: auto (a byte-order mark, else UTF-8, else the legacy encoding detected, e.g. cp1252) or a "
            "Python codec such as latin-1 or utf-16-le; the run page shows what was chosen. Lines may end in CRLF, "
            "LF or CR, mixed. sheet: for xlsx, the sheet's name (the first by default). compression: auto, gzip or "
            "none. incremental: true to read only lines and files added since the last run. A path that matches no "
            "file is refused (a glob matching nothing yet only for an incremental job)."
        ),
        # By default each run of a file job reads its files whole.
        incremental_setting="incremental",
        check=_check_file,
    ),
    SourceKind(
        "sql",
        "SQL query",
        _sql,
        example={
            "database": "crm",
            "query": "SELECT id, email, plan, updated_at FROM customers",
            "cursor_column": "updated_at",
            "key_column": "id",
            "batch_size": 1000,
        },
        help=(
            "database: a name from MPFEED_SOURCE_DATABASES. query: a single SELECT (or WITH … SELECT), run "
            "read-only. cursor_column (with key_column when it is not unique): read only rows after the last one "
            "sent. batch_size: rows per page."
        ),
        incremental=True,
        remote=True,
        check=_check_sql,
    ),
    SourceKind(
        "http",
        "Partner HTTP JSON API",
        _http,
        example={
            "url": "https://api.partner.example/v1/events?since={cursor}",
            "records_path": "data",
            "next": {"type": "link", "path": "links.next"},
            "cursor_field": "updated_at",
            "key_field": "id",
        },
        help=(
            "url: on a host listed in MPFEED_HTTP_SOURCE_HOSTS; {cursor} takes the last cursor_field value. "
            "records_path: where the records are in each page. next: {type: link, path}, {type: cursor, path, "
            "param} or {type: link_header}; without it, one page. key_field names a record. The Authorization "
            "header is set below, never here."
        ),
        incremental=True,
        takes_secret=True,
        remote=True,
    ),
    SourceKind(
        "inbox",
        "Push inbox",
        _inbox,
        example={},
        help=(
            "No settings: the partner POSTs NDJSON or a JSON array to the job's push URL with its token. Pushed "
            "records are forwarded every minute by default."
        ),
        incremental=True,
        default_schedule_minutes=1,  # pushed records are forwarded every minute by default
        has_new=_inbox_has_new,
        drop_forwarded=_inbox_drop_forwarded,  # forwarded records are in the run's outbox: the inbox lets them go
    ),
)
_BY_VALUE = {kind.value: kind for kind in KINDS}


def choices() -> list[tuple[str, tuple[str, str]]]:
    """The model's choices, as the members of a TextChoices made from them: (NAME, (value, label))."""
    return [(kind.name, (kind.value, kind.label)) for kind in KINDS]


def source_kind(value: str) -> SourceKind:
    try:
        return _BY_VALUE[value]
    except KeyError:
        raise SourceError(f"unknown source kind {value!r}") from None


def takes_secret(value: str) -> bool:
    return value in _BY_VALUE and _BY_VALUE[value].takes_secret


def build_source(kind: str, config: dict, *, secret: str = "", job_id: int | None = None) -> Source:
    if not isinstance(config, dict):
        raise SourceError("the source settings must be a JSON object")
    return source_kind(kind).build(config, secret, job_id)


def is_incremental(kind: str, config: dict) -> bool:
    """Whether a run starts where the job's last run stopped (files only when asked: "incremental": true)."""
    return source_kind(kind).is_incremental(config)


def default_schedule_minutes(kind: str) -> int | None:
    """How often a job of this kind runs when it is given no schedule (None: on demand only)."""
    spec = _BY_VALUE.get(kind)
    return spec.default_schedule_minutes if spec else None


def has_new(kind: str, job_id: int, cursor: dict | None) -> bool:
    """Whether a scheduled run would find anything after the job's position: only kinds that hold records for the
    job (the inbox) can tell; the others always look."""
    spec = _BY_VALUE.get(kind)
    return spec is None or spec.has_new is None or spec.has_new(job_id, cursor)


def drop_forwarded(kind: str, job_id: int, cursor: dict) -> None:
    """Delete what the source holds for the job up to `cursor`, once a run has forwarded it (the inbox's records;
    nothing for the other kinds). Called where the job's position moves on, in its transaction."""
    spec = _BY_VALUE.get(kind)
    if spec is not None and spec.drop_forwarded is not None:
        spec.drop_forwarded(job_id, cursor)


def check_settings(kind: str, config: dict, *, job_id: int | None = None) -> None:
    """The one check of a job's source settings, wherever they are edited (job page, admin, commands): the source
    must build (file paths inside MPFEED_SOURCE_ROOT, SQL read-only, HTTP hosts allowed …) and pass its kind's
    edit-time check. SourceError for people otherwise. The stored secret is never used: only the settings are
    checked."""
    spec = source_kind(kind)
    # A placeholder header: only the settings are checked here, never the stored secret.
    build_source(kind, config, secret="x" if spec.takes_secret else "", job_id=job_id)
    if spec.check is not None:
        spec.check(config)
