"""The SQL source against a real SQLite file and, when one can be started, a real PostgreSQL server."""

# ruff: noqa: S608 - the tests build SQL from their own table names (one schema per test on PostgreSQL)

from __future__ import annotations

import os
import sqlite3
import subprocess
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from feeds.sources import SourceError
from feeds.sources.sql import SQLSource, check_query, connect

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "Sup3r-S3cret-pw"


@pytest.fixture(scope="session")
def postgres_url():
    """A DATABASE_URL from scripts/postgres.sh; skipped with a notice when it fails, except under CI=true."""
    try:
        done = subprocess.run(
            ["bash", str(ROOT / "scripts" / "postgres.sh")], capture_output=True, text=True, timeout=300
        )
        failure = "" if done.returncode == 0 else done.stderr.strip()[-500:]
    except (OSError, subprocess.TimeoutExpired) as e:
        failure = str(e)
    if failure:
        message = f"PostgreSQL could not be started by scripts/postgres.sh: {failure}"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " (required under CI=true)")
        pytest.skip("NOTICE: the PostgreSQL SQL-source tests are SKIPPED. " + message)
    return done.stdout.strip().splitlines()[-1]


class Partner:
    """The partner's database, written through its own connection; queries name tables with table()."""

    def __init__(self, kind: str, url: str, schema: str = ""):
        self.kind, self.url, self.schema = kind, url, schema
        self.db: Any  # a sqlite3 or a psycopg connection
        if kind == "sqlite":
            self.db = sqlite3.connect(url[len("sqlite:///") :], isolation_level=None)
        else:
            import psycopg

            self.db = psycopg.connect(url, autocommit=True)
            self.db.execute(f'CREATE SCHEMA "{schema}"')

    def table(self, name: str) -> str:
        return f'"{self.schema}".{name}' if self.schema else name

    def execute(self, sql: str, params=()):
        if self.kind == "sqlite":
            sql = sql.replace("%s", "?")
        return self.db.execute(sql.format(schema=self.schema or "main"), params)

    def insert_customers(self, rows):
        for row in rows:
            self.execute(f"INSERT INTO {self.table('customers')} VALUES (%s, %s, %s)", row)

    def close(self):
        if self.schema:
            self.db.execute(f'DROP SCHEMA "{self.schema}" CASCADE')
        self.db.close()


@pytest.fixture(params=["sqlite", "postgres"])
def partner(request, tmp_path, settings):
    if request.param == "sqlite":
        db = Partner("sqlite", f"sqlite:///{tmp_path / 'crm.db'}")
        db.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, email TEXT, updated_at TEXT)")
    else:
        db = Partner("postgres", request.getfixturevalue("postgres_url"), f"src_{uuid.uuid4().hex[:12]}")
        db.execute(f"CREATE TABLE {db.table('customers')} (id integer PRIMARY KEY, email text, updated_at timestamptz)")
    settings.MPFEED_SOURCE_DATABASES = {"crm": db.url}
    yield db
    db.close()


def ts(hour: int, minute: int = 0) -> str:
    # The ISO form both databases give back: stored as text in SQLite, read back from timestamptz in PostgreSQL.
    return f"2026-11-01T{hour:02d}:{minute:02d}:00+00:00"


def tied_rows(n: int = 23) -> list[tuple]:
    """Rows whose ids are not in cursor order and whose cursors repeat: ties at every page boundary."""
    return [(id_, f"user{id_}@example.com", ts(10 + (id_ * 7) % 4)) for id_ in range(1, n + 1)]


def make_source(partner, **config) -> SQLSource:
    config.setdefault("query", f"SELECT id, email, updated_at FROM {partner.table('customers')}")
    return SQLSource.from_config({"database": "crm", **config})


def refs(items) -> list[str]:
    return [item.ref for item in items]


@pytest.mark.parametrize("batch_size", [1, 3])
def test_it_pages_in_cursor_then_key_order_through_ties(partner, batch_size):
    rows = tied_rows()
    partner.insert_customers(rows)
    source = make_source(partner, cursor_column="updated_at", key_column="id", batch_size=batch_size)
    items = list(source.read())
    expected = sorted(rows, key=lambda r: (r[2], r[0]))
    assert refs(items) == [f"crm:id={r[0]}" for r in expected]
    assert [item.record for item in items] == [{"id": r[0], "email": r[1], "updated_at": r[2]} for r in expected]
    assert [item.position for item in items] == [{"cursor": r[2], "key": r[0]} for r in expected]
    for item in items:
        assert orjson.loads(orjson.dumps(item.position)) == item.position


def test_it_resumes_after_every_position(partner):
    partner.insert_customers(tied_rows(17))
    source = make_source(partner, cursor_column="updated_at", key_column="id", batch_size=4)
    items = list(source.read())
    for i, item in enumerate(items):
        assert refs(source.read(item.position)) == refs(items[i + 1 :]), f"resuming after item {i}"


