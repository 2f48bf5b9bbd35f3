"""Rows of a SELECT on a partner's database, read page by page over a read-only session.

Config (a job's source settings)::

    {"database": "crm",                      # a name in settings.MPFEED_SOURCE_DATABASES (name -> URL)
     "query": "SELECT id, email, updated_at FROM customers",
     "cursor_column": "updated_at",          # optional: read incrementally, oldest first
     "key_column": "id",                     # optional: a unique column (the primary key)
     "batch_size": 1000}                     # optional: rows per page

The query is wrapped as a subquery and paged with keyset pagination on (cursor_column, key_column), parameters
bound, never interpolated. Modes and positions (`Item.position`, JSON):

- cursor + key: `{"cursor": c, "key": k}`; reading from it yields the rows after (c, k) in (cursor, key) order,
  so the next run sees only rows inserted or updated with a larger cursor. The last item's position is the next
  run's cursor. The cursor must grow on every write (an updated_at the application sets); a row committed late
  with a cursor below the position is not seen: keep a margin for long transactions in the query
  (e.g. WHERE updated_at < now() - interval '1 minute').
- cursor only: the cursor must be unique; `{"cursor": c}`. Two rows sharing a cursor value stop the read with a
  SourceError ("set key_column") instead of skipping one of them silently.
- key only: every run reads all rows, in key order; `{"key": k}` resumes a run. The last item of a complete read
  carries `None`, so that the next run starts again from the beginning.
- neither: every run reads all rows in the query's order; `{"offset": n}` (rows consumed in this run) resumes it
  by skipping n rows, which is exact only when the query has an ORDER BY on unique columns. The last item of a
  complete read carries `None`.

Rows whose cursor or key is NULL cannot be placed in the order: they are not read, and the first read (from
`None`) reports how many there are as one item error. Values become JSON-friendly: datetimes, dates and times
as ISO 8601 strings, Decimal as a string (exact; mappings convert it), UUID and network addresses as strings,
intervals as seconds, arrays and JSON as lists and dicts. Binary values (BLOB, bytea) and NaN/infinite floats
make that row an item error: leave such columns out of the query, or encode them there (hex(), encode()).

Read-only is enforced by the database: PostgreSQL sessions are READ ONLY (every transaction starts with
BEGIN READ ONLY) with a statement timeout; SQLite files are opened with mode=ro and query_only. The check of the
statement (a single SELECT or WITH, no writing keyword) is there to give clear messages; for defence in depth
give mpfeed a database role that can only SELECT.
"""

from __future__ import annotations

import abc
import contextlib
import datetime as dt
import decimal
import ipaddress
import math
import re
import sqlite3
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Self
from urllib.parse import quote, unquote, urlsplit

from django.conf import settings

from feeds.sources import Item, SourceError, with_last_position

DEFAULT_BATCH_SIZE = 1000
MAX_BATCH_SIZE = 50_000
DEFAULT_STATEMENT_TIMEOUT = 300.0
DEFAULT_CONNECT_TIMEOUT = 10.0
EXCERPT = 300

NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}\Z")
DATABASE_NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")
DOLLAR_QUOTE = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")  # PostgreSQL's $$...$$ and $tag$...$tag$
# Words that only appear in statements that write or change the schema. Quote a column so named ("update").
WRITING_WORDS = {
    "INSERT", "UPDATE", "DELETE", "MERGE", "UPSERT", "DROP", "CREATE", "ALTER", "TRUNCATE", "GRANT", "REVOKE",
    "ATTACH", "DETACH", "PRAGMA", "VACUUM", "REINDEX",
}  # fmt: skip


def source_databases() -> dict[str, str]:
    """The partner databases a query may read: settings.MPFEED_SOURCE_DATABASES, name -> URL."""
    databases = getattr(settings, "MPFEED_SOURCE_DATABASES", {}) or {}
    if not isinstance(databases, dict):
        raise SourceError("MPFEED_SOURCE_DATABASES must map database names to URLs")
    return dict(databases)


