"""File sources: CSV and NDJSON, plain or gzip, one file or a glob, read from a position."""

from __future__ import annotations

import gzip
import json
import os
import re
import tracemalloc
import zlib

import pytest

from feeds.sources import Item, SourceError, files
from feeds.sources.files import FileSource

ORDERS = 'id,user,note\n1,ann,hello\n2,bob,"two\nlines"\n\n3,cy,"with ""quotes"", and a comma"\n'


def source(path, **config) -> FileSource:
    return FileSource.from_config({"path": str(path), **config})


def read(src: FileSource, cursor=None) -> list[Item]:
    return list(src.read(cursor))


def seen(items: list[Item]) -> list[tuple]:
    """What a reader of the items sees, without positions."""
    return [(i.ref, i.record, i.error) for i in items]


def write(path, content: str | bytes, *, gz: bool = False, encoding: str = "utf-8"):
    data = content.encode(encoding) if isinstance(content, str) else content
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def assert_resumes_after_every_item(src: FileSource) -> list[Item]:
    items = read(src)
    assert items
    for k, item in enumerate(items):
        assert json.loads(json.dumps(item.position)) == item.position
        assert seen(read(src, item.position)) == seen(items[k + 1 :]), f"after item {k} ({item.ref})"
    return items


@pytest.fixture(params=[7, files.CHUNK], ids=["tiny-chunks", "64k-chunks"])
def chunk(request, monkeypatch):
    """Lines, records, windows and gzip output cut at every possible place, or read as in production."""
    monkeypatch.setattr(files, "CHUNK", request.param)
    return request.param


# -------------------------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    "name, expected",
    [
        ("orders.csv", ("csv", "auto")),
        ("orders.CSV.gz", ("csv", "auto")),
        ("orders.tsv", ("csv", "\t")),
        ("events.ndjson", ("ndjson", ",")),
        ("events.jsonl.gz", ("ndjson", ",")),
        ("exports/*.csv.gz", ("csv", "auto")),
    ],
)
def test_the_format_comes_from_the_extension_also_under_gz(name, expected):
    src = source(f"/data/{name}")
    assert (src.format, src.delimiter) == expected
    assert (src.encoding, src.compression) == ("auto", "auto")


def test_the_settings_are_kept_as_given():
    config = {"path": "/data/*.txt", "format": "csv", "delimiter": "auto", "encoding": "latin-1", "compression": "gzip"}
    assert source(**config).config == {**config, "incremental": False}
    assert source(**config, incremental=True).incremental is True
    assert source("/data/a.txt", format="csv", delimiter="tab").delimiter == "\t"


@pytest.mark.parametrize(
    "config, message",
    [
        ("orders.csv", "must be an object with a path"),
        ({}, "needs a path"),
        ({"path": "  "}, "needs a path"),
        ({"path": "/data/a.csv", "delimeter": ";"}, "unknown file source setting delimeter"),
        ({"path": "/data/orders"}, "cannot tell the format of /data/orders"),
        ({"path": "/data/a.xml"}, "cannot tell the format"),
        ({"path": "/data/a.csv", "format": "xml"}, "unknown file format 'xml'"),
        ({"path": "/data/a.csv", "delimiter": ";;"}, "the delimiter must be one character, tab or auto"),
        ({"path": "/data/a.csv", "delimiter": '"'}, "'\"' cannot be the delimiter"),
        ({"path": "/data/a.ndjson", "delimiter": ";"}, "a delimiter applies to CSV files only"),
        ({"path": "/data/a.csv", "encoding": "klingon"}, "unknown encoding 'klingon'"),
        ({"path": "/data/a.csv", "encoding": "base64"}, "'base64' is not a text encoding"),
        ({"path": "/data/a.csv", "encoding": "unicode_escape"}, "cannot be read line by line"),
        ({"path": "/data/a.csv", "compression": "zip"}, "unknown compression 'zip': use auto, gzip or none"),
        ({"path": "/data/a.csv", "incremental": "yes"}, "incremental must be true or false, not 'yes'"),
    ],
)
def test_bad_settings_are_refused_with_a_readable_message(config, message):
    with pytest.raises(SourceError, match=re.escape(message)):
        FileSource.from_config(config)