def test_the_next_run_reads_only_new_and_updated_rows(partner):
    partner.insert_customers(tied_rows(10))
    source = make_source(partner, cursor_column="updated_at", key_column="id", batch_size=3)
    last = list(source.read())[-1].position
    assert last == {"cursor": ts(13), "key": 9}

    table = partner.table("customers")
    partner.insert_customers([(11, "new@example.com", ts(14)), (12, "tie@example.com", ts(13))])
    partner.execute(f"UPDATE {table} SET email = %s, updated_at = %s WHERE id = %s", ["moved@example.com", ts(15), 1])
    second = list(source.read(last))
    assert refs(second) == ["crm:id=12", "crm:id=11", "crm:id=1"]
    assert second[-1].record == {"id": 1, "email": "moved@example.com", "updated_at": ts(15)}
    assert list(source.read(second[-1].position)) == []


def test_a_cursor_alone_pages_when_it_is_unique(partner):
    partner.insert_customers([(i, f"u{i}@example.com", ts(10, i)) for i in range(1, 8)])
    source = make_source(partner, cursor_column="updated_at", batch_size=2)
    items = list(source.read())
    assert refs(items) == [f"crm:updated_at={ts(10, i)}" for i in range(1, 8)]
    assert items[2].position == {"cursor": ts(10, 3)}
    assert refs(source.read(items[2].position)) == refs(items[3:])


@pytest.mark.parametrize("tie", [(3, 4), (2, 3)], ids=["inside-a-page", "across-a-page-boundary"])
def test_a_cursor_alone_that_is_not_unique_stops_the_read(partner, tie):
    rows = [(i, f"u{i}@example.com", ts(10, i)) for i in range(1, 8)]
    rows[tie[1] - 1] = (tie[1], "twin@example.com", ts(10, tie[0]))
    partner.insert_customers(rows)
    source = make_source(partner, cursor_column="updated_at", batch_size=2)
    with pytest.raises(SourceError, match="several rows have the same updated_at .*set key_column"):
        list(source.read())


def test_a_position_saved_before_key_column_was_set_still_fits(partner):
    partner.insert_customers([(1, "a@example.com", ts(10)), (2, "b@example.com", ts(11)), (3, "c@example.com", ts(11))])
    source = make_source(partner, cursor_column="updated_at", key_column="id")
    assert refs(source.read({"cursor": ts(10)})) == ["crm:id=2", "crm:id=3"]
    with pytest.raises(SourceError, match="does not fit"):
        list(source.read({"offset": 3}))


def test_a_key_alone_reads_everything_each_run_and_resumes_by_key(partner):
    partner.insert_customers(tied_rows(9))
    source = make_source(partner, key_column="id", batch_size=4)
    items = list(source.read())
    assert refs(items) == [f"crm:id={i}" for i in range(1, 10)]
    assert [item.position for item in items[:-1]] == [{"key": i} for i in range(1, 9)]
    assert items[-1].position is None  # the next run starts from the beginning again
    assert refs(source.read(items[3].position)) == refs(items[4:])
    assert not source.incremental


def test_without_cursor_or_key_it_resumes_by_offset(partner):
    partner.insert_customers(tied_rows(6))
    source = make_source(partner, query=f"SELECT email FROM {partner.table('customers')} ORDER BY id", batch_size=4)
    items = list(source.read())
    assert refs(items) == [f"crm:row {n}" for n in range(1, 7)]
    assert [item.position for item in items] == [{"offset": n} for n in range(1, 6)] + [None]
    resumed = list(source.read({"offset": 4}))
    assert [item.record for item in resumed] == [{"email": "user5@example.com"}, {"email": "user6@example.com"}]
    assert refs(resumed) == ["crm:row 5", "crm:row 6"]


def test_rows_without_cursor_are_reported_on_the_first_read(partner):
    partner.insert_customers([(1, "a@example.com", ts(10)), (2, "b@example.com", None), (3, "c@example.com", None)])
    source = make_source(partner, cursor_column="updated_at", key_column="id")
    items = list(source.read())
    assert items[0].error.startswith("2 rows have no updated_at or id and are not read")
    assert refs(items[1:]) == ["crm:id=1"]
    assert list(source.read(items[-1].position)) == []


def test_percent_signs_and_comments_in_the_query_are_kept(partner):
    partner.insert_customers([(1, "a@example.com", ts(10)), (2, "b@other.org", ts(11))])
    query = f"SELECT id, email, updated_at FROM {partner.table('customers')} WHERE email LIKE '%@example.com' -- ours"
    items = list(make_source(partner, query=query, cursor_column="updated_at", key_column="id").read())
    assert refs(items) == ["crm:id=1"]