def check_query(query: str) -> str:
    """The query without trailing semicolons and comments, if it is a single SELECT or WITH statement."""
    if not isinstance(query, str) or not query.strip():
        raise SourceError("the query is empty")
    words, semicolons, end = _scan(query)
    if not words:
        raise SourceError("the query is empty")
    if any(position < end for position in semicolons):
        raise SourceError("the query must be a single statement (it contains ';')")
    if words[0] not in ("SELECT", "WITH"):
        raise SourceError(f"the query must be a SELECT (or WITH ... SELECT), not {words[0]}")
    writing = [word for word in words if word in WRITING_WORDS]
    if writing:
        raise SourceError(f"the query must only read data; it contains {writing[0]}")
    return query[:end]


def _scan(query: str) -> tuple[list[str], list[int], int]:
    """Words (upper case) outside strings, quoted names and comments; positions of ';'; end of the last token."""
    words: list[str] = []
    semicolons: list[int] = []
    end = 0
    i, n = 0, len(query)
    while i < n:
        char = query[i]
        if char.isspace():
            i += 1
        elif query.startswith("--", i):
            newline = query.find("\n", i)
            i = n if newline < 0 else newline + 1
        elif query.startswith("/*", i):
            depth, i = 1, i + 2
            while depth:
                if i >= n:
                    raise SourceError("the query has an unterminated /* comment")
                if query.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif query.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif char in "'\"`":
            backslashes = char == "'" and i > 0 and query[i - 1] in "eE"
            i = end = _skip_quoted(query, i, char, backslashes)
        elif char == "$" and (match := DOLLAR_QUOTE.match(query, i)):
            closing = query.find(match.group(0), match.end())
            if closing < 0:
                raise SourceError("the query has an unterminated $$ string")
            i = end = closing + len(match.group(0))
        elif char.isalpha() or char == "_":
            start = i
            while i < n and (query[i].isalnum() or query[i] in "_$"):
                i += 1
            words.append(query[start:i].upper())
            end = i
        elif char == ";":
            semicolons.append(i)
            i += 1
        else:
            i += 1
            end = i
    return words, semicolons, end


def _skip_quoted(query: str, i: int, quote_char: str, backslashes: bool) -> int:
    i += 1
    while i < len(query):
        char = query[i]
        if backslashes and char == "\\":
            i += 2
            continue
        if char == quote_char:
            if query.startswith(quote_char * 2, i):
                i += 2
                continue
            return i + 1
        i += 1
    raise SourceError("the query has an unterminated quoted string or name")


class _Unconvertible(Exception):
    pass


