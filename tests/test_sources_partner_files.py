"""Files as partners have them: mixed line endings, byte-order marks, UTF-16 (Excel's "Unicode text"), legacy
encodings detected or named, JSON arrays (pretty-printed, streamed), .xlsx workbooks, gzip of any of them; the
choice shown on the run; and the refusals of what still cannot be read, each naming file, line and reason."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import tracemalloc
import zipfile

import pytest
from django.urls import reverse
from openpyxl import Workbook

from feeds.models import SyncRun
from feeds.sources import SourceError, files
from feeds.sources.files import FileSource
from tests.helpers import make_job, make_workspace, purchase_rows, run_job
from tests.test_sources_files import assert_resumes_after_every_item, read, seen, source, write


@pytest.fixture(params=[7, files.CHUNK], ids=["tiny-chunks", "64k-chunks"])
def chunk(request, monkeypatch):
    """Line breaks (a CR and its LF), UTF-16 characters and JSON values cut at every place, or as in production."""
    monkeypatch.setattr(files, "CHUNK", request.param)
    return request.param


ENDINGS = ("\r\n", "\n", "\r")


def mixed_csv(n: int = 20) -> str:
    """A header and n rows, line endings cycling through CRLF, LF and bare CR; a quoted field spans lines."""
    lines = ["id,name,note"]
    for i in range(1, n + 1):
        note = '"two' + ENDINGS[i % 3] + 'lines"' if i == 7 else "ok"
        lines.append(f"{i},name {i},{note}")
    return "".join(line + ENDINGS[k % 3] for k, line in enumerate(lines))


# -------------------------------------------------------------------------------------------- line endings


def test_mixed_crlf_lf_and_bare_cr_keep_every_row(tmp_path, chunk):
    path = write(tmp_path / "orders.csv", mixed_csv())
    items = assert_resumes_after_every_item(source(path))
    assert [i.record["id"] for i in items] == [str(i) for i in range(1, 21)]
    assert all(not i.error for i in items)
    assert items[6].record["note"] == "two\nlines"  # row 7: its quoted line break kept as written (LF)
    assert [i.ref for i in items[:3]] == ["orders.csv:2", "orders.csv:3", "orders.csv:4"]


def test_a_file_of_bare_crs_ending_in_cr_and_read_on_after_lines_are_appended(tmp_path, chunk):
    path = write(tmp_path / "old-mac.csv", "id,n\r1,a\r2,b\r")
    items = assert_resumes_after_every_item(source(path))
    assert [(i.ref, i.record) for i in items] == [
        ("old-mac.csv:2", {"id": "1", "n": "a"}),
        ("old-mac.csv:3", {"id": "2", "n": "b"}),
    ]
    with open(path, "ab") as f:
        f.write(b"3,c\r4,d")
    assert seen(read(source(path), items[-1].position)) == [
        ("old-mac.csv:4", {"id": "3", "n": "c"}, ""),
        ("old-mac.csv:5", {"id": "4", "n": "d"}, ""),
    ]


def test_ndjson_with_mixed_line_endings(tmp_path, chunk):
    path = write(tmp_path / "e.ndjson", '{"a": 1}\r{"a": 2}\r\n{"a": 3}\n{"a": 4}')
    items = assert_resumes_after_every_item(source(path))
    assert [i.record for i in items] == [{"a": 1}, {"a": 2}, {"a": 3}, {"a": 4}]


# -------------------------------------------------------------------------------------------- encodings


def test_utf8_with_a_byte_order_mark(tmp_path):
    path = write(tmp_path / "bom.csv", "\ufeffid;name\r\n1;Zoë\r\n")
    src = source(path)
    assert [i.record for i in read(src)] == [{"id": "1", "name": "Zoë"}]
    assert src.notes == ["bom.csv: csv, utf-8 (byte-order mark), delimiter ';' (detected)"]


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
def test_excel_unicode_text_utf16_with_a_byte_order_mark(tmp_path, chunk, codec):
    # Excel's "Unicode text": UTF-16 (little-endian on Windows) with a BOM, TAB between fields, CRLF.
    text = '\ufeffid\tname\tcity\r\n1\tZoë\tKöln\r\n2\t日本\t東京\r\n3\t"a\r\nb"\tRhône\r\n'
    path = write(tmp_path / "export.txt", text.encode(codec))
    src = source(path)
    items = assert_resumes_after_every_item(src)
    assert [i.record for i in items] == [
        {"id": "1", "name": "Zoë", "city": "Köln"},
        {"id": "2", "name": "日本", "city": "東京"},
        {"id": "3", "name": "a\r\nb", "city": "Rhône"},
    ]
    assert src.notes == [f"export.txt: csv, {codec} (byte-order mark), delimiter TAB (detected)"]
    # Resumed mid-file, from the second row's position: exactly the rows after it.
    assert [i.record["id"] for i in read(source(path), items[0].position)] == ["2", "3"]


def test_utf16_with_a_bom_under_gzip_and_bare_crs(tmp_path, chunk):
    path = write(tmp_path / "export.txt.gz", "\ufeffid\tn\r1\ta\r2\tb\r".encode("utf-16-le"), gz=True)
    items = assert_resumes_after_every_item(source(path))
    assert [i.record for i in items] == [{"id": "1", "n": "a"}, {"id": "2", "n": "b"}]


def test_utf16_without_a_byte_order_mark_is_detected_when_it_is_plainly_so(tmp_path):
    path = write(tmp_path / "a.csv", "id,name\n1,Zoë\n".encode("utf-16-le"))
    src = source(path)
    assert [i.record for i in read(src)] == [{"id": "1", "name": "Zoë"}]
    assert src.notes == ["a.csv: csv, utf-16-le (detected), delimiter ',' (detected)"]


@pytest.mark.parametrize("codec", ["latin-1", "cp1252"])
def test_a_latin1_or_cp1252_export_keeps_its_accented_rows(tmp_path, codec):
    rows = ["Prénom;Nom;Ville", "José;Müller;Besançon", "Françoise;Nuñez;Zürich", "Åsa;Øre;Málaga"]
    if codec == "cp1252":
        rows.append("Œdipe;“Quote” – €5;Sète")
    path = write(tmp_path / "clients.csv", "\r\n".join(rows) + "\r\n", encoding=codec)
    src = source(path)
    items = read(src)
    assert [i.error for i in items] == [""] * (len(rows) - 1)
    assert items[0].record == {"Prénom": "José", "Nom": "Müller", "Ville": "Besançon"}
    assert items[1].record["Nom"] == "Nuñez"
    if codec == "cp1252":
        assert items[-1].record == {"Prénom": "Œdipe", "Nom": "“Quote” – €5", "Ville": "Sète"}
    assert src.notes == ["clients.csv: csv, cp1252 (detected), delimiter ';' (detected)"]


def test_another_legacy_encoding_is_detected(tmp_path):
    path = write(tmp_path / "ru.csv", "имя,город\nИван,Москва\nПётр,Санкт-Петербург\n", encoding="cp1251")
    src = source(path)
    assert [i.record for i in read(src)][1] == {"имя": "Пётр", "город": "Санкт-Петербург"}
    assert "cp1251 (detected)" in src.notes[0]


def test_a_named_encoding_is_used_as_named(tmp_path):
    path = write(tmp_path / "a.csv", "id,n\n1,café\n", encoding="latin-1")
    src = source(path, encoding="iso-8859-15")
    assert [i.record for i in read(src)] == [{"id": "1", "n": "café"}]
    assert src.notes == ["a.csv: csv, iso8859-15 (named), delimiter ',' (detected)"]
    # Named wrongly, each line that does not decode is refused, naming its line; the others are read.
    bad, good = read(source(write(tmp_path / "b.csv", "id,n\n1,café\n2,ok\n", encoding="latin-1"), encoding="utf-8"))
    assert bad.ref == "b.csv:2" and bad.error.startswith("line 2 is not valid utf-8 text")
    assert good.record == {"id": "2", "n": "ok"}


def test_only_the_start_is_sampled_so_a_later_change_of_encoding_is_refused_by_line(tmp_path):
    path = write(tmp_path / "a.csv", b"id,n\n" + b"1,plain\n" * 20_000 + "2,café\n".encode("latin-1") + b"3,ok\n")
    items = read(source(path))
    assert items[-2].ref == "a.csv:20002" and items[-2].error.startswith("line 20002 is not valid utf-8 text")
    assert items[-1].record == {"id": "3", "n": "ok"}


@pytest.mark.parametrize(
    "content, message",
    [
        (
            b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)),
            r"logo.csv is not a text file: its first 8 KB have NUL",
        ),
        (
            b"PK\x03\x04\x14\x00\x06\x00" + bytes(100),
            r"logo.csv is a zip archive, not text \(an Excel workbook\? name it .xlsx",
        ),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(100), r"logo.csv is an Excel 97-2003 \(.xls\) workbook"),
        # UTF-16 of text that is not mostly ASCII, without a byte-order mark: not told from binary.
        (
            "名前,都市\n日本,東京\n".encode("utf-16-le") + b"\x00\x00",
            r"UTF-16 or UTF-32 without a byte-order mark\? then set encoding",
        ),
    ],
)
def test_what_still_cannot_be_read_is_refused_naming_the_file_and_why(tmp_path, content, message):
    path = write(tmp_path / "logo.csv", content)
    with pytest.raises(SourceError, match=message):
        read(source(path))


def test_utf16_without_a_bom_reads_when_named(tmp_path):
    path = write(tmp_path / "a.csv", "名前,都市\n日本,東京\n".encode("utf-16-be"))
    assert [i.record for i in read(source(path, encoding="utf-16-be"))] == [{"名前": "日本", "都市": "東京"}]


# -------------------------------------------------------------------------------------------- JSON arrays


ARRAY = [{"id": 1, "name": "Ann"}, {"id": 2, "tags": ["a", "b"], "nested": {"q": 'a \\" ] } , quote'}}, 3, {"id": 4}]


def test_a_pretty_printed_json_array_is_read_as_records(tmp_path, chunk):
    path = write(tmp_path / "export.json", json.dumps(ARRAY, indent=2, ensure_ascii=False))
    src = source(path)
    items = assert_resumes_after_every_item(src)
    assert [i.record for i in items] == [ARRAY[0], ARRAY[1], None, ARRAY[3]]
    assert [i.ref for i in items] == ["export.json:2", "export.json:6", "export.json:16", "export.json:17"]
    assert items[2].error == "element 3 of the array is not a JSON object but a number"
    assert src.notes == ["export.json: json, utf-8 (detected)"]


def test_a_compact_json_array_on_one_line_in_utf16_under_gzip(tmp_path, chunk):
    data = "\ufeff" + json.dumps([{"n": "Zoë"}, {"n": "日本"}, {"n": "x"}], ensure_ascii=False)
    path = write(tmp_path / "export.json.gz", data.encode("utf-16-le"), gz=True)
    src = source(path)
    items = assert_resumes_after_every_item(src)
    assert [i.record for i in items] == [{"n": "Zoë"}, {"n": "日本"}, {"n": "x"}]
    assert [i.ref for i in items] == ["export.json.gz:1"] * 3
    assert src.notes == ["export.json.gz: json, utf-16-le (byte-order mark), gzip"]


def test_a_json_file_of_objects_one_after_the_other(tmp_path, chunk):
    # One object, NDJSON, pretty-printed objects, a line that is not JSON: each value is one record.
    text = '{"a": 1}\n{"a": 2}\r\nnot json\n{\n  "a": 3\n}\n[\n{"a": 4}\n]\n'
    items = assert_resumes_after_every_item(source(write(tmp_path / "e.json", text)))
    assert seen(items)[:2] == [("e.json:1", {"a": 1}, ""), ("e.json:2", {"a": 2}, "")]
    assert items[2].ref == "e.json:3" and items[2].error.startswith("value 3 is not valid JSON")
    assert items[2].excerpt == "not json"
    assert seen(items)[3:] == [("e.json:4", {"a": 3}, ""), ("e.json:8", {"a": 4}, "")]


def test_bad_elements_are_refused_and_the_rest_of_the_array_read(tmp_path):
    text = '[\n  {"a": 1},\n  {"a": NaN},\n  "text",\n  {"a": 2}\n]\n'
    items = read(source(write(tmp_path / "e.json", text)))
    assert seen(items) == [
        ("e.json:2", {"a": 1}, ""),
        ("e.json:3", None, items[1].error),
        ("e.json:4", None, "element 3 of the array is not a JSON object but text"),
        ("e.json:5", {"a": 2}, ""),
    ]
    assert items[1].error.startswith("element 2 of the array is not valid JSON")


def test_a_json_array_cut_short_stops_after_the_elements_before_the_cut(tmp_path):
    path = write(tmp_path / "e.json", '[\n{"a": 1},\n{"a": 2},\n{"a": ')
    items = []
    with pytest.raises(SourceError, match=r"e.json ends inside element 3, from line 4 \(the file is cut short"):
        items.extend(source(path).read())
    assert [i.record for i in items] == [{"a": 1}, {"a": 2}]


def test_a_json_element_over_the_limit_is_skipped_not_held(tmp_path, chunk):
    path = write(
        tmp_path / "e.json", '[{"a": 1},\n{"a": "' + "x" * 5000 + '"},\n{"a": 3}]\n{"b": "' + "y" * 3000 + '"}'
    )
    src = FileSource.from_config({"path": str(path)}, max_record_bytes=1000)
    items = assert_resumes_after_every_item(src)
    assert seen(items) == [
        ("e.json:1", {"a": 1}, ""),
        ("e.json:2", None, "element 2 of the array is larger than 1000 bytes; it was skipped"),
        ("e.json:3", {"a": 3}, ""),
        ("e.json:4", None, "value 4 is larger than 1000 bytes; it was skipped"),
    ]


def test_undecodable_bytes_in_a_json_element_refuse_that_element_only(tmp_path):
    path = write(tmp_path / "e.json", b'[{"a": "caf\xe9"},\n{"a": 2}]')
    items = read(source(path, encoding="utf-8"))
    assert (
        items[0].error == "element 1 of the array is not valid utf-8 text" and items[0].excerpt == '{"a": "caf\\xe9"}'
    )
    assert items[1].record == {"a": 2}
    assert read(source(path, encoding="utf-8"), items[0].position)[0].record == {"a": 2}


def test_a_large_pretty_printed_array_streams_in_flat_memory(tmp_path):
    path = tmp_path / "big.json"
    record = {"id": 0, "email": "someone@example.com", "plan": "pro", "tags": ["a", "b", "c"]}
    with open(path, "w") as f:
        f.write("[\n")
        f.write(",\n".join(json.dumps({**record, "id": i}, indent=2) for i in range(12_000)))
        f.write("\n]\n")
    assert path.stat().st_size > 1_000_000
    tracemalloc.start()
    n = sum(1 for i in source(path).read() if i.record)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert n == 12_000
    assert peak < 600_000, peak  # a chunk and a value at a time, not the file


# -------------------------------------------------------------------------------------------- xlsx


def workbook(path, rows, *, title="Orders", more=()):
    wb = Workbook()
    ws = wb.active
    ws.title = title
    for row in rows:
        ws.append(row)
    for name, extra in more:
        sheet = wb.create_sheet(name)
        for row in extra:
            sheet.append(row)
    wb.save(path)
    return path


def test_an_xlsx_sheet_is_read_as_records(tmp_path):
    when = dt.datetime(2026, 1, 31, 9, 30)
    path = workbook(
        tmp_path / "orders.xlsx",
        [
            [],
            ["id", "email", "amount", "paid", "when"],
            [1, "a@x.io", 12.5, True, when],
            [],
            [2, "b@x.io"],
            [3, "c", 1, False, when, "extra"],
        ],
        more=[("Other", [["k"], ["v"]])],
    )
    src = source(path)
    items = read(src)
    assert seen(items) == [
        (
            "orders.xlsx:3",
            {"id": 1, "email": "a@x.io", "amount": 12.5, "paid": True, "when": "2026-01-31T09:30:00"},
            "",
        ),
        ("orders.xlsx:5", {"id": 2, "email": "b@x.io", "amount": "", "paid": "", "when": ""}, ""),
        ("orders.xlsx:6", None, "the row has values beyond the header's 5 columns (column 6)"),
    ]
    assert src.notes == ["orders.xlsx: xlsx workbook, sheet 'Orders'"]
    assert [i.record for i in read(source(path, sheet="Other"))] == [{"k": "v"}]
    with pytest.raises(SourceError, match=r"orders.xlsx has no sheet 'Nope' \(its sheets: 'Orders', 'Other'\)"):
        read(source(path, sheet="Nope"))


def test_an_xlsx_sheet_resumes_after_any_row_and_reads_rows_added_later(tmp_path):
    rows = [["id", "n"], [1, "a"], [2, "b"], [3, "c"]]
    path = workbook(tmp_path / "o.xlsx", rows)
    items = assert_resumes_after_every_item(source(path))
    workbook(path, rows + [[4, "d"]])  # saved again with a row more
    assert [i.record for i in read(source(path), items[-1].position)] == [{"id": 4, "n": "d"}]
    workbook(path, [["id", "n"], [1, "a"], [2, "CHANGED"], [3, "c"]])
    with pytest.raises(SourceError, match=r"o.xlsx changed at row 3: it was replaced or rewritten"):
        read(source(path), items[1].position)
    workbook(path, rows[:2])
    with pytest.raises(SourceError, match=r"o.xlsx has fewer rows than when it was last read \(row 4\)"):
        read(source(path), items[2].position)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"id,n\n1,2\n", r"bad.xlsx is not an .xlsx workbook \(it is not a zip archive\)"),
        (
            b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(600),
            r"bad.xlsx is an Excel 97-2003 \(.xls\) or a password-protected",
        ),
        (None, r"bad.xlsx is a zip archive but not an .xlsx workbook"),
    ],
)
def test_what_is_not_an_xlsx_workbook_is_refused(tmp_path, content, message):
    path = tmp_path / "bad.xlsx"
    if content is None:
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("hello.txt", "hi")
    else:
        path.write_bytes(content)
    with pytest.raises(SourceError, match=message):
        read(source(path))


def test_xlsx_settings(tmp_path):
    assert source("/data/a.xlsx").format == "xlsx"
    assert source("/data/a.txt").format == "csv" and source("/data/a.json").format == "json"
    with pytest.raises(SourceError, match="a sheet applies to xlsx workbooks only"):
        source("/data/a.csv", sheet="Orders")
    with pytest.raises(SourceError, match="an .xlsx workbook has no encoding or compression to set"):
        source("/data/a.xlsx", encoding="utf-8")


# -------------------------------------------------------------------------------------------- a run


@pytest.mark.django_db
def test_a_mixed_endings_latin1_csv_run_delivers_every_good_row_and_shows_what_was_chosen(sandbox, tmp_path, staff):
    rows = purchase_rows(20, users=5)
    for r in rows:
        r["first_name"] = "Renée"
    names = list(rows[0])
    lines = [",".join(names)] + [",".join(r[n] for n in names) for r in rows]
    text = "".join(line + ENDINGS[k % 3] for k, line in enumerate(lines))
    path = write(tmp_path / "partner.csv", text, encoding="cp1252")
    run = run_job(make_job(make_workspace(sandbox), path))
    assert run.status == SyncRun.Status.SUCCEEDED, run.error
    assert run.records_read == 20 and run.records_rejected == 0
    assert run.events == run.events_accepted == 20
    ids = sorted(e["data"]["source_message_id"] for e in sandbox.events())
    assert len(set(ids)) == 20
    assert {k.batch["user_attributes"]["$firstname"] for k in sandbox.kept()} == {"Renée"}
    assert run.source_notes == ["partner.csv: csv, cp1252 (detected), delimiter ',' (detected)"]
    page = staff.get(reverse("feeds:run", args=[run.pk])).content.decode()
    assert "read as: partner.csv: csv, cp1252 (detected), delimiter &#x27;,&#x27; (detected)" in page


@pytest.mark.django_db
def test_a_pretty_printed_json_array_run_delivers_every_record(sandbox, tmp_path):
    path = write(tmp_path / "partner.json", json.dumps(purchase_rows(12, users=4), indent=4))
    job = make_job(make_workspace(sandbox), path)
    job.source_config = {"path": str(path)}
    job.save()
    run = run_job(job)
    assert run.status == SyncRun.Status.SUCCEEDED, run.error
    assert run.records_read == 12 and run.events_accepted == 12
    assert run.source_notes == ["partner.json: json, utf-8 (detected)"]


@pytest.mark.django_db
def test_an_xlsx_run_delivers_every_row(sandbox, tmp_path):
    rows = purchase_rows(6, users=3)
    path = workbook(tmp_path / "partner.xlsx", [list(rows[0])] + [list(r.values()) for r in rows])
    job = make_job(make_workspace(sandbox), path)
    job.source_config = {"path": str(path)}
    job.save()
    run = run_job(job)
    assert run.status == SyncRun.Status.SUCCEEDED, run.error
    assert run.events_accepted == 6
    assert run.source_notes == ["partner.xlsx: xlsx workbook, sheet 'Orders'"]


def test_gzip_of_a_json_array(tmp_path):
    path = write(tmp_path / "e.json.gz", gzip.decompress(gzip.compress(b'[{"a": 1}]')), gz=True)
    assert [i.record for i in read(source(path))] == [{"a": 1}]


def test_objects_appended_to_a_json_file_are_read_by_the_next_incremental_read(tmp_path, chunk):
    path = write(tmp_path / "e.json", '{"a": 1}\n{"a": 2}\n')
    items = read(source(path))
    with open(path, "a") as f:
        f.write('{\n  "a": 3\n}\n')
    assert seen(read(source(path), items[-1].position)) == [("e.json:3", {"a": 3}, "")]
    path.write_text('{"a": 9}\n{"a": 2}\n{"a": 3}\n')  # rewritten, not appended to
    with pytest.raises(SourceError, match="e.json changed before line 1: it was replaced or rewritten"):
        read(source(path), items[0].position)


def test_bytes_that_are_not_utf16_stop_a_json_file_naming_the_line(tmp_path):
    data = '\ufeff[\n{"a": 1},\n'.encode("utf-16-le") + b"\x00\xd8" + "]".encode("utf-16-le")
    items = []
    with pytest.raises(SourceError, match=r"e.json: line 3 is not valid utf-16-le text \(illegal UTF-16 surrogate"):
        items.extend(source(write(tmp_path / "e.json", data)).read())
    assert [i.record for i in items] == [{"a": 1}]


def test_an_xlsx_workbook_is_not_read_from_gzip(tmp_path):
    path = workbook(tmp_path / "o.xlsx", [["id"], [1]])
    gz = write(tmp_path / "o.xlsx.gz", path.read_bytes(), gz=True)
    with pytest.raises(SourceError, match="o.xlsx.gz: an .xlsx workbook cannot be read from a gzip archive"):
        read(source(gz, format="xlsx"))


def test_a_resumed_run_notes_each_choice_once():
    from feeds.reading import MAX_SOURCE_NOTES, _merge_notes

    assert _merge_notes(["a.csv: csv"], ["a.csv: csv", "b.csv: csv"]) == ["a.csv: csv", "b.csv: csv"]
    assert len(_merge_notes([], [f"{i}.csv" for i in range(50)])) == MAX_SOURCE_NOTES
    assert _merge_notes([], None) == []


def test_a_resumed_read_keeps_the_encoding_detected_when_the_file_was_first_read(tmp_path):
    path = write(tmp_path / "a.csv", "id,n\n1,Zoë\n")  # UTF-8
    items = read(source(path))
    assert items[-1].position["encoding"] == "utf-8"
    with open(path, "ab") as f:
        f.write("2,café\n".encode("cp1252") + "3,Zoë\n".encode())
    # The file's start now reads as cp1252, but the read goes on in the UTF-8 it was begun in.
    assert seen(read(source(path), items[-1].position)) == [
        ("a.csv:3", None, "line 3 is not valid utf-8 text (invalid continuation byte at byte 6)"),
        ("a.csv:4", {"id": "3", "n": "Zoë"}, ""),
    ]
    assert "encoding" not in read(source(path, encoding="utf-8"))[0].position  # named: nothing to keep