@pytest.mark.parametrize(
    "query, message",
    [
        ("DELETE FROM customers", "must be a SELECT"),
        ("SELECT 1; DROP TABLE customers", "single statement"),
        ("SELECT 1 AS id; -- then\n DROP TABLE customers;", "single statement"),
        ("WITH gone AS (UPDATE customers SET email = '' RETURNING *) SELECT * FROM gone", "contains UPDATE"),
        ("WITH x AS (SELECT 1) DELETE FROM customers", "contains DELETE"),
        ("SELECT 'unterminated", "unterminated"),
        ("  -- nothing\n", "empty"),
    ],
)
def test_statements_that_are_not_a_single_select_are_refused(query, message):
    with pytest.raises(SourceError, match=message):
        check_query(query)


@pytest.mark.parametrize(
    "query",
    [
        "SELECT 'a;b -- c' AS x;",
        "select $tag$; update x$tag$ as x ;  ",
        'SELECT "update", "delete" FROM t',
        "with t as (select 1 as n) select n from t /* ; drop */",
        "SELECT E'it\\'s; fine' AS x",
    ],
)
def test_reading_statements_pass_the_check(query):
    assert check_query(query).rstrip().endswith(("x", '"delete" FROM t', "from t"))


def test_the_session_is_read_only(partner):
    table = partner.table("customers")
    partner.insert_customers([(1, "a@example.com", ts(10))])
    with connect("crm") as conn:
        if partner.kind == "postgres":
            # Even with the session default turned back to read-write (a query's own set_config() would be rolled
            # back with its page anyway), every transaction starts with BEGIN READ ONLY.
            conn.db.execute("SET default_transaction_read_only = off")
            conn.db.commit()
        with pytest.raises(SourceError, match="read-only"):
            conn.fetch(f"UPDATE {table} SET email = 'x' WHERE id = 1", [])
    assert partner.execute(f"SELECT email FROM {table}").fetchone()[0] == "a@example.com"


@pytest.mark.parametrize("partner", ["postgres"], indirect=True)  # SQLite has no functions that write
def test_a_function_that_writes_fails_on_postgresql(partner):
    table = partner.table("customers")
    partner.insert_customers([(1, "a@example.com", ts(10))])
    partner.execute(
        f'CREATE FUNCTION "{partner.schema}".wipe() RETURNS integer LANGUAGE sql AS '
        f"$$ UPDATE {table} SET email = 'wiped'; SELECT 1 $$"
    )
    source = make_source(partner, query=f'SELECT "{partner.schema}".wipe() AS id, now() AS updated_at')
    with pytest.raises(SourceError, match="tried to write to crm, which is read-only"):
        list(source.read())
    assert partner.execute(f"SELECT email FROM {table}").fetchone()[0] == "a@example.com"


@pytest.mark.parametrize("partner", ["postgres"], indirect=True)
def test_values_become_json_friendly_on_postgresql(partner):
    query = """
        SELECT 1 AS id, timestamptz '2026-11-01 10:00:00.25+02' AS at, date '2026-11-02' AS day,
               timestamp '2026-11-01 10:00:00' AS naive, 'infinity'::timestamptz AS forever,
               19.90::numeric(10, 2) AS amount, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid AS token,
               '{"plan": "pro", "tags": [1, 2]}'::jsonb AS extra, ARRAY[1, 2] AS ids, true AS active,
               interval '90 minutes' AS spent, '10.0.0.1'::inet AS ip, NULL::text AS nothing
        UNION ALL
        SELECT 2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 'x'
    """
    items = list(make_source(partner, query=query, key_column="id").read())
    assert items[0].record == {
        "id": 1,
        "at": "2026-11-01T08:00:00.250000+00:00",
        "day": "2026-11-02",
        "naive": "2026-11-01T10:00:00",
        "forever": "infinity",
        "amount": "19.90",
        "token": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "extra": {"plan": "pro", "tags": [1, 2]},
        "ids": [1, 2],
        "active": True,
        "spent": 5400.0,
        "ip": "10.0.0.1",
        "nothing": None,
    }
    assert items[1].record["nothing"] == "x"


def test_rows_with_binary_or_nan_values_become_item_errors(partner):
    if partner.kind == "postgres":
        blob, nan, rows = "decode('00ff', 'hex')", "'NaN'::float8", "generate_series(1, 4) AS id"
    else:
        blob, nan, rows = "x'00ff'", "9e999", "(SELECT value AS id FROM json_each('[1, 2, 3, 4]'))"
    query = f"SELECT id, CASE WHEN id = 2 THEN {blob} END AS blob, CASE WHEN id = 3 THEN {nan} END AS score FROM {rows}"
    items = list(make_source(partner, query=query, key_column="id", batch_size=2).read())
    assert refs(items) == ["crm:id=1", "crm:id=2", "crm:id=3", "crm:id=4"]
    assert items[0].record == {"id": 1, "blob": None, "score": None}
    assert items[1].record is None and items[1].error.startswith("column blob: binary data is not sent")
    assert items[1].excerpt == "id=2, blob=<2 bytes>, score=None"
    assert items[2].record is None and "column score:" in items[2].error and "not a finite number" in items[2].error
    assert items[3].record == {"id": 4, "blob": None, "score": None}