def test_a_semicolon_file_is_read_without_being_told(tmp_path):
    path = tmp_path / "orders.csv"
    path.write_text("id;user;amount\n1;ann;12.50\n")
    assert [i.record for i in read(source(str(path)))] == [{"id": "1", "user": "ann", "amount": "12.50"}]


# -------------------------------------------------------------------------------------------- csv


def test_csv_rows_become_records_named_by_their_first_line(tmp_path):
    items = read(source(write(tmp_path / "orders.csv", ORDERS)))
    assert seen(items) == [
        ("orders.csv:2", {"id": "1", "user": "ann", "note": "hello"}, ""),
        ("orders.csv:3", {"id": "2", "user": "bob", "note": "two\nlines"}, ""),
        ("orders.csv:6", {"id": "3", "user": "cy", "note": 'with "quotes", and a comma'}, ""),
    ]


def test_crlf_a_byte_order_mark_and_spaces_around_header_names(tmp_path):
    path = write(tmp_path / "a.csv", "\ufeff id , name \r\n1,ann\r\n2,bob")
    assert [i.record for i in read(source(path))] == [{"id": "1", "name": "ann"}, {"id": "2", "name": "bob"}]


@pytest.mark.parametrize("delimiter", [";", "\t", "|", "tab"])
def test_other_delimiters(tmp_path, delimiter):
    sep = "\t" if delimiter == "tab" else delimiter
    path = write(tmp_path / "a.txt", f"id{sep}note\n1{sep}a,b\n")
    assert [i.record for i in read(source(path, format="csv", delimiter=delimiter))] == [{"id": "1", "note": "a,b"}]


@pytest.mark.parametrize("sep", [",", ";", "\t", "|"])
def test_auto_sniffs_the_delimiter_from_the_header(tmp_path, sep):
    # The quoted header name holds the other candidates: only what is outside quotes counts.
    path = write(tmp_path / "a.csv", f'\nid{sep}"a,b;c|d\te"{sep}x\n1{sep}2{sep}3\n')
    assert [i.record for i in read(source(path, delimiter="auto"))] == [{"id": "1", "a,b;c|d\te": "2", "x": "3"}]


def test_auto_reads_a_one_column_file_with_commas(tmp_path):
    path = write(tmp_path / "a.csv", "email\nann@example.com\n")
    assert [i.record for i in read(source(path, delimiter="auto"))] == [{"email": "ann@example.com"}]


def test_a_tsv_file_is_tab_separated_by_default(tmp_path):
    path = write(tmp_path / "a.tsv", "id\tnote\n1\ta,b\n")
    assert [i.record for i in read(source(path))] == [{"id": "1", "note": "a,b"}]


@pytest.mark.parametrize(
    "encoding", ["utf-8", "utf-8-sig", "utf-16", "utf-16-be", "utf-32", "latin-1", "cp1252", "shift_jis"]
)
def test_any_text_encoding(tmp_path, encoding):
    text = 'id,name\n1,Zoë\n2,"multi\nline"\n' if encoding != "shift_jis" else 'id,name\n1,日本\n2,"multi\nline"\n'
    path = write(tmp_path / "a.csv", text, encoding=encoding)
    src = source(path, encoding=encoding)
    items = assert_resumes_after_every_item(src)
    assert [i.record["name"] for i in items] == [text.split("\n")[1][2:], "multi\nline"]


def test_utf16_without_a_byte_order_mark_is_little_endian(tmp_path):
    path = write(tmp_path / "a.csv", "id,name\n1,Zoë\n", encoding="utf-16-le")
    assert [i.record for i in read(source(path, encoding="utf-16"))] == [{"id": "1", "name": "Zoë"}]


def test_a_gzip_file_is_recognised_by_its_content(tmp_path):
    plain = read(source(write(tmp_path / "orders.csv", ORDERS)))
    assert seen(read(source(write(tmp_path / "orders.csv", ORDERS, gz=True)))) == seen(plain)


