"""File sources against generated input: whatever the bytes, reading yields records or item errors, or stops
with a SourceError; well-formed files read back exactly; every position resumes with exactly what follows."""

from __future__ import annotations

import csv
import gzip
import io
import tempfile
from pathlib import Path
from unittest import mock

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feeds.sources import SourceError, files
from feeds.sources.files import FileSource

checked = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=150,
    suppress_health_check=[HealthCheck.too_slow],
)

FRAGMENTS = [
    b",", b";", b"\t", b"|", b'"', b"\n", b"\r\n", b"\r", b" ", b"a", b"id", b"1", b"-2.5e3", b"\xc3\xa9",
    b"\xe4\xb8\xad", b"\xff", b"\xc3", b"\x00", b"\xef\xbb\xbf", b"\xff\xfe", b"{", b"}", b"[", b"]", b":",
    b'"k"', b"NaN", b"null", b'{"a": 1}\n', b'{"a": [1, {"b": "c"}]}\n', b"[" * 40,
]  # fmt: skip
chunks = st.sampled_from([3, 7, 64 * 1024])


FIELDS = [b"", b"a", b"id", b"12", b'"q,\n""x"', b'"open', b"\xff", b"\xc3\xa9", b"\x00", b" ", b"\r", b'{"a": 1}']


@st.composite
def raw_bytes(draw) -> bytes:
    """Fragments in any order, lines of fields (near-CSV), or any bytes."""
    pieces = st.lists(st.sampled_from(FRAGMENTS), max_size=300).map(b"".join)
    line = st.tuples(st.sampled_from([b",", b";", b"\t"]), st.lists(st.sampled_from(FIELDS), max_size=5))
    lines = st.lists(line.map(lambda t: t[0].join(t[1])), max_size=40).map(b"\n".join)
    return draw(st.one_of(pieces, lines, lines, st.binary(max_size=400)))


def store(directory: Path, name: str, data: bytes, gz: bool, cut: float | None = None) -> Path:
    if gz:
        data = gzip.compress(data)
        if cut is not None:
            data = data[: int(len(data) * cut)]
    path = directory / name
    path.write_bytes(data)
    return path


def read_all(src: FileSource, cursor=None) -> tuple[list, str]:
    """The items read, and the SourceError's message if reading stopped with one."""
    items: list = []
    try:
        items.extend(src.read(cursor))
    except SourceError as e:
        return items, str(e)
    return items, ""


def assert_items_are_well_formed(items) -> None:
    for item in items:
        if item.record is not None:
            assert isinstance(item.record, dict) and not item.error, item
        else:
            assert item.error and isinstance(item.error, str), item
        assert "\0" not in item.error + item.excerpt + item.ref
        assert orjson.loads(orjson.dumps(item.position)) == item.position


def assert_resumes(src: FileSource, items) -> None:
    sample = items if len(items) <= 25 else items[:: len(items) // 25]
    for k, item in enumerate(items):
        if item in sample:
            rest, _ = read_all(src, item.position)
            assert [(i.ref, i.record, i.error) for i in rest] == [(i.ref, i.record, i.error) for i in items[k + 1 :]]


@checked.__class__(checked, max_examples=300)
@given(
    data=raw_bytes(),
    fmt=st.sampled_from(["csv", "ndjson"]),
    gz=st.booleans(),
    cut=st.none() | st.floats(0, 1),
    encoding=st.sampled_from(["utf-8", "latin-1", "utf-16", "shift_jis"]),
    delimiter=st.sampled_from([",", "auto", ";"]),
    limit=st.sampled_from([40, files.MAX_RECORD_BYTES]),
    chunk=chunks,
)
def test_any_bytes_yield_records_or_item_errors_or_a_source_error(
    data, fmt, gz, cut, encoding, delimiter, limit, chunk
):
    config = {"format": fmt, "encoding": encoding, **({"delimiter": delimiter} if fmt == "csv" else {})}
    with tempfile.TemporaryDirectory() as folder, mock.patch.object(files, "CHUNK", chunk):
        path = store(Path(folder), "input.gz" if gz else "input", data, gz, cut)
        src = FileSource.from_config({"path": str(path), **config}, max_record_bytes=limit)
        items, error = read_all(src)
        assert_items_are_well_formed(items)
        if not error:
            assert_resumes(src, items)


cell = st.text(st.sampled_from(list(",;|\t \"'\n\rab1 é中😀\ufeff\\")), max_size=8)


@checked
@given(
    width=st.integers(1, 4),
    data=st.data(),
    sep=st.sampled_from([",", ";", "\t", "|"]),
    auto=st.booleans(),
    encoding=st.sampled_from(["utf-8", "utf-16", "utf-32-be", "gb18030"]),
    gz=st.booleans(),
    chunk=chunks,
)
def test_csv_written_by_the_csv_module_reads_back_and_resumes_anywhere(width, data, sep, auto, encoding, gz, chunk):
    header = [f"c{i}" for i in range(width)]
    rows = data.draw(st.lists(st.lists(cell, min_size=width, max_size=width), max_size=30))
    quoting = data.draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL]))
    text = io.StringIO()
    # With "\r\n" as the line terminator, the writer quotes every field holding a CR or an LF.
    csv.writer(text, delimiter=sep, lineterminator="\r\n", quoting=quoting).writerows([header, *rows])
    delimiter = "auto" if auto and width > 1 else sep
    with tempfile.TemporaryDirectory() as folder, mock.patch.object(files, "CHUNK", chunk):
        path = store(Path(folder), "rows.csv", text.getvalue().encode(encoding), gz)
        src = FileSource.from_config({"path": str(path), "delimiter": delimiter, "encoding": encoding})
        items, error = read_all(src)
        assert not error
        # A one-column row holding only spaces is a blank line, skipped.
        expected = [dict(zip(header, row)) for row in rows if width > 1 or row[0].strip()]
        assert [i.record for i in items] == expected
        assert_resumes(src, items)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)  # fmt: skip


@checked
@given(
    records=st.lists(st.dictionaries(st.text(max_size=5), json_values, max_size=4), max_size=25),
    blank=st.sampled_from(["", "\n", "  \r\n"]),
    gz=st.booleans(),
    chunk=chunks,
)
def test_ndjson_reads_back_and_resumes_anywhere(records, blank, gz, chunk):
    data = b"".join(orjson.dumps(r) + b"\n" + blank.encode() for r in records)
    with tempfile.TemporaryDirectory() as folder, mock.patch.object(files, "CHUNK", chunk):
        src = FileSource.from_config({"path": str(store(Path(folder), "e.ndjson", data, gz))})
        items, error = read_all(src)
        assert not error
        assert [i.record for i in items] == records
        assert_resumes(src, items)