def jsonable(value: Any) -> Any:
    """A database value as a JSON-friendly value (see the module docstring); _Unconvertible if it cannot be."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        raise _Unconvertible(f"{value} is not a finite number")
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, uuid.UUID | ipaddress.IPv4Address | ipaddress.IPv6Address | ipaddress.IPv4Network):
        return str(value)  # PostgreSQL's uuid, inet and cidr (interfaces are subclasses of addresses)
    if isinstance(value, ipaddress.IPv6Network):
        return str(value)
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, bytes | bytearray | memoryview):
        raise _Unconvertible("binary data is not sent: leave the column out or encode it in the query")
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    raise _Unconvertible(f"a {type(value).__name__} value cannot be sent")


def _quote_name(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass
class SQLSource:
    database: str
    query: str
    cursor_column: str | None = None
    key_column: str | None = None
    batch_size: int = DEFAULT_BATCH_SIZE

    @classmethod
    def from_config(cls, config: dict) -> SQLSource:
        """A source from a job's config; SourceError (for people) when the config cannot work."""
        if not isinstance(config, dict):
            raise SourceError("the SQL source settings must be an object")
        unknown = set(config) - {"database", "query", "cursor_column", "key_column", "batch_size"}
        if unknown:
            raise SourceError(f"unknown SQL source setting {sorted(unknown)[0]!r}")
        database = config.get("database")
        if not isinstance(database, str) or not DATABASE_NAME_RE.match(database):
            raise SourceError("the SQL source needs a database name (letters, digits, - and _)")
        query = check_query(config.get("query", ""))
        columns = {}
        for setting in ("cursor_column", "key_column"):
            name = config.get(setting) or None
            if name is not None and (not isinstance(name, str) or not NAME_RE.match(name)):
                raise SourceError(f"{setting} must be a column name (letters, digits and _), not {name!r}")
            columns[setting] = name
        if columns["key_column"] == columns["cursor_column"]:
            columns["key_column"] = None  # a unique cursor: the same as cursor_column alone
        batch_size = config.get("batch_size", DEFAULT_BATCH_SIZE)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= MAX_BATCH_SIZE:
            raise SourceError(f"batch_size must be a whole number from 1 to {MAX_BATCH_SIZE}")
        return cls(database=database, query=query, batch_size=batch_size, **columns)

    @property
    def incremental(self) -> bool:
        """True when a finished run's last position makes the next run read only new and updated rows."""
        return self.cursor_column is not None

    @property
    def order_columns(self) -> list[str]:
        return [c for c in (self.cursor_column, self.key_column) if c]

    def check(self) -> list[str]:
        """The query's column names, after checking that it runs and has the cursor and key columns."""
        with connect(self.database) as conn:
            return self._columns(conn)

    def read(self, cursor: Any = None) -> Iterator[Item]:
        if self.order_columns:
            start, strict = self._keyset_start(cursor)
            items = self._read_keyset(start, strict)
        else:
            items = self._read_offset(self._offset_start(cursor))
        return items if self.incremental else with_last_position(items, lambda item: None)

    def _columns(self, conn: _Connection) -> list[str]:
        columns, _ = conn.fetch(conn.wrap(self.query) + " LIMIT 0", [])
        seen = set()
        for column in columns:
            # SQLite renames the second "id" of a subquery to "id:1"; PostgreSQL keeps both.
            renamed = re.match(r"(.+):\d+\Z", column)
            twin = renamed.group(1) if renamed and renamed.group(1) in seen else column
            if twin in seen:
                raise SourceError(f"the query returns two columns named {twin!r}: name them apart with AS")
            seen.add(column)
        for setting, name in (("cursor_column", self.cursor_column), ("key_column", self.key_column)):
            if name and name not in seen:
                raise SourceError(f"the query has no column {name!r} ({setting}); its columns: {', '.join(columns)}")
        return columns

    def _position_names(self) -> list[str]:
        return [n for n, c in (("cursor", self.cursor_column), ("key", self.key_column)) if c]

    def _keyset_start(self, cursor: Any) -> tuple[tuple | None, bool]:
        """The (cursor, key) values to read after, and whether rows equal to them are excluded by the query."""
        if cursor is None:
            return None, False
        names = self._position_names()
        if isinstance(cursor, dict) and set(cursor) == set(names):
            return tuple(cursor[n] for n in names), False
        if isinstance(cursor, dict) and set(cursor) == {"cursor"} and names == ["cursor", "key"]:
            # Saved before key_column was set, when the cursor was unique: every row at that value was read.
            return (cursor["cursor"],), True
        raise SourceError(f"the saved position {cursor!r} does not fit this query's {' and '.join(names)} columns")

    def _offset_start(self, cursor: Any) -> int:
        if cursor is None:
            return 0
        offset = cursor.get("offset") if isinstance(cursor, dict) else None
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0 or set(cursor) != {"offset"}:
            raise SourceError(f"the saved position {cursor!r} does not fit a query without cursor or key column")
        return offset

    def _read_keyset(self, start: tuple | None, strict: bool) -> Iterator[Item]:
        with connect(self.database) as conn:
            columns = self._columns(conn)
            if start is None:
                yield from self._unordered_rows(conn)
            indexes = [columns.index(c) for c in self.order_columns]
            names = self._position_names()
            # Pages include their boundary row (>=) and skip it: a second row equal to the boundary means that the
            # order columns are not unique, which would otherwise lose rows at page boundaries without a word.
            boundary, inclusive = start, start is not None and not strict
            while True:
                limit = self.batch_size + (1 if inclusive else 0)
                sql = self._page_sql(conn, boundary, strict=boundary is not None and not inclusive)
                _, rows = conn.fetch(sql, [*(boundary or ()), limit])
                previous, may_skip = boundary, inclusive
                for row in rows:
                    values = tuple(self._order_value(row[i], c) for i, c in zip(indexes, self.order_columns))
                    if values == previous:
                        if may_skip:
                            may_skip = False
                            continue
                        raise SourceError(self._not_unique(values))
                    may_skip = False
                    yield self._item(columns, row, self._ref(values[-1]), dict(zip(names, values)))
                    previous = values
                if len(rows) < limit:
                    return
                boundary, inclusive = previous, True

    def _page_sql(self, conn: _Connection, values: tuple | None, strict: bool) -> str:
        names = [_quote_name(c) for c in self.order_columns]
        where = [f"{name} IS NOT NULL" for name in names]
        if values is not None:
            left, operator, p = names[: len(values)], ">" if strict else ">=", conn.placeholder
            if len(left) == 1:
                where.append(f"{left[0]} {operator} {p}")
            else:
                where.append(f"({', '.join(left)}) {operator} ({', '.join([p] * len(left))})")
        where_sql = " AND ".join(where)
        return f"{conn.wrap(self.query)} WHERE {where_sql} ORDER BY {', '.join(names)} LIMIT {conn.placeholder}"

    def _not_unique(self, values: tuple) -> str:
        columns = ", ".join(self.order_columns)
        if self.key_column:
            return f"several rows have the same {columns} {list(values)!r}: {self.key_column} must be unique"
        return f"several rows have the same {columns} {values[0]!r}: set key_column to a unique column (e.g. id)"

    def _unordered_rows(self, conn: _Connection) -> Iterator[Item]:
        """One item error telling how many rows cannot be read because their cursor or key is NULL."""
        nulls = " OR ".join(f"{_quote_name(c)} IS NULL" for c in self.order_columns)
        sql = f"SELECT COUNT(*) FROM ({conn.wrap(self.query)}) AS counted WHERE {nulls}"  # noqa: S608 - names quoted
        _, rows = conn.fetch(sql, [])
        if rows[0][0]:
            names = " or ".join(self.order_columns)
            yield Item(
                ref=f"{self.database}:{names} is null",
                error=f"{rows[0][0]} rows have no {names} and are not read: give every row a value in the query "
                "(e.g. COALESCE(updated_at, created_at) AS updated_at)",
            )

    def _order_value(self, value: Any, column: str) -> Any:
        try:
            converted = jsonable(value)
        except _Unconvertible as e:
            raise SourceError(f"the column {column} cannot order the rows: {e}") from None
        if isinstance(converted, list | dict):
            raise SourceError(f"the column {column} cannot order the rows: it holds lists or objects")
        return converted

    def _read_offset(self, offset: int) -> Iterator[Item]:
        with connect(self.database) as conn:
            columns = self._columns(conn)
            sql = f"{conn.wrap(self.query)} LIMIT {conn.no_limit} OFFSET {conn.placeholder}"
            for number, row in enumerate(conn.stream(sql, [offset], self.batch_size), start=offset + 1):
                yield self._item(columns, row, f"{self.database}:row {number}", {"offset": number})

    def _ref(self, key: Any) -> str:
        return f"{self.database}:{self.key_column or self.cursor_column}={key}"

    def _item(self, columns: list[str], row, ref: str, position: dict) -> Item:
        record = {}
        for column, value in zip(columns, row):
            try:
                record[column] = jsonable(value)
            except _Unconvertible as e:
                return Item(ref=ref, error=f"column {column}: {e}", excerpt=_excerpt(columns, row), position=position)
        return Item(ref=ref, record=record, position=position)