def test_gzip_members_one_after_the_other_read_as_one_file(tmp_path):
    path = tmp_path / "a.csv.gz"
    path.write_bytes(gzip.compress(b"id,n\n1,a\n") + gzip.compress(b"2,b\n") + b"\0" * 10 + gzip.compress(b"3,c\n"))
    assert [i.record["n"] for i in read(source(path))] == ["a", "b", "c"]


def test_compression_none_reads_the_bytes_as_they_are(tmp_path):
    path = write(tmp_path / "a.csv.gz", "id,n\n1,a\n")  # not actually compressed
    assert [i.record for i in read(source(path, compression="none"))] == [{"id": "1", "n": "a"}]
    with pytest.raises(SourceError, match="a.csv.gz is not a text file"):
        read(source(write(tmp_path / "a.csv.gz", "id,n\n1,a\n", gz=True), compression="none"))


def test_compression_gzip_refuses_a_plain_file(tmp_path):
    path = write(tmp_path / "a.csv", "id,n\n1,a\n")
    with pytest.raises(SourceError, match="a.csv is not a gzip archive"):
        read(source(path, compression="gzip"))


# -------------------------------------------------------------------------------------------- ndjson


def test_ndjson_lines_become_records(tmp_path):
    path = write(tmp_path / "e.ndjson", '\ufeff{"a": 1}\r\n\n   \n{"b": {"c": [1, 2]}}\n{"d": "\\u00e9"}')
    assert seen(read(source(path))) == [
        ("e.ndjson:1", {"a": 1}, ""),
        ("e.ndjson:4", {"b": {"c": [1, 2]}}, ""),
        ("e.ndjson:5", {"d": "é"}, ""),
    ]


def test_ndjson_in_another_encoding(tmp_path):
    path = write(tmp_path / "e.ndjson", '{"name": "Zoë"}\n', encoding="utf-16")
    assert [i.record for i in read(source(path, encoding="utf-16"))] == [{"name": "Zoë"}]


@pytest.mark.parametrize(
    "line, error",
    [
        ("{'a': 1}", "the line is not valid JSON (unexpected character"),
        ('{"a": 1', "the line is not valid JSON"),
        ("[1, 2]", "expected a JSON object, got a list"),
        ('"text"', "expected a JSON object, got text"),
        ("12", "expected a JSON object, got a number"),
        ("null", "expected a JSON object, got null"),
        ("true", "expected a JSON object, got a boolean"),
        ('{"a": NaN}', "the line is not valid JSON"),
        ('{"a": Infinity}', "the line is not valid JSON"),
        ('{"a": 1e999}', "the line is not valid JSON (number is infinity"),
        ('{"a": "\\ud800"}', "the line is not valid JSON"),
        ('{"a": ' + "[" * 2000 + "]" * 2000 + "}", "the line is not valid JSON (depth limit exceeded"),
    ],
)
def test_ndjson_lines_that_are_not_json_objects_are_item_errors(tmp_path, line, error):
    path = write(tmp_path / "e.ndjson", f'{{"ok": 1}}\n{line}\n{{"ok": 2}}\n')
    first, bad, last = read(source(path))
    assert (first.record, last.record) == ({"ok": 1}, {"ok": 2})
    assert bad.ref == "e.ndjson:2" and bad.record is None
    assert bad.error.startswith(error)
    assert bad.excerpt.startswith(line[:20])


def test_a_nul_byte_in_ndjson_after_the_start_is_an_item_error(tmp_path):
    path = write(tmp_path / "e.ndjson", '{"ok": 1}\n' * 1000 + '{"a": "\x00"}\n{"ok": 2}\n')
    *_, bad, last = read(source(path))
    assert bad.ref == "e.ndjson:1001" and bad.error.startswith("the line is not valid JSON")
    assert bad.excerpt == '{"a": "\\x00"}\n' and last.record == {"ok": 2}