@pytest.mark.parametrize("partner", ["sqlite"], indirect=True)
def test_sqlite_values_come_through_as_stored(partner):
    query = "SELECT 1 AS id, 2.5 AS ratio, '2026-11-01 10:00:00' AS at, NULL AS empty"
    items = list(make_source(partner, query=query, key_column="id").read())
    assert items[0].record == {"id": 1, "ratio": 2.5, "at": "2026-11-01 10:00:00", "empty": None}


def test_unknown_database_names_the_configured_ones(partner):
    source = SQLSource.from_config({"database": "shop", "query": "SELECT 1 AS id"})
    with pytest.raises(SourceError, match=r"unknown source database 'shop' \(MPFEED_SOURCE_DATABASES: crm\)"):
        list(source.read())


@pytest.mark.parametrize(
    "url, message",
    [
        (f"postgres://mpfeed:{PASSWORD}@127.0.0.1:1/mpfeed", "cannot connect to the source database crm: .*refused"),
        (f"postgres://mpfeed:{PASSWORD}@127.0.0.1:notaport/mpfeed", "cannot connect|not valid"),
        (f"mysql://mpfeed:{PASSWORD}@127.0.0.1/mpfeed", "must have a sqlite:// or postgres:// URL, not mysql://"),
        ("sqlite:////nonexistent/folder/crm.db", r"crm \(/nonexistent/folder/crm.db\) cannot be opened"),
    ],
)
def test_connection_errors_are_readable_and_hide_the_password(settings, url, message):
    settings.MPFEED_SOURCE_DATABASES = {"crm": url}
    source = SQLSource.from_config({"database": "crm", "query": "SELECT 1 AS id"})
    with pytest.raises(SourceError, match=message) as error:
        list(source.read())
    assert PASSWORD not in str(error.value)
    assert PASSWORD not in repr(source)


def test_a_refused_password_is_not_repeated(postgres_url, settings):
    wrong = postgres_url.replace("mpfeed:mpfeed@", f"mpfeed:{PASSWORD}@")
    settings.MPFEED_SOURCE_DATABASES = {"crm": wrong}
    with pytest.raises(SourceError, match="password authentication failed") as error:
        list(SQLSource.from_config({"database": "crm", "query": "SELECT 1 AS id"}).read())
    assert PASSWORD not in str(error.value)


@pytest.mark.parametrize(
    "config, message",
    [
        ({"query": "SELECT id FROM nowhere_at_all", "key_column": "id"}, "the query failed on crm: .*nowhere_at_all"),
        ({"cursor_column": "changed_at", "key_column": "id"}, "the query has no column 'changed_at' .*id, email"),
        ({"query": "SELECT id, email AS id FROM {customers}"}, "two columns named 'id'"),
    ],
)
def test_query_errors_are_readable(partner, config, message):
    if "{customers}" in config.get("query", ""):
        config = {**config, "query": config["query"].format(customers=partner.table("customers"))}
    with pytest.raises(SourceError, match=message):
        list(make_source(partner, **config).read())


def test_the_statement_timeout_stops_long_queries(partner, settings):
    settings.MPFEED_SQL_STATEMENT_TIMEOUT = 0.2
    if partner.kind == "postgres":
        query = "SELECT 1 AS id FROM pg_sleep(2)"
    else:
        query = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT max(i) AS id FROM n"
    with pytest.raises(SourceError, match="the query on crm took longer than 0.2 s"):
        list(make_source(partner, query=query).read())


@pytest.mark.parametrize(
    "config, message",
    [
        ({"cursor_column": "updated_at; DROP TABLE x"}, "cursor_column must be a column name"),
        ({"key_column": 'id"'}, "key_column must be a column name"),
        ({"batch_size": 0}, "batch_size must be a whole number"),
        ({"database": "../etc"}, "needs a database name"),
        ({"limit": 5}, "unknown SQL source setting 'limit'"),
    ],
)
def test_configs_that_cannot_work_are_refused(config, message):
    with pytest.raises(SourceError, match=message):
        SQLSource.from_config({"database": "crm", "query": "SELECT 1 AS id", **config})


def test_check_names_the_querys_columns(partner):
    source = make_source(partner, cursor_column="updated_at", key_column="id")
    assert source.check() == ["id", "email", "updated_at"]