def _excerpt(columns: list[str], row) -> str:
    text = ", ".join(f"{column}={_short(value)}" for column, value in zip(columns, row))
    return text if len(text) <= EXCERPT else text[:EXCERPT] + "…"


def _short(value: Any) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes>"
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:60] + "…"


# Connections: sqlite3 or psycopg directly, never Django's connections (no migrations, no ORM on a partner's DB).


class _Connection(abc.ABC):
    """A read-only connection to one source database; SourceErrors without the URL's password."""

    placeholder = "%s"
    no_limit = "ALL"

    def __init__(self, name: str, url: str):
        self.name = name
        self.url = url
        self.secret = urlsplit(url).password or ""
        self.timeout = float(getattr(settings, "MPFEED_SQL_STATEMENT_TIMEOUT", DEFAULT_STATEMENT_TIMEOUT))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def scrub(self, text: Any) -> str:
        text = " ".join(str(text).split())
        for secret in {self.secret, unquote(self.secret)} - {""}:
            text = text.replace(secret, "***")
        return text[:500]

    def wrap(self, query: str) -> str:
        """The query as a subquery to page on."""
        # The staff's own SELECT, checked by check_query() and run read-only. The newlines keep a trailing
        # "-- comment" from swallowing the closing parenthesis.
        return f"SELECT * FROM (\n{query}\n) AS q"  # noqa: S608

    @abc.abstractmethod
    def fetch(self, sql: str, params: list) -> tuple[list[str], list]:
        """Run a query: (its column names, all its rows)."""

    @abc.abstractmethod
    def stream(self, sql: str, params: list, size: int) -> Iterator:
        """Run a query and yield its rows, fetched `size` at a time."""

    @abc.abstractmethod
    def close(self) -> None: ...