# -------------------------------------------------------------------------------------------- positions


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_reading_from_any_items_position_yields_exactly_the_items_after_it(tmp_path, chunk, gz):
    text = ORDERS + '4,dee\n5,eve,"open\n\nquoted"\n6,\xff,bad\n7,last,no line break'
    path = write(tmp_path / "orders.csv", text.encode("utf-8").replace(b"\xc3\xbf", b"\xff"), gz=gz)
    items = assert_resumes_after_every_item(source(path, encoding="utf-8"))
    assert [i.ref for i in items] == [f"orders.csv:{n}" for n in (2, 3, 6, 7, 8, 11, 12)]
    assert [bool(i.error) for i in items] == [False, False, False, True, False, True, False]


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_ndjson_positions(tmp_path, chunk, gz):
    path = write(tmp_path / "e.ndjson.gz", '{"a": 1}\n\nnot json\n{"a": 2}\n{"a": "' + "x" * 200 + '"}\n', gz=gz)
    assert len(assert_resumes_after_every_item(source(path))) == 4


def test_positions_across_a_glob_of_plain_and_gzip_files(tmp_path, chunk):
    folder = tmp_path / "exports"
    folder.mkdir()
    write(folder / "orders-1.csv", 'id,n\n1,a\n2,"b\nb"\n')
    write(folder / "orders-2.csv.gz", "id,n\n3,c\n", gz=True)
    write(folder / "orders-3.csv", "id,n\n")  # only a header
    write(folder / "orders-4.csv", "")  # empty
    write(folder / "orders-5.csv.gz", "id,n\n4,d\n5,e\n", gz=True)
    write(folder / "notes.txt", "not matched")
    (folder / "sub.csv").mkdir()  # a folder that matches: not a file
    items = assert_resumes_after_every_item(source(folder / "orders-*.csv*", format="csv"))
    assert [i.ref for i in items] == [
        "orders-1.csv:2",
        "orders-1.csv:3",
        "orders-2.csv.gz:2",
        "orders-5.csv.gz:2",
        "orders-5.csv.gz:3",
    ]
    assert items[2].position["file"] == "orders-2.csv.gz"


def test_a_glob_over_folders_names_files_by_their_relative_path(tmp_path):
    for day in ("2026-01-02", "2026-01-01"):
        (tmp_path / day).mkdir()
        write(tmp_path / day / "orders.csv", f"day\n{day}\n")
    items = read(source(tmp_path / "*" / "orders.csv"))
    assert [i.ref for i in items] == ["2026-01-01/orders.csv:2", "2026-01-02/orders.csv:2"]
    assert read(source(tmp_path / "**" / "*.csv")) == items


def test_a_later_read_picks_up_appended_lines_and_new_files_only(tmp_path):
    write(tmp_path / "orders-001.csv", "id,n\n1,a\n")
    write(tmp_path / "orders-002.csv", "id,n\n2,b\n")
    src = source(tmp_path / "orders-*.csv")
    last = read(src)[-1].position
    assert read(src, last) == []
    with open(tmp_path / "orders-002.csv", "a") as f:
        f.write("3,c\n")
    write(tmp_path / "orders-003.csv", "id,n\n4,d\n")
    write(tmp_path / "orders-000.csv", "id,n\n0,too late\n")  # sorts before the position: never read
    new = read(src, last)
    assert seen(new) == [
        ("orders-002.csv:3", {"id": "3", "n": "c"}, ""),
        ("orders-003.csv:2", {"id": "4", "n": "d"}, ""),
    ]
    assert read(src, new[-1].position) == []


def test_a_gzip_member_appended_to_the_last_file_is_picked_up(tmp_path):
    path = write(tmp_path / "e.ndjson.gz", '{"a": 1}\n', gz=True)
    src = source(path)
    last = read(src)[-1].position
    with open(path, "ab") as f:
        f.write(gzip.compress(b'{"a": 2}\n'))
    assert [i.record for i in read(src, last)] == [{"a": 2}]


def test_lines_appended_to_a_file_without_a_final_line_break(tmp_path):
    path = write(tmp_path / "a.csv", "id\n1")
    last = read(source(path))[-1].position
    with open(path, "a") as f:
        f.write("\n2\n")
    assert [i.record for i in read(source(path), last)] == [{"id": "2"}]


