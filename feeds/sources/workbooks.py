"""Excel workbooks (.xlsx) read as records: the first non-blank row of a sheet names the columns, each row after
it is a record, read in openpyxl's read-only mode so rows stream as the sheet is decompressed and memory stays
flat whatever the number of rows. What openpyxl holds whole is the shared strings table (each distinct text of
the workbook once); a workbook whose table is over MAX_SHARED_STRINGS_BYTES is refused rather than loaded.

Cells arrive as what they hold: text, whole and decimal numbers, true/false; dates and times as ISO 8601 text
(2026-01-31T09:30:00); an empty cell as "" (as in a CSV file); formulas as their last computed value.

A row's position is ``{"file": name, "offset": row, "line": row, "crc": ...}`` with the CRC-32 of the row's
values: resuming reads the sheet again up to that row (streamed, not kept), checks that it is unchanged (else
SourceError: the workbook was replaced) and goes on with the rows after it, so rows added at the end are read
by the next incremental run.
"""

from __future__ import annotations

import datetime as dt
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator
from typing import IO, Any

import orjson

from feeds.sources import Item, SourceError
from feeds.sources.files import OLE_MAGIC, ZIP_MAGIC, _check_header, _excerpt, _size

MAX_SHARED_STRINGS_BYTES = 256 * 1024 * 1024


def xlsx_items(
    name: str, f: IO[bytes], magic: bytes, sheet: str, cursor: dict | None, limit: int, note: Callable[[str], None]
) -> Iterator[Item]:
    """The records of one sheet of the workbook open in `f` (its first bytes: `magic`), after `cursor`; `note`
    is told which sheet is read."""
    if magic.startswith(OLE_MAGIC):
        raise SourceError(
            f"{name} is an Excel 97-2003 (.xls) or a password-protected workbook, which cannot be read: save it "
            "as .xlsx without a password, or as CSV"
        )
    if not magic.startswith(ZIP_MAGIC):
        raise SourceError(f"{name} is not an .xlsx workbook (it is not a zip archive)")
    workbook = _open(name, f)
    try:
        if sheet:
            if sheet not in workbook.sheetnames:
                known = ", ".join(repr(s) for s in workbook.sheetnames)
                raise SourceError(f"{name} has no sheet {sheet!r} (its sheets: {known})")
            ws = workbook[sheet]
        else:
            ws = workbook.worksheets[0]
        if not hasattr(ws, "reset_dimensions"):
            raise SourceError(f"{name}: the sheet {ws.title!r} is a chart, not a table of cells")
        note(f"xlsx workbook, sheet {ws.title!r}")
        ws.reset_dimensions()  # the size a writer declared may be wrong: read every row there is
        yield from _rows(name, ws.iter_rows(values_only=True), cursor, limit)
    except SourceError:
        raise
    except (zipfile.BadZipFile, zlib.error, KeyError, ValueError, TypeError, EOFError) as e:
        raise SourceError(f"{name}: the workbook is damaged and cannot be read further ({e})") from None
    finally:
        workbook.close()


def _open(name: str, f: IO[bytes]) -> Any:
    from openpyxl import load_workbook

    try:
        with zipfile.ZipFile(f) as archive:
            names = {info.filename: info for info in archive.infolist()}
            if "xl/workbook.xml" not in names:
                raise SourceError(f"{name} is a zip archive but not an .xlsx workbook")
            strings = names.get("xl/sharedStrings.xml")
            if strings is not None and strings.file_size > MAX_SHARED_STRINGS_BYTES:
                raise SourceError(
                    f"{name}: its table of texts is {_size(strings.file_size)}, over "
                    f"{_size(MAX_SHARED_STRINGS_BYTES)}; export the sheet as CSV instead"
                )
        f.seek(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "data validation not supported" and the like: nothing for us
            return load_workbook(f, read_only=True, data_only=True, keep_links=False)
    except SourceError:
        raise
    except (zipfile.BadZipFile, zlib.error, KeyError, ValueError, TypeError, EOFError, OSError) as e:
        raise SourceError(f"{name} is not a readable .xlsx workbook ({e})") from None
    except Exception as e:  # openpyxl's own InvalidFileException, XML errors from a damaged part
        raise SourceError(f"{name} is not a readable .xlsx workbook ({type(e).__name__}: {e})") from None


def _rows(name: str, rows: Iterator[tuple], cursor: dict | None, limit: int) -> Iterator[Item]:
    header: list[str] | None = None
    after = cursor["line"] if cursor else 0
    reached = False
    for number, row in enumerate(rows, 1):
        values = [_value(v) for v in row]
        if header is None:
            if not any(v != "" for v in values):
                continue
            while values and values[-1] == "":
                values.pop()
            header = [str(v).strip() for v in values]
            _check_header(name, header)
            if cursor is not None and number > after:
                raise SourceError(f"{name}: the cursor (row {after}) points inside the header; reset the cursor")
            continue
        if number < after:
            continue
        reached = True
        position = {"file": name, "offset": number, "line": number, "crc": _crc(values)}
        if number == after:
            if position["crc"] != cursor["crc"]:  # type: ignore[index]
                raise SourceError(
                    f"{name} changed at row {after}: it was replaced or rewritten, not added to; reset the cursor "
                    "to read it again"
                )
            continue
        if not any(v != "" for v in values):
            continue
        ref = f"{name}:{number}"
        extra = [i for i, v in enumerate(values[len(header) :], len(header) + 1) if v != ""]
        size = len(orjson.dumps(values))
        if extra:
            yield Item(
                ref=ref,
                error=f"the row has values beyond the header's {len(header)} columns (column {extra[0]})",
                excerpt=_excerpt(orjson.dumps(values).decode()),
                position=position,
            )
        elif size > limit:
            yield Item(ref=ref, error=f"row {number} is larger than {_size(limit)}; it was skipped", position=position)
        else:
            values += [""] * (len(header) - len(values))
            yield Item(ref=ref, record=dict(zip(header, values)), position=position)
    if cursor is not None and not reached:
        raise SourceError(
            f"{name} has fewer rows than when it was last read (row {after}): it was replaced or truncated; reset "
            "the cursor to read it again"
        )


def _value(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, (str, bool, int, float)):
        return v
    if isinstance(v, (dt.datetime, dt.date, dt.time)):
        return v.isoformat()
    if isinstance(v, dt.timedelta):
        return str(v)
    return str(v)


def _crc(values: list) -> int:
    return zlib.crc32(orjson.dumps(values))
