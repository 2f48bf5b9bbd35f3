"""Write transactions of the engine's many threads and processes, made to take turns when the database is SQLite.

SQLite has one writer at a time, and a connection that finds the database locked sleeps — 1, 2, 5, 10 … up to
100 ms at a time — before it tries again, however soon the lock is free. A sender writes once per request
(feeds.sending) from a dozen threads, in every worker process; contending through those sleeps, they would
spend most of their time asleep while the lock sits free. So on SQLite the engine's write transactions take
turns on locks that wake the next writer at once: a lock among the threads of a process, and an advisory lock
(flock) on a file beside the database among the processes of the machine (a SQLite file has to be local anyway).
Other writers (the site, django-q2's own tables) still meet SQLite's lock, rarely. On other databases, which lock
rows and wake waiters at once, this is just `transaction.atomic()`.

`insert_rows` is the engine's bulk insert for the tables it writes a row per record or event into.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

from django.db import connection, models, transaction

_turns = threading.RLock()  # re-entrant: a transaction may open a nested one (a savepoint) in the same thread
_held = threading.local()
_file: tuple[int, int] | None = None  # (pid, descriptor): a forked child opens its own (flock follows the file)


def _lock_file() -> int:
    global _file
    if _file is None or _file[0] != os.getpid():
        path = f"{connection.settings_dict['NAME']}.writes.lock"
        _file = (os.getpid(), os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    return _file[1]


@contextmanager
def atomic() -> Iterator[None]:
    name = str(connection.settings_dict.get("NAME", ""))
    if connection.vendor != "sqlite" or name.startswith("file:") or name == ":memory:":
        with transaction.atomic():
            yield
        return
    with _turns:
        depth = getattr(_held, "depth", 0)
        if depth == 0:
            fcntl.flock(_lock_file(), fcntl.LOCK_EX)
        _held.depth = depth + 1
        try:
            with transaction.atomic():
                yield
        finally:
            _held.depth = depth
            if depth == 0:
                fcntl.flock(_lock_file(), fcntl.LOCK_UN)


def insert_rows(model: type[models.Model], fields: Sequence[str], rows: Iterable[Sequence]) -> int:
    """Insert rows of `model` (values in the order of `fields`, ready for the database driver: numbers, text,
    bytes, datetimes through `db_datetime`) with one prepared INSERT run over them all; returns how many.
    bulk_create builds a model object and prepares each value through its field, which for the engine's
    one-row-per-record tables (set-aside records, sent-data keys) cost about as much as the rest of the run."""
    values = list(rows)
    if not values:
        return 0
    meta, quote = model._meta, connection.ops.quote_name
    columns = ", ".join(quote(_column(meta.get_field(name))) for name in fields)
    marks = ", ".join(["%s"] * len(fields))
    # Only the model's own table and column names are written into the statement (quoted); values are parameters.
    sql = f"INSERT INTO {quote(meta.db_table)} ({columns}) VALUES ({marks})"  # noqa: S608
    with connection.cursor() as cursor:
        cursor.executemany(sql, values)
    return len(values)


def _column(field) -> str:
    if not isinstance(field, models.Field) or not field.column:
        raise TypeError(f"{field} is not a concrete column")
    return field.column


def db_datetime(value):
    """A datetime as the database driver takes it in `insert_rows`."""
    return connection.ops.adapt_datetimefield_value(value)