def test_the_last_file_may_be_deleted_once_read(tmp_path):
    write(tmp_path / "a-1.csv", "id\n1\n")
    last = read(source(tmp_path / "a-*.csv"))[-1].position
    (tmp_path / "a-1.csv").unlink()
    write(tmp_path / "a-2.csv", "id\n2\n")
    assert [i.record for i in read(source(tmp_path / "a-*.csv"), last)] == [{"id": "2"}]


def test_a_file_replaced_since_the_position_is_refused(tmp_path):
    path = write(tmp_path / "a.csv", "id,n\n1,a\n2,b\n")
    src = source(path)
    first = read(src)[0].position
    write(path, "id,n\n1,x\n2,b\n3,c\n")
    with pytest.raises(SourceError, match="a.csv changed before line 3: it was replaced or rewritten, not appended to"):
        read(src, first)
    last = read(src)[-1].position
    write(path, "id,n\n1,x\n")
    with pytest.raises(SourceError, match="a.csv is shorter than when it was last read"):
        read(src, last)


def test_a_position_in_a_truncated_gzip_file_is_refused(tmp_path):
    data = gzip.compress(("id\n" + "".join(f"{i}\n" for i in range(1000))).encode())
    path = tmp_path / "a.csv.gz"
    path.write_bytes(data)
    last = read(source(path))[-1].position
    path.write_bytes(data[:200])
    with pytest.raises(SourceError, match=r"a.csv.gz ends before the cursor \(the gzip archive is truncated\)"):
        read(source(path), last)


@pytest.mark.parametrize(
    "cursor",
    [12, "a.csv:3", {"file": "a.csv"}, {"file": "a.csv", "offset": -1, "line": 1, "crc": 0}, {"items": 3}],
)
def test_a_cursor_that_is_not_a_position_is_refused(tmp_path, cursor):
    path = write(tmp_path / "a.csv", "id\n1\n")
    with pytest.raises(SourceError, match="is not a position in files"):
        source(path).read(cursor)


def test_a_position_inside_the_header_is_refused(tmp_path):
    path = write(tmp_path / "a.csv", "id\n1\n")
    with pytest.raises(SourceError, match="points inside the header"):
        read(source(path), {"file": "a.csv", "offset": 1, "line": 1, "crc": 0})


# -------------------------------------------------------------------------------------------- bad input


def test_ragged_rows_are_item_errors_naming_the_counts(tmp_path):
    path = write(tmp_path / "a.csv", "a,b,c\n1,2\n1,2,3,4\n1,2,3\n")
    assert seen(read(source(path))) == [
        ("a.csv:2", None, "the row has 2 fields, the header has 3"),
        ("a.csv:3", None, "the row has 4 fields, the header has 3"),
        ("a.csv:4", {"a": "1", "b": "2", "c": "3"}, ""),
    ]
    assert read(source(path))[0].excerpt == "1,2"


def test_undecodable_bytes_are_item_errors_with_the_line(tmp_path):
    path = write(tmp_path / "a.csv", b'id,n\n1,"caf\xe9\nau lait"\n2,ok\n')
    bad, good = read(source(path, encoding="utf-8"))
    assert (bad.ref, bad.error) == ("a.csv:2", "line 2 is not valid utf-8 text (invalid continuation byte at byte 7)")
    assert bad.excerpt == '1,"caf\\xe9\n' and good.record == {"id": "2", "n": "ok"}
    # The same bytes are fine in the right encoding, named or detected.
    assert read(source(path, encoding="latin-1"))[0].record == {"id": "1", "n": "café\nau lait"}
    assert read(source(path))[0].record == {"id": "1", "n": "café\nau lait"}


def test_undecodable_ndjson_lines_are_item_errors(tmp_path):
    path = write(tmp_path / "e.ndjson", b'{"a": "\xff"}\n{"a": 1}\n')
    bad, good = read(source(path, encoding="utf-8"))
    assert bad.error == "line 1 is not valid utf-8 text (invalid start byte at byte 8)"
    assert bad.excerpt == '{"a": "\\xff"}\n' and good.record == {"a": 1}