def connect(name: str) -> _Connection:
    databases = source_databases()
    if name not in databases:
        known = ", ".join(sorted(databases)) or "none are configured"
        raise SourceError(f"unknown source database {name!r} (MPFEED_SOURCE_DATABASES: {known})")
    url = str(databases[name])
    scheme = url.split(":", 1)[0].lower()
    if scheme == "sqlite":
        return _SQLite(name, url)
    if scheme in ("postgres", "postgresql"):
        return _Postgres(name, url)
    raise SourceError(f"the source database {name} must have a sqlite:// or postgres:// URL, not {scheme}://")


class _SQLite(_Connection):
    placeholder = "?"
    no_limit = "-1"

    def __init__(self, name: str, url: str):
        super().__init__(name, url)
        # sqlite:////absolute/path.db or sqlite:///relative/path.db, as dj-database-url reads them.
        path = unquote(url[len("sqlite:///") :].split("?", 1)[0]) if url.startswith("sqlite:///") else ""
        if not path:
            raise SourceError(f"the source database {name} needs a file path: sqlite:////path/to/file.db")
        self.deadline = 0.0
        try:
            self.db = sqlite3.connect(f"file:{quote(path)}?mode=ro", uri=True, timeout=5, check_same_thread=False)
            self.db.execute("PRAGMA query_only = ON")
        except sqlite3.Error as e:
            raise SourceError(f"the source database {name} ({path}) cannot be opened: {e}") from None
        # The statement timeout: SQLite calls this every 10,000 steps and stops the query when it returns 1.
        self.db.set_progress_handler(lambda: int(time.monotonic() > self.deadline), 10_000)

    def _error(self, e: sqlite3.Error) -> SourceError:
        text = self.scrub(e)
        if "interrupted" in text:
            return SourceError(f"the query on {self.name} took longer than {self.timeout:g} s")
        if "readonly" in text or "read-only" in text:
            return SourceError(f"the query tried to write to {self.name}, which is read-only: {text}")
        return SourceError(f"the query failed on {self.name}: {text}")

    def fetch(self, sql: str, params: list) -> tuple[list[str], list]:
        self.deadline = time.monotonic() + self.timeout
        try:
            cursor = self.db.execute(sql, params)
            return [d[0] for d in cursor.description], cursor.fetchall()
        except sqlite3.Error as e:
            raise self._error(e) from None

    def stream(self, sql: str, params: list, size: int) -> Iterator:
        self.deadline = time.monotonic() + self.timeout
        try:
            cursor = self.db.execute(sql, params)
            while rows := cursor.fetchmany(size):
                yield from rows
                self.deadline = time.monotonic() + self.timeout
        except sqlite3.Error as e:
            raise self._error(e) from None

    def close(self) -> None:
        self.db.close()


