"""CSV (with a header) and NDJSON files, streamed: memory stays flat whatever the file size."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterator
from itertools import islice

import orjson

from feeds.sources import Item, SourceError

EXCERPT = 300
# A single CSV field may be large (a JSON blob), but not unbounded.
csv.field_size_limit(16 * 1024 * 1024)


def _excerpt(text: str | bytes) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return text if len(text) <= EXCERPT else text[:EXCERPT] + "…"


def _open_binary(path: str):
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise SourceError(f"the file {path} does not exist") from None
    except IsADirectoryError:
        raise SourceError(f"{path} is a folder, not a file") from None
    except PermissionError:
        raise SourceError(f"the file {path} cannot be read (permission denied)") from None


def read_csv(path: str, start: int = 0) -> Iterator[Item]:
    """Rows of a CSV file with a header line, as dicts; `start` items are skipped (resume)."""
    name = os.path.basename(path)
    raw = _open_binary(path)
    # utf-8-sig drops a byte-order mark; bad bytes become U+FFFD and the row is refused below.
    text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline="")
    with text:
        reader = csv.reader(text)
        try:
            header = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise SourceError(f"{name}: the header line cannot be read ({e})") from None
        header = [h.strip() for h in header]
        if not any(header):
            raise SourceError(f"{name}: the first line must name the columns")
        width = len(header)
        rows = _rows(reader, name)
        for line, row, error in islice(rows, start, None):
            ref = f"{name}:{line}"
            if error:
                yield Item(ref=ref, error=error)
                continue
            if len(row) != width:
                yield Item(
                    ref=ref,
                    error=f"the row has {len(row)} fields, the header has {width}",
                    excerpt=_excerpt(",".join(row)),
                )
                continue
            joined = "".join(row)
            if "\ufffd" in joined:
                yield Item(ref=ref, error="the row is not valid UTF-8 text", excerpt=_excerpt(",".join(row)))
                continue
            yield Item(ref=ref, record=dict(zip(header, row)))


def _rows(reader, name: str):
    """(line number, row, error) for every row, blank lines skipped; a broken row yields an error."""
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            yield reader.line_num, [], f"the row cannot be parsed as CSV ({e})"
            continue
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        yield reader.line_num, row, ""


def read_ndjson(path: str, start: int = 0) -> Iterator[Item]:
    """One JSON object per line; `start` items are skipped (resume). Blank lines are skipped."""
    name = os.path.basename(path)
    with _open_binary(path) as f:
        items = _ndjson_items(f, name)
        yield from islice(items, start, None)


def _ndjson_items(f, name: str) -> Iterator[Item]:
    for number, line in enumerate(f, start=1):
        if not line.strip():
            continue
        ref = f"{name}:{number}"
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError as e:
            yield Item(ref=ref, error=f"the line is not valid JSON ({e})", excerpt=_excerpt(line))
            continue
        if not isinstance(record, dict):
            yield Item(ref=ref, error=f"expected a JSON object, got {type(record).__name__}", excerpt=_excerpt(line))
            continue
        yield Item(ref=ref, record=record)


READERS = {"csv": read_csv, "ndjson": read_ndjson}


def open_source(kind: str, path: str, start: int = 0) -> Iterator[Item]:
    try:
        reader = READERS[kind]
    except KeyError:
        raise SourceError(f"unknown source kind {kind!r}") from None
    if not os.path.exists(path):
        raise SourceError(f"the file {path} does not exist")
    return reader(path, start)