def test_nul_bytes_after_the_start_are_item_errors(tmp_path):
    path = write(tmp_path / "a.csv", "id,n\n" + "1,x\n" * 3000 + "2,a\x00b\n3,y\n")
    items = read(source(path))
    assert items[-2].ref == "a.csv:3002" and items[-2].error == "line 3002 contains NUL bytes"
    assert items[-2].excerpt == "2,a\\x00b\n"
    assert items[-1].record == {"id": "3", "n": "y"}


@pytest.mark.parametrize(
    "content", [b"PK\x03\x04\x14\x00\x00\x00\x08\x00", b"id,n\n1,\x00\x00\x00\n", bytes(range(256)) * 4]
)
def test_a_binary_file_is_refused(tmp_path, content):
    path = write(tmp_path / "orders.csv", content)
    with pytest.raises(
        SourceError, match=r"orders.csv is (not a text file: its first 8 KB have NUL bytes|a zip archive)"
    ):
        read(source(path))


def test_a_binary_file_in_a_glob_stops_the_read_after_the_files_before_it(tmp_path):
    write(tmp_path / "a-1.ndjson", '{"a": 1}\n')
    write(tmp_path / "a-2.ndjson", b"\x00\x01\x02binary", gz=True)
    write(tmp_path / "a-3.ndjson", '{"a": 3}\n')
    items = []
    with pytest.raises(SourceError, match="a-2.ndjson is not a text file.*remove the gzip archive"):
        items.extend(source(tmp_path / "a-*.ndjson").read())
    assert [i.record for i in items] == [{"a": 1}]
    # Once it is removed, the next read goes on after the last item read.
    (tmp_path / "a-2.ndjson").unlink()
    assert [i.record for i in read(source(tmp_path / "a-*.ndjson"), items[-1].position)] == [{"a": 3}]


@pytest.mark.parametrize("content", ["", "\n\n  \n", "id,n\n", "id,n\r\n\r\n"])
def test_an_empty_or_header_only_file_yields_nothing(tmp_path, content):
    assert read(source(write(tmp_path / "a.csv", content))) == []
    assert read(source(write(tmp_path / "b.csv.gz", content, gz=True), delimiter="auto")) == []


def test_an_empty_ndjson_file_yields_nothing(tmp_path):
    assert read(source(write(tmp_path / "e.ndjson", ""))) == []


@pytest.mark.parametrize(
    "header, message",
    [
        ("id,email,n,email,id", r"a.csv: the header names a column more than once: 'id' \(columns 1, 5\); 'email' \("),
        ("id,,n, ", r"a.csv: the header has columns without a name \(column 2, 4\)"),
        (",,", "a.csv: the first line must name the columns"),
    ],
)
def test_a_bad_header_is_refused_naming_the_problem(tmp_path, header, message):
    path = write(tmp_path / "a.csv", header.encode("latin-1") + b"\n1,2\n")
    with pytest.raises(SourceError, match=message):
        read(source(path))


def test_a_header_that_is_not_text_in_the_named_encoding_is_refused(tmp_path):
    path = write(tmp_path / "a.csv", b"id,n\xff\n1,2\n")
    with pytest.raises(SourceError, match="a.csv: the header cannot be read: line 1 is not valid utf-8 text"):
        read(source(path, encoding="utf-8"))


def test_a_header_with_a_nul_byte_after_the_first_8_kb(tmp_path):
    path = write(tmp_path / "a.csv", "\n" * 9000 + 'id,"n\x00"\n1,2\n')
    with pytest.raises(SourceError, match="a.csv: the header cannot be read: line 9001 contains NUL bytes"):
        read(source(path))


def test_a_bare_cr_outside_quotes_ends_the_row(tmp_path):
    path = write(tmp_path / "a.csv", "id,n\n1,a\rb\n2,c\n")
    assert seen(read(source(path))) == [
        ("a.csv:2", {"id": "1", "n": "a"}, ""),
        ("a.csv:3", None, "the row has 1 fields, the header has 2"),
        ("a.csv:4", {"id": "2", "n": "c"}, ""),
    ]