class _Postgres(_Connection):
    def __init__(self, name: str, url: str):
        super().__init__(name, url)
        import psycopg  # imported where PostgreSQL sources are used

        self.psycopg = psycopg
        connect_timeout = max(2, math.ceil(getattr(settings, "MPFEED_CONNECT_TIMEOUT", DEFAULT_CONNECT_TIMEOUT)))
        try:
            self.db = psycopg.connect(
                "postgresql" + url[url.index(":") :], connect_timeout=connect_timeout, application_name="mpfeed"
            )
        except psycopg.Error as e:
            raise SourceError(f"cannot connect to the source database {name}: {self.scrub(e)}") from None
        except Exception as e:  # a malformed URL: its text may hold the password, so only the kind is told
            raise SourceError(f"the URL of the source database {name} is not valid ({type(e).__name__})") from None
        # psycopg starts every transaction with BEGIN READ ONLY, whatever a query does to the session defaults.
        self.db.read_only = True
        try:
            self.db.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
            self.db.execute(f"SET statement_timeout = {int(self.timeout * 1000)}")
            self.db.execute("SET TIME ZONE 'UTC'")  # stable ISO strings for timestamptz cursors
            self.db.commit()
        except psycopg.Error as e:
            self.db.close()
            raise self._error(e) from None
        for type_name in ("timestamptz", "timestamp", "date"):
            self.db.adapters.register_loader(type_name, _lenient_loader(self.db, type_name))

    def wrap(self, query: str) -> str:
        return super().wrap(query.replace("%", "%%"))  # psycopg reads % as a placeholder marker

    def _error(self, e) -> SourceError:
        errors = self.psycopg.errors
        diag = getattr(e, "diag", None)
        message = self.scrub((diag and diag.message_primary) or e)
        if isinstance(e, errors.ReadOnlySqlTransaction):
            return SourceError(f"the query tried to write to {self.name}, which is read-only: {message}")
        if isinstance(e, errors.QueryCanceled):
            return SourceError(f"the query on {self.name} took longer than {self.timeout:g} s")
        if isinstance(e, self.psycopg.OperationalError):
            return SourceError(f"the source database {self.name} failed: {message}")
        return SourceError(f"the query failed on {self.name}: {message}")

    def fetch(self, sql: str, params: list) -> tuple[list[str], list]:
        try:
            with self.db.cursor() as cursor:
                cursor.execute(sql, params)
                columns = [d.name for d in cursor.description or ()]  # None only for a statement without rows
                rows = cursor.fetchall()
            self.db.rollback()  # ends the read-only transaction: nothing is held between pages
        except self.psycopg.Error as e:
            self._rollback()
            raise self._error(e) from None
        return columns, rows

    def stream(self, sql: str, params: list, size: int) -> Iterator:
        # A server-side cursor in one transaction: one consistent snapshot, memory bounded by `size`.
        try:
            with self.db.cursor(name="mpfeed_source") as cursor:
                cursor.itersize = size
                cursor.execute(sql, params)
                yield from cursor
            self.db.rollback()
        except self.psycopg.Error as e:
            self._rollback()
            raise self._error(e) from None

    def _rollback(self) -> None:
        with contextlib.suppress(self.psycopg.Error):
            self.db.rollback()

    def close(self) -> None:
        self.db.close()


def _lenient_loader(db, type_name: str):
    """psycopg's loader for a date type, except that values Python cannot hold ('infinity', year 10000) stay text."""
    import psycopg
    from psycopg.adapt import Loader
    from psycopg.pq import Format

    base = db.adapters.get_loader(db.adapters.types[type_name].oid, Format.TEXT)

    class LenientLoader(Loader):
        def __init__(self, oid, context=None):
            super().__init__(oid, context)
            self.inner = base(oid, context)

        def load(self, data):
            try:
                return self.inner.load(data)
            except psycopg.DataError:
                return bytes(data).decode()

    return LenientLoader