def test_a_line_over_the_limit_is_skipped_not_loaded(tmp_path, chunk):
    path = write(tmp_path / "a.csv", "id,n\n1,a\n2," + "x" * 5000 + "\n3,c\n4," + "y" * 3000)
    src = FileSource.from_config({"path": str(path)}, max_record_bytes=1000)
    items = assert_resumes_after_every_item(src)
    assert seen(items) == [
        ("a.csv:2", {"id": "1", "n": "a"}, ""),
        ("a.csv:3", None, "line 3 is longer than 1000 bytes; it was skipped"),
        ("a.csv:4", {"id": "3", "n": "c"}, ""),
        ("a.csv:5", None, "line 5 is longer than 1000 bytes; it was skipped"),
    ]


def test_an_unclosed_quote_is_cut_at_the_limit_and_reading_goes_on(tmp_path):
    rows = "".join(f"{i},row{i}\n" for i in range(3, 200))
    path = write(tmp_path / "a.csv", f'id,n\n1,"unclosed\n{rows}')
    src = FileSource.from_config({"path": str(path)}, max_record_bytes=500)
    items = read(src)
    assert items[0].ref == "a.csv:2"
    assert items[0].error.startswith("the record from line 2 to line ")
    assert items[0].error.endswith("is larger than 500 bytes (an unclosed quote?); it was skipped")
    assert items[-1].record == {"id": "199", "n": "row199"}
    assert all(i.record for i in items[1:])


def test_a_long_ndjson_line_is_skipped(tmp_path):
    path = write(tmp_path / "e.ndjson", '{"a": "' + "x" * 3000 + '"}\n{"a": 1}\n')
    src = FileSource.from_config({"path": str(path)}, max_record_bytes=1000)
    assert seen(read(src)) == [
        ("e.ndjson:1", None, "line 1 is longer than 1000 bytes; it was skipped"),
        ("e.ndjson:2", {"a": 1}, ""),
    ]


def test_a_truncated_gzip_file_yields_what_it_holds_then_says_so(tmp_path, chunk):
    text = "id,n\n" + "".join(f"{i},name {i}\n" for i in range(2000))
    data = gzip.compress(text.encode())
    path = tmp_path / "orders.csv.gz"
    path.write_bytes(data[: len(data) // 2])
    items = []
    with pytest.raises(SourceError) as raised:
        items.extend(source(path).read())
    n = len(items)
    assert 100 < n < 2000
    assert [i.record["id"] for i in items] == [str(i) for i in range(n)]
    assert str(raised.value) == (
        f"orders.csv.gz: the gzip archive is truncated after line {n + 1}; the rest of the file cannot be read"
    )
    # Once the upload completes, the next read goes on after the last item read.
    path.write_bytes(data)
    rest = read(source(path), items[-1].position)
    assert [i.record["id"] for i in rest] == [str(i) for i in range(n, 2000)]


def test_a_truncated_gzip_file_loses_nothing_silently_at_any_cut(tmp_path):
    data = gzip.compress(b"id\n" + b"".join(b"%d\n" % i for i in range(50)))
    for cut in range(2, len(data)):  # one byte is not recognisably gzip
        path = tmp_path / "a.csv.gz"
        path.write_bytes(data[:cut])
        items = []
        with pytest.raises(SourceError, match="a.csv.gz: the gzip archive is (truncated|corrupt)"):
            items.extend(source(path).read())
        assert [i.record["id"] for i in items] == [str(i) for i in range(len(items))]


def test_a_corrupt_gzip_file_says_so(tmp_path):
    data = bytearray(gzip.compress(b"id\n" + b"".join(b"%d\n" % i for i in range(5000))))
    data[len(data) // 2] ^= 0xFF
    path = tmp_path / "a.csv.gz"
    path.write_bytes(data)
    with pytest.raises(SourceError, match=r"a.csv.gz: the gzip archive is corrupt \(Error -3"):
        read(source(path))


def test_data_after_a_gzip_archive_says_so(tmp_path):
    path = tmp_path / "a.csv.gz"
    path.write_bytes(gzip.compress(b"id\n1\n") + b"trailing junk")
    items = []
    with pytest.raises(
        SourceError, match="a.csv.gz: the file has data after the end of its gzip archive that is not gzip"
    ):
        items.extend(source(path).read())
    assert [i.record for i in items] == [{"id": "1"}]


def test_a_missing_path_is_a_source_error(tmp_path):
    with pytest.raises(SourceError, match=f"^the file {tmp_path / 'gone.csv'} does not exist$"):
        source(tmp_path / "gone.csv").read()
    with pytest.raises(SourceError, match=f"^{tmp_path} is a folder, not a file$"):
        source(tmp_path, format="csv").read()
    with pytest.raises(SourceError, match=f"^the folder {tmp_path / 'nowhere'} does not exist$"):
        source(tmp_path / "nowhere" / "*.csv").read()
    assert read(source(tmp_path / "*.csv")) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads anything")
def test_an_unreadable_file_is_a_source_error(tmp_path):
    path = write(tmp_path / "a.csv", "id\n1\n")
    path.chmod(0)
    with pytest.raises(SourceError, match=f"the file {path} cannot be read \\(Permission denied\\)"):
        read(source(path))


def test_file_names_that_are_not_utf8_are_shown_escaped(tmp_path):
    name = os.fsdecode(b"caf\xe9.csv")
    write(tmp_path / name, "id\n1\n")
    [item] = read(source(tmp_path / "*.csv"))
    assert item.ref == "caf\\xe9.csv:2" and item.position["file"] == "caf\\xe9.csv"
    assert read(source(tmp_path / "*.csv"), item.position) == []


# -------------------------------------------------------------------------------------------- memory


def peak_memory(src: FileSource) -> tuple[int, int]:
    tracemalloc.start()
    try:
        count = sum(1 for _ in src.read())
        return count, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_stays_flat_reading_gzip_with_multiline_records(tmp_path):
    path = tmp_path / "big.csv.gz"
    with gzip.open(path, "wt", compresslevel=1) as f:
        f.write("id,user,note\n")
        for i in range(5_000):
            f.write(f'{i},u{i % 97},"line one of {i}\nline two, {"x" * 1000}"\n')
    count, peak = peak_memory(source(path))
    assert count == 5_000
    assert peak < 1_000_000


def test_a_huge_line_is_not_loaded(tmp_path):
    path = tmp_path / "a.ndjson"
    with open(path, "wb") as f:
        f.write(b'{"a": "' + b"x" * 20_000_000 + b'"}\n{"a": 1}\n')
    src = FileSource.from_config({"path": str(path)}, max_record_bytes=1_000_000)
    tracemalloc.start()
    try:
        items = read(src)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [i.record for i in items] == [None, {"a": 1}]
    assert peak < 3_000_000


def test_a_gzip_bomb_is_decompressed_a_little_at_a_time(tmp_path):
    path = tmp_path / "bomb.ndjson.gz"
    path.write_bytes(gzip.compress(b'{"a": 1}\n' + b" " * 50_000_000 + b"\n", compresslevel=9))
    assert path.stat().st_size < 100_000
    src = FileSource.from_config({"path": str(path)}, max_record_bytes=1_000_000)
    count, peak = peak_memory(src)
    assert count == 2  # the record, then the over-long line of spaces
    assert peak < 3_000_000


@pytest.mark.slow
def test_memory_stays_flat_reading_a_50_mb_csv(tmp_path):
    path = tmp_path / "big.csv"
    note = "n" * 900
    with open(path, "w") as f:
        f.write("id,user,email,note\n")
        for i in range(54_000):
            f.write(f'{i},u{i % 1000},user{i}@example.com,"{note}, {i}"\n')
    assert path.stat().st_size > 50_000_000
    count, peak = peak_memory(source(path))
    assert count == 54_000
    assert peak < 2_000_000


def test_crc_is_of_the_bytes_before_the_position(tmp_path):
    path = write(tmp_path / "a.csv", "id\n1\n")
    [item] = read(source(path))
    crc = zlib.crc32(b"id\n1\n")
    assert item.position == {"file": "a.csv", "offset": 5, "line": 2, "crc": crc, "encoding": "utf-8"}
