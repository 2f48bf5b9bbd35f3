"""CSV, NDJSON, JSON and .xlsx files, plain or gzip-compressed, one file or a glob, streamed from a cursor.

Settings (a job's source config, checked by `FileSource.from_config`)::

    {"path": "/data/exports/*.csv.gz",  # one file, or a glob when it has * ? or [ ("**" descends folders)
     "format": "csv",                   # "csv" | "ndjson" | "json" | "xlsx"; default from the extension, also
                                        #   under .gz: .csv .tsv .txt → csv, .ndjson .jsonl → ndjson,
                                        #   .json → json, .xlsx → xlsx
     "delimiter": "auto",               # csv only: one character, "tab", or "auto" (sniffed from the header
                                        #   line among , ; TAB |, "," when none is there); default "auto"
                                        #   (TAB for .tsv)
     "encoding": "auto",                # "auto" or any Python text codec; a byte-order mark is dropped
     "compression": "auto",             # "auto" (gzip when the file starts like gzip) | "gzip" | "none"
     "sheet": "Orders",                 # xlsx only: the worksheet (default: the first)
     "incremental": false}              # for the engine (feeds.sources.build): runs go on from the last cursor

Lines end at LF, CRLF or a bare CR, in any mix (a CR inside a quoted CSV field stays in the field). With
"encoding": "auto" the codec is chosen per file from its first 64 KB: a byte-order mark (UTF-8, UTF-16 LE/BE,
UTF-32), else UTF-16 without one when every other byte is NUL, else UTF-8 when those bytes are valid UTF-8, else
the legacy encoding charset-normalizer finds (cp1252 when it fits as well as the best: Excel's "CSV" on Western
Windows). What was chosen for each file (format, codec and how, delimiter and how) is in `notes`, which the engine
keeps on the run. A file that changes encoding past its first 64 KB has those lines refused, by line.

"json" reads a top-level array's elements as records, and outside an array each top-level value (one object,
NDJSON, pretty-printed objects one after the other), streamed by `_JSONScan` without parsing more than the value
at hand: only brackets, commas and quotes are looked at between values. An element that is not an object, is not
JSON, or does not decode is an item error naming its number in the array and its first line; one over
`max_record_bytes` is skipped, not held; a file that ends inside a value stops the read after the values before
it. Positions in JSON files are the byte offset just after a value (within a line, for compact arrays), with
"array" and "index" to go on in step. .xlsx workbooks: see feeds.sources.workbooks.

The source folder
-----------------
Built with a `root` (the engine always gives one: MPFEED_SOURCE_ROOT), a source reads only below that folder. A
relative path is taken from the root. The folder where a glob starts is checked when the source is built; then
every file, after glob expansion with `..` and symbolic links resolved, is checked when listed, and again on the
file actually opened (so a link swapped in between is caught): a file outside the root stops the run with a
SourceError naming it, and nothing of it is read.

Memory stays flat whatever the file size: files are read in 64 KiB chunks (gzip is decompressed 64 KiB at a
time, so a small archive that expands enormously is harmless), and a line or record over `max_record_bytes`
(16 MiB) is reported and skipped up to its next line break, never held beyond that limit.

Positions and what a later read picks up
----------------------------------------
Files are read in sorted order of their name, where a file's name is its path relative to the folder where the
glob starts ("orders-2.csv" for "/data/*.csv", "2026-01/orders.csv" for "/data/*/orders.csv"). Each item's
`position` is ``{"file": name, "offset": 5120, "line": 12, "crc": 2281748929}``: the bytes of the file's text
(after decompression) up to the end of the item's last line, that line's number, and the CRC-32 of the 64
bytes before `offset`; with "encoding": "auto", also the codec detected (``"encoding": "cp1252"``), which a
read from that position uses again rather than detecting anew. `read(position)` yields exactly the items after that item:

- the rest of the file `name` from `offset` (after its CSV header, read again), so lines appended since the
  position are read; a gzip file is decompressed from its start and the bytes before `offset` discarded,
  without parsing them (a gzip member appended to the file reads like appended lines);
- then every file whose name sorts after `name`, from its start.

Files whose names sort before `name` are never read again, even if they are new: name new files so that they
sort after the old ones (a UTC timestamp or a zero-padded sequence number). The last
file may be deleted once read. If that file is now shorter than `offset`, or its bytes before `offset` changed
(it was replaced, not appended to), the read raises SourceError: reading it again could deliver records twice
and skipping it could lose some, so a person decides (for instance by resetting the job's cursor).
Writers should make files appear whole (write under another name and rename; a glob does not match names
starting with a dot) and append whole lines: a last line without a line break is read as it is.

Bad input
---------
An item error (the run goes on) for a record that cannot be read: a CSV row with more or fewer fields than the
header, a line that is not valid text in the encoding, a CSV row with NUL characters, an unparsable CSV row, an
NDJSON line that is not JSON, not an object, uses NaN/Infinity or nests too deep, a line or record over
`max_record_bytes` (an unclosed quote shows up here; parsing starts afresh on the next line).

SourceError (the run stops; the cursor stays before the problem, so once the file is fixed or removed the next
run goes on from there) for bad settings, a missing file or glob folder, a file that cannot be opened, and
whole-file problems: a binary file (NUL bytes in its first 8 KB of text), a CSV header that is blank, has empty
or duplicate column names or cannot be read, a file that is not gzip when "gzip" is set, a gzip archive that is
corrupt or truncated (raised after the items read before the damage), a cursor that no longer fits the files.
An empty file, or a CSV file with only a header, yields nothing. A glob that matches nothing yields nothing.
"""

from __future__ import annotations

import codecs
import csv
import glob
import io
import os
import re
import stat
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from itertools import chain
from pathlib import Path
from typing import Any

import orjson

from feeds.sources import Item, SourceError
from feeds.words import kind

MAX_RECORD_BYTES = 16 * 1024 * 1024
CHUNK = 64 * 1024
SNIFF_BYTES = 8 * 1024  # the start of a file looked at to tell text from binary
WINDOW = 64  # bytes before a position that must be unchanged to resume there
EXCERPT = 300

FORMATS = ("csv", "ndjson", "json", "xlsx")
COMPRESSIONS = ("auto", "gzip", "none")
SETTINGS = ("path", "format", "delimiter", "encoding", "compression", "incremental", "sheet")
# .txt: Excel's "Unicode text" and "Text (tab delimited)" exports, CSV with a TAB found by "auto".
EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
    ".json": "json",
    ".xlsx": "xlsx",
}
DETECT_BYTES = 64 * 1024  # the start of a file an encoding is detected from
MAX_NOTES = 20
SNIFFED = (",", ";", "\t", "|")  # in order of preference when counts tie
GZIP_MAGIC = b"\x1f\x8b"
MAGIC = re.compile(r"[*?[]")


class _Damaged(Exception):
    """The gzip data cannot be decompressed further."""


class _Moved(Exception):
    """The file no longer matches a position in it."""


class _TooLong(Exception):
    def __init__(self, line: int, message: str):
        self.line = line
        self.message = message


# ------------------------------------------------------------------------------------------------ bytes


class _Plain:
    def __init__(self, f):
        self.f = f

    def read(self, n: int) -> bytes:
        return self.f.read(n)

    def skip(self, n: int) -> None:
        self.f.seek(n, os.SEEK_CUR)


class _Gunzip:
    """The content of a gzip file; members one after the other (appended archives) read as one stream."""

    def __init__(self, f):
        self.f = f
        self.z = zlib.decompressobj(31)
        self.first = True  # the current member is the file's first
        self.fresh = True  # the current member has produced nothing yet

    def read(self, n: int) -> bytes:
        while True:
            if self.z.eof:
                data = self.z.unused_data.lstrip(b"\0") or self._more_after_member()
                if not data:
                    return b""
                self.z = zlib.decompressobj(31)
                self.first = False
                self.fresh = True
            elif self.z.unconsumed_tail:
                data = self.z.unconsumed_tail
            else:
                data = self.f.read(CHUNK)
                if not data:
                    raise _Damaged("the gzip archive is truncated")
            try:
                out = self.z.decompress(data, n)  # at most n bytes out, whatever the ratio
            except zlib.error as e:
                if self.fresh and not self.first:
                    raise _Damaged("the file has data after the end of its gzip archive that is not gzip") from None
                raise _Damaged(f"the gzip archive is corrupt ({e})") from None
            if out:
                self.fresh = False
                return out

    def _more_after_member(self) -> bytes:
        while data := self.f.read(CHUNK):
            if data := data.lstrip(b"\0"):  # gzip tolerates zero padding between and after members
                return data
        return b""

    def skip(self, n: int) -> None:
        while n > 0 and (data := self.read(min(n, CHUNK))):
            n -= len(data)


class _Lines:
    """The physical lines of a byte stream, numbered, with the offset after the last one read. A line ends at
    LF, CRLF or a bare CR, in any mix. `WINDOW` bytes before the current offset are kept for `check()`; a line
    over `limit` bytes is skipped, not kept."""

    def __init__(self, stream, limit: int):
        self.stream = stream
        self.limit = limit
        self.set_newline("utf-8")
        self.buf = bytearray()
        self.pos = 0  # index in buf of the next byte to read
        self.base = 0  # offset in the stream of buf[0]
        self.line = 0  # number of the last line read
        self.eof = False
        self.damage: _Damaged | None = None
        self.detected = ""  # the codec detected, kept in positions so that a resumed read uses it again

    @property
    def offset(self) -> int:
        return self.base + self.pos

    def check(self, offset: int | None = None) -> int:
        """The CRC-32 of the WINDOW bytes before `offset` (the current one by default; it must be in the line
        just read)."""
        end = self.pos if offset is None else offset - self.base
        return zlib.crc32(self.buf[max(0, end - WINDOW) : end])

    def set_newline(self, codec: str) -> None:
        """Line breaks as `codec` writes them: utf-16 and utf-32 split only at aligned ones."""
        self.cr, self.lf = "\r".encode(codec), "\n".encode(codec)
        self.unit = len(self.lf)
        self.breaks = re.compile(re.escape(self.cr) + b"|" + re.escape(self.lf))

    def _fill(self) -> bool:
        if self.eof:
            return False
        try:
            data = self.stream.read(CHUNK)
        except _Damaged as e:
            self.damage = e  # raised once the lines before it are read
            data = b""
        if not data:
            self.eof = True
            return False
        drop = self.pos - WINDOW
        if drop > 0:
            del self.buf[:drop]
            self.base += drop
            self.pos -= drop
        self.buf += data
        return True

    def peek(self, n: int) -> bytes:
        while len(self.buf) - self.pos < n and self._fill():
            pass
        return bytes(self.buf[self.pos : self.pos + n])

    def chunk(self) -> bytes:
        """The bytes after the current offset that are at hand (b"" at the end); the offset moves past them.
        Offsets in them can be checked until the next call."""
        if self.pos >= len(self.buf) and not self._fill():
            if self.damage:
                raise self.damage
            return b""
        data = bytes(self.buf[self.pos :])
        self.pos = len(self.buf)
        return data

    def _find(self, start: int) -> tuple[int, int]:
        """(end, scan): the index just after the first line break from `start` (-1 if none yet), and where to
        search again once more bytes arrive. A CR that ends the buffer waits for the next byte (a LF may follow)
        unless the stream has ended."""
        unit = self.unit
        m = self.breaks.search(self.buf, start)
        while m and (self.base + m.start()) % unit:
            m = self.breaks.search(self.buf, m.start() + 1)
        if m is None:
            return -1, len(self.buf) - (self.base + len(self.buf)) % unit
        i = m.start()
        if m.group() == self.lf:
            return i + unit, 0
        after = i + unit
        if after + unit <= len(self.buf):
            return (after + unit if self.buf[after : after + unit] == self.lf else after), 0
        if self.eof:
            return after, 0
        return -1, i

    def readline(self) -> bytes:
        """The next line with its line break; b"" at the end. Raises _TooLong after skipping a long line."""
        start = self.pos
        scan = start
        while True:
            end, again = self._find(scan)
            if end >= 0:
                self.pos = end
                self.line += 1
                if end - start > self.limit:
                    raise self._too_long()
                return bytes(self.buf[start:end])
            if len(self.buf) - start > self.limit:
                return self._skip_long()
            scan = again
            before = self.base
            if not self._fill():
                end, _ = self._find(scan)  # the stream has ended: a last CR is a line break
                if end >= 0:
                    continue
                if self.damage:
                    raise self.damage  # a last line without its line break is cut, not whole
                if start == len(self.buf):
                    return b""
                self.pos = len(self.buf)
                self.line += 1
                return bytes(self.buf[start:])
            start -= self.base - before
            scan -= self.base - before

    def _skip_long(self) -> bytes:
        while True:
            end, again = self._find(self.pos)
            if end >= 0:
                self.pos = end
                break
            self.pos = again  # what was searched can go
            if not self._fill():
                end, _ = self._find(self.pos)
                if end >= 0:
                    self.pos = end
                    break
                if self.damage:
                    raise self.damage
                self.pos = len(self.buf)
                break
        self.line += 1
        raise self._too_long()

    def _too_long(self) -> _TooLong:
        return _TooLong(self.line, f"line {self.line} is longer than {_size(self.limit)}; it was skipped")

    def resume(self, position: dict) -> None:
        """Go on after `position`, having checked that the bytes before it are unchanged."""
        offset = position["offset"]
        if offset < self.offset:
            raise _Moved(f"the cursor (offset {offset}) points inside the header")
        size = min(WINDOW, offset)
        target = offset - size
        end = self.base + len(self.buf)
        if target <= end:
            self.pos = target - self.base
        else:
            self.buf = bytearray()
            self.base, self.pos = target, 0
            try:
                self.stream.skip(target - end)
            except _Damaged as e:
                self.damage, self.eof = e, True
        window = self.peek(size)
        if len(window) < size:
            if self.damage:
                raise _Moved(f"ends before the cursor ({self.damage})")
            raise _Moved("is shorter than when it was last read: it was replaced or truncated")
        if zlib.crc32(window) != position["crc"]:
            raise _Moved(f"changed before line {position['line'] + 1}: it was replaced or rewritten, not appended to")
        self.pos += size
        self.line = position["line"]


# ------------------------------------------------------------------------------------------------ records


class _Feed:
    """Decoded lines for the csv module, noting what the record being parsed needs reported."""

    def __init__(self, lines: _Lines, codec: str, encoding: str, limit: int):
        self.lines = lines
        self.codec = codec
        self.encoding = encoding
        self.limit = limit
        self.start()

    def start(self) -> None:
        self.first = 0  # the record's first line
        self.size = 0
        self.problem = ""
        self.excerpt = ""

    def __iter__(self):
        return self

    def __next__(self) -> str:
        raw = self.lines.readline()
        if not raw:
            raise StopIteration
        n = self.lines.line
        self.first = self.first or n
        self.size += len(raw)
        if self.size > self.limit:
            raise _TooLong(
                self.first,
                f"the record from line {self.first} to line {n} is larger than {_size(self.limit)} "
                "(an unclosed quote?); it was skipped",
            )
        try:
            text = raw.decode(self.codec)
        except UnicodeError as e:
            text = raw.decode(self.codec, "replace")
            self._note(f"line {n} is not valid {self.encoding} text ({_reason(e)})", raw)
        if n == 1:
            text = text.removeprefix("\ufeff")
        if "\0" in text:
            self._note(f"line {n} contains NUL bytes", raw)
        return text

    def _note(self, problem: str, raw: bytes) -> None:
        if not self.problem:
            self.problem = problem
            self.excerpt = _excerpt(raw.decode(self.codec, "backslashreplace"))


@dataclass(frozen=True)
class FileSource:
    """Records from CSV or NDJSON files; build it with `from_config` (see the module docstring)."""

    path: str
    format: str
    delimiter: str = ","
    encoding: str = "auto"
    compression: str = "auto"
    incremental: bool = False  # not used here: the engine's choice of cursor
    sheet: str = ""  # xlsx only: the worksheet to read ("": the first)
    max_record_bytes: int = MAX_RECORD_BYTES
    root: str | None = None  # the folder every file read must be in, symbolic links resolved (None: anywhere)
    # What was chosen for each file read (format, encoding, delimiter), for the run's page.
    notes: list[str] = field(default_factory=list, compare=False)

    @classmethod
    def from_config(
        cls, config: Any, *, max_record_bytes: int = MAX_RECORD_BYTES, root: str | os.PathLike | None = None
    ) -> FileSource:
        if not isinstance(config, dict):
            raise SourceError("the file source settings must be an object with a path")
        unknown = sorted(set(map(str, config)) - set(SETTINGS))
        if unknown:
            raise SourceError(f"unknown file source setting {', '.join(unknown)} (known: {', '.join(SETTINGS)})")
        path = config.get("path")
        if not isinstance(path, str) or not path.strip() or "\0" in path:
            raise SourceError("the file source needs a path: a file or a glob such as /data/exports/*.csv")
        extension = _extension(path)
        fmt = config.get("format") or EXTENSIONS.get(extension)
        if fmt is None:
            raise SourceError(
                f"cannot tell the format of {path} from its extension: set format to csv, ndjson, json or xlsx"
            )
        if not isinstance(fmt, str) or fmt.lower() not in FORMATS:
            raise SourceError(f"unknown file format {fmt!r}: use csv, ndjson, json or xlsx")
        fmt = fmt.lower()
        default = "\t" if extension == ".tsv" else "auto"
        delimiter = config.get("delimiter") or default
        if delimiter in ("tab", "\\t"):
            delimiter = "\t"
        if fmt == "csv":
            if not isinstance(delimiter, str) or not (delimiter == "auto" or len(delimiter) == 1):
                raise SourceError(f"the delimiter must be one character, tab or auto, not {delimiter!r}")
            if delimiter in '"\r\n\0':
                raise SourceError(f"{delimiter!r} cannot be the delimiter")
        elif delimiter != default:
            raise SourceError("a delimiter applies to CSV files only")
        encoding = config.get("encoding") or "auto"
        if encoding != "auto":
            _codec_for(encoding, b"")  # raises SourceError
        compression = config.get("compression") or "auto"
        if compression not in COMPRESSIONS:
            raise SourceError(f"unknown compression {compression!r}: use auto, gzip or none")
        sheet = config.get("sheet") or ""
        if not isinstance(sheet, str):
            raise SourceError(f"the sheet must be a worksheet's name, not {sheet!r}")
        if fmt == "xlsx":
            if config.get("encoding") not in (None, "", "auto") or compression == "gzip":
                raise SourceError("an .xlsx workbook has no encoding or compression to set")
        elif sheet:
            raise SourceError("a sheet applies to xlsx workbooks only")
        incremental = config.get("incremental", False)
        if not isinstance(incremental, bool):
            raise SourceError(f"incremental must be true or false, not {incremental!r}")
        delimiter = delimiter if fmt == "csv" else ","
        real_root = None
        if root is not None:
            real_root = os.path.realpath(root)
            path = os.path.join(real_root, path)  # a relative path is read from the root; an absolute one kept
            parts = Path(path).parts
            wild = next((i for i, part in enumerate(parts) if MAGIC.search(part)), len(parts))
            if ".." in parts[wild:]:
                raise SourceError(f"{path}: '..' cannot follow a wildcard")
            # Where the path or its glob starts, as it resolves now; each file is checked again when read.
            start = str(Path(*parts[:wild])) if wild else real_root
            if not _inside(os.path.realpath(start), real_root):
                raise SourceError(f"{config['path']} is outside the source folder {real_root} (MPFEED_SOURCE_ROOT)")
        return cls(
            path=path,
            format=fmt,
            delimiter=delimiter,
            encoding=encoding,
            compression=compression,
            incremental=incremental,
            sheet=sheet,
            max_record_bytes=max_record_bytes,
            root=real_root,
        )

    @property
    def config(self) -> dict:
        return {name: getattr(self, name) for name in SETTINGS if name != "sheet" or self.sheet}

    @property
    def is_glob(self) -> bool:
        return bool(MAGIC.search(self.path))

    def files(self) -> list[tuple[str, Path]]:
        """(name, path) of the files to read, in reading order. Raises SourceError when the path is missing."""
        if not self.is_glob:
            path = self.path
            if not os.path.exists(path):
                raise SourceError(f"the file {path} does not exist")
            if os.path.isdir(path):
                raise SourceError(f"{path} is a folder, not a file")
            if not os.path.isfile(path):
                raise SourceError(f"{path} is not a regular file (a pipe, a socket or a device?)")
            self._check_inside(path)
            return [(_name(os.path.basename(path)), Path(path))]
        root = _root(self.path)
        if not os.path.isdir(root):
            raise SourceError(f"the folder {root} does not exist")
        found = [
            (_name(os.path.relpath(p, root)), Path(p))
            for p in glob.iglob(self.path, recursive=True)
            if os.path.isfile(p)
        ]
        for _, p in found:
            self._check_inside(p)
        return sorted(found)

    def _check_inside(self, path, fd: int | None = None) -> None:
        """A file outside the root (through '..' or a symbolic link) stops the run before any of it is read.
        With an open descriptor, the file actually opened is the one checked."""
        if self.root is None:
            return
        real = os.path.realpath(path)
        if fd is not None and os.path.exists(f"/proc/self/fd/{fd}"):
            real = os.readlink(f"/proc/self/fd/{fd}")
        if not _inside(real, self.root):
            raise SourceError(f"{path} resolves to a file outside the source folder {self.root} (MPFEED_SOURCE_ROOT)")

    def read(self, cursor: Any = None) -> Iterator[Item]:
        """The items after `cursor` (None: from the start). Bad settings, a bad cursor and a missing path raise
        SourceError here; problems met while reading raise it from the iterator."""
        if cursor is not None and not _is_position(cursor):
            raise SourceError(f"the cursor {_excerpt(repr(cursor))} is not a position in files")
        files = self.files()
        if csv.field_size_limit() < self.max_record_bytes:
            csv.field_size_limit(self.max_record_bytes)
        return self._read(files, cursor)

    def _read(self, files: list[tuple[str, Path]], cursor: dict | None) -> Iterator[Item]:
        for name, path in files:
            if cursor is None or name > cursor["file"]:
                yield from self._read_file(name, path, None)
            elif name == cursor["file"]:
                yield from self._read_file(name, path, cursor)

    def _read_file(self, name: str, path: Path, cursor: dict | None) -> Iterator[Item]:
        lines = None
        try:
            with _open_regular(path) as f:
                self._check_inside(path, f.fileno())
                magic = f.read(8)
                f.seek(0)
                if self.format == "xlsx":
                    from feeds.sources.workbooks import xlsx_items

                    if magic.startswith(GZIP_MAGIC) and self.compression != "none":
                        raise SourceError(f"{name}: an .xlsx workbook cannot be read from a gzip archive")
                    note = partial(self._note, name)
                    buffered = io.BufferedReader(f, CHUNK)  # the zip reader reads in small pieces
                    yield from xlsx_items(name, buffered, magic, self.sheet, cursor, self.max_record_bytes, note)
                    return
                if self.compression == "gzip" and magic and not magic.startswith(GZIP_MAGIC):
                    raise SourceError(f"{name} is not a gzip archive")
                gzipped = magic.startswith(GZIP_MAGIC) and self.compression != "none"
                lines = _Lines(_Gunzip(f) if gzipped else _Plain(f), self.max_record_bytes)
                what = "gzip archive" if gzipped else "file"
                head = lines.peek(DETECT_BYTES)
                kept = cursor.get("encoding") if cursor is not None and self.encoding == "auto" else None
                if isinstance(kept, str):
                    # Resuming: the codec detected when the file was first read, whatever its start looks like now
                    # (rows appended within the sampled start must not change how the next ones are read).
                    codec, how = _codec_for(kept, head)[0], "detected"
                else:
                    codec, how = _choose_codec(name, self.encoding, head, lines.eof, what)
                lines.set_newline(codec)
                if how == "detected":
                    lines.detected = codec
                if "\0" in codecs.getincrementaldecoder(codec)("replace").decode(head[:SNIFF_BYTES]):
                    raise SourceError(
                        f"{name} is not a text file: its first 8 KB have NUL bytes (a spreadsheet, an archive, "
                        f"or not {codec}?); replace or remove the {what}"
                    )
                chosen = f"{codec} ({how})"
                if self.format == "csv":
                    yield from self._csv_items(name, lines, codec, chosen, cursor)
                elif self.format == "json":
                    self._note(name, f"json, {chosen}{', gzip' if gzipped else ''}")
                    yield from self._json_items(name, lines, codec, codec, cursor)
                else:
                    self._note(name, f"ndjson, {chosen}{', gzip' if gzipped else ''}")
                    yield from self._ndjson_items(name, lines, codec, codec, cursor)
        except FileNotFoundError:
            if not self.is_glob:
                raise SourceError(f"the file {self.path} does not exist") from None
            # deleted since the listing: nothing left to read
        except OSError as e:
            raise SourceError(f"the file {path} cannot be read ({e.strerror or e})") from None
        except _Damaged as e:
            after = f" after line {lines.line}" if lines and lines.line else ""
            raise SourceError(f"{name}: {e}{after}; the rest of the file cannot be read") from None
        except _Moved as e:
            raise SourceError(f"{name} {e}; reset the cursor to read it again") from None

    def _note(self, name: str, text: str) -> None:
        """What was chosen for a file (format, encoding, delimiter), for the run's page: the first MAX_NOTES."""
        note = f"{name}: {text}"
        if note not in self.notes and len(self.notes) < MAX_NOTES:
            self.notes.append(note)

    def _position(self, name: str, lines: _Lines) -> dict:
        position = {"file": name, "offset": lines.offset, "line": lines.line, "crc": lines.check()}
        if lines.detected:
            position["encoding"] = lines.detected
        return position

    def _csv_items(self, name: str, lines: _Lines, codec: str, chosen: str, cursor: dict | None) -> Iterator[Item]:
        feed = _Feed(lines, codec, codec, self.max_record_bytes)
        delimiter = self.delimiter
        try:
            if delimiter == "auto":
                first = next(feed, None)
                while first is not None and not first.strip():
                    first = next(feed, None)
                if first is None:
                    return
                delimiter = _sniff(first)
                reader = csv.reader(chain([first], feed), delimiter=delimiter)
            else:
                reader = csv.reader(feed, delimiter=delimiter)
            header = next(reader, None)
            while header is not None and _blank(header):
                header = next(reader, None)
        except _TooLong as e:
            raise SourceError(f"{name}: the header is too long ({e.message})") from None
        except csv.Error as e:
            raise SourceError(f"{name}: the header cannot be read as CSV ({_csv_reason(e)})") from None
        if header is None:
            return
        how = "detected" if self.delimiter == "auto" else "named"
        gzipped = ", gzip" if isinstance(lines.stream, _Gunzip) else ""
        self._note(name, f"csv, {chosen}, delimiter {_delimiter_name(delimiter)} ({how}){gzipped}")
        if feed.problem:
            raise SourceError(f"{name}: the header cannot be read: {feed.problem}")
        header = [h.strip() for h in header]
        _check_header(name, header)
        width = len(header)
        if cursor is not None:
            lines.resume(cursor)
        while True:
            feed.start()
            try:
                row = next(reader)
            except StopIteration:
                return
            except _TooLong as e:
                ref = f"{name}:{feed.first or e.line}"
                yield Item(ref=ref, error=e.message, position=self._position(name, lines))
                reader = csv.reader(feed, delimiter=delimiter)  # afresh: the skipped line may have held a quote
                continue
            except csv.Error as e:
                yield Item(
                    ref=f"{name}:{feed.first or lines.line}",
                    error=f"the row cannot be parsed as CSV ({_csv_reason(e)})",
                    excerpt=feed.excerpt,
                    position=self._position(name, lines),
                )
                continue
            if _blank(row):
                continue
            ref = f"{name}:{feed.first}"
            position = self._position(name, lines)
            if feed.problem:
                yield Item(ref=ref, error=feed.problem, excerpt=feed.excerpt, position=position)
            elif len(row) != width:
                yield Item(
                    ref=ref,
                    error=f"the row has {len(row)} fields, the header has {width}",
                    excerpt=_excerpt(delimiter.join(row)),
                    position=position,
                )
            else:
                yield Item(ref=ref, record=dict(zip(header, row)), position=position)

    def _ndjson_items(self, name: str, lines: _Lines, codec: str, label: str, cursor: dict | None) -> Iterator[Item]:
        if cursor is not None:
            lines.resume(cursor)
        while True:
            try:
                raw = lines.readline()
            except _TooLong as e:
                yield Item(ref=f"{name}:{e.line}", error=e.message, position=self._position(name, lines))
                continue
            if not raw:
                return
            n = lines.line
            try:
                text = raw.decode(codec)
            except UnicodeError as e:
                yield Item(
                    ref=f"{name}:{n}",
                    error=f"line {n} is not valid {label} text ({_reason(e)})",
                    excerpt=_excerpt(raw.decode(codec, "backslashreplace")),
                    position=self._position(name, lines),
                )
                continue
            if n == 1:
                text = text.removeprefix("\ufeff")
            if not text.strip():
                continue
            try:
                record = orjson.loads(text)
            except orjson.JSONDecodeError as e:
                error = f"the line is not valid JSON ({e})"
            else:
                if isinstance(record, dict):
                    yield Item(ref=f"{name}:{n}", record=record, position=self._position(name, lines))
                    continue
                error = f"expected a JSON object, got {kind(record)}"
            yield Item(ref=f"{name}:{n}", error=error, excerpt=_excerpt(text), position=self._position(name, lines))

    # -------------------------------------------------------------------------------------------- json

    def _json_items(self, name: str, lines: _Lines, codec: str, label: str, cursor: dict | None) -> Iterator[Item]:
        """The objects of a JSON array, or of objects one after the other (one file, NDJSON, pretty-printed),
        streamed: only the value being read is held (up to max_record_bytes)."""
        scan = _JSONScan(name, lines, codec, label, self.max_record_bytes, cursor)
        for text, first, index, position in scan.values():
            ref = f"{name}:{first}"
            where = f"element {index} of the array" if position["array"] else f"value {index}"
            if text is None:
                error = f"{where} is larger than {_size(self.max_record_bytes)}; it was skipped"
                yield Item(ref=ref, error=error, position=position)
                continue
            if scan.undecodable(text):
                error, excerpt = f"{where} is not valid {label} text", _excerpt(scan.shown(text))
            else:
                try:
                    record = orjson.loads(text)
                except orjson.JSONDecodeError as e:
                    error = f"{where} is not valid JSON ({e})"
                else:
                    if isinstance(record, dict):
                        yield Item(ref=ref, record=record, position=position)
                        continue
                    error = f"{where} is not a JSON object but {kind(record)}"
                excerpt = _excerpt(text.strip())
            yield Item(ref=ref, error=error, excerpt=excerpt, position=position)


class _JSONScan:
    """Finds where each value of a JSON text starts and ends without parsing it: outside strings only brackets,
    commas and quotes matter. A top-level array's elements are the values; outside an array, each top-level value
    is one. Positions are byte offsets in the file's text just after a value, with the line breaks before them,
    whether an array is open, and the values counted so far."""

    STRING = re.compile(r'["\\]')
    # A whole string at once where it is in the text at hand; else its opening quote (read on in STRING).
    TOKENS = re.compile(r'"(?:[^"\\]++|\\.)*+"|[\[\]{}",]', re.DOTALL)
    TOKENS_TOP = re.compile(r'"(?:[^"\\]++|\\.)*+"|[\[\]{}",\r\n]', re.DOTALL)  # a bare value ends with its line
    # Inside an object or array only brackets matter: strings (whole, where they are at hand) and the rest are
    # passed over; an opening quote without its closing one is caught for STRING.
    NESTED = re.compile(r'(?:"(?:[^"\\]++|\\.)*+"|[^"\[\]{}]++)*+([\[\]{}"])', re.DOTALL)
    UNDECODABLE = re.compile("[\udc80-\udcff]")  # bytes that were not text, as surrogateescape gives them
    START = re.compile(r"[^\s\ufeff]")

    def __init__(self, name: str, lines: _Lines, codec: str, label: str, limit: int, cursor: dict | None):
        self.name, self.lines, self.codec, self.label, self.limit = name, lines, codec, label, limit
        # Bytes that are not text come through as lone surrogates, which encode back to the same bytes: offsets
        # stay exact. UTF-16 and UTF-32 cannot carry them: there a bad byte stops the file.
        self.errors = "strict" if codec.startswith(("utf-16", "utf-32")) else "surrogateescape"
        self.array = bool(cursor and cursor.get("array"))
        self.index = int(cursor.get("index", 0)) if cursor else 0
        if cursor is not None:
            lines.resume(cursor)
        self.offset = lines.offset  # of text[self.at]
        self.breaks = lines.line  # line breaks before self.offset
        self.at = 0
        self.cr = False  # the text before self.at ends with CR (a LF next is the same line break)

    def undecodable(self, text: str) -> bool:
        return self.errors == "surrogateescape" and self.UNDECODABLE.search(text) is not None

    def shown(self, text: str) -> str:
        return text.encode(self.codec, self.errors).decode(self.codec, "backslashreplace").strip()

    def _advance(self, text: str, i: int) -> None:
        piece = text[self.at : i]
        if piece:
            self.offset += len(piece.encode(self.codec, self.errors))
            n = piece.count("\n") + piece.count("\r") - piece.count("\r\n")
            if self.cr and piece[0] == "\n":
                n -= 1
            self.breaks += n
            self.cr = piece[-1] == "\r"
        self.at = i

    def _position(self, text: str, i: int) -> dict:
        self._advance(text, i)
        position = {
            "file": self.name,
            "offset": self.offset,
            "line": self.breaks,
            "crc": self.lines.check(self.offset),
            "array": self.array,
            "index": self.index,
        }
        if self.lines.detected:
            position["encoding"] = self.lines.detected
        return position

    def values(self) -> Iterator[tuple[str | None, int, int, dict]]:
        """(text, first line, number, position after it) of each value; text None for one over the limit, which
        is skipped, not held."""
        decoder = codecs.getincrementaldecoder(self.codec)(self.errors)
        parts: list[str] = []
        size = 0
        active = scalar = in_str = False
        depth = start = first = carry = 0
        while True:
            data = self.lines.chunk()
            stop = None
            try:
                text = decoder.decode(data, final=not data)
            except UnicodeDecodeError as e:
                text = e.object[: e.start].decode(self.codec)  # the values before the bad bytes are read first
                line = self.breaks + text.count("\n") + text.count("\r") - text.count("\r\n") + 1
                stop = SourceError(
                    f"{self.name}: line {line} is not valid {self.label} text ({_reason(e)}); the rest of the file "
                    "cannot be read"
                )
            if not text and not data:
                break
            n = len(text)
            self.at, i, carry = 0, min(carry, n), carry - min(carry, n)  # the character after a backslash
            while i < n:
                if in_str:
                    m = self.STRING.search(text, i)
                    if m is None:
                        i = n
                    elif text[m.start()] == "\\":
                        i = m.start() + 2
                        if i > n:
                            carry, i = i - n, n
                    else:
                        in_str = False
                        i = m.start() + 1
                    continue
                if not active:
                    m = self.START.search(text, i)
                    if m is None:
                        break
                    j = m.start()
                    c = text[j]
                    i = j + 1
                    if self.array and c in ",]":
                        self.array = c == ","
                        continue
                    if not self.array and c == "[":
                        self.array = True
                        continue
                    self._advance(text, j)
                    active, parts, size, start = True, [], 0, j
                    first = self.breaks + 1
                    scalar = c not in "{["
                    depth = 0 if scalar else 1
                    in_str = c == '"'
                    continue
                if depth:
                    m = self.NESTED.match(text, i)  # to the next bracket, past strings and commas
                    j = m.start(1) if m else -1
                else:
                    m = (self.TOKENS_TOP if not self.array else self.TOKENS).search(text, i)
                    j = m.start() if m else -1
                if m is None:
                    i = n
                    continue
                c = text[j]
                end = -1
                if c == '"':
                    if m.end() - j > 1:  # the whole string
                        i = m.end()
                        continue
                    in_str = True
                elif c in "{[":
                    depth += 1
                elif c in "}]":
                    if depth == 0:
                        end = j  # a bare value ends at its array's bracket, which is read next
                    else:
                        depth -= 1
                        if depth == 0 and not scalar:
                            end = j + 1
                elif depth == 0:  # a comma or a line break ends a bare value
                    end = j
                if end < 0:
                    i = j + 1
                    continue
                self.index += 1
                too_big = size + end - start > self.limit
                value = None if too_big else "".join(parts) + text[start:end]
                active, parts, i = False, [], end
                yield value, first, self.index, self._position(text, end)
            if active:
                size += n - start
                parts = [*parts, text[start:]] if size <= self.limit else []  # too big: only its end is looked for
                start = 0
            self._advance(text, n)
            if stop is not None:
                raise stop
        if active:
            if scalar and not self.array and not in_str:
                self.index += 1
                yield (None if size > self.limit else "".join(parts)), first, self.index, self._position("", 0)
                return
            what = f"element {self.index + 1}" if self.array else f"value {self.index + 1}"
            raise SourceError(
                f"{self.name} ends inside {what}, from line {first} (the file is cut short or still being "
                "written); the values before it were read"
            )


def read_text(data: bytes, fmt: str, *, name: str = "sample", delimiter: str = "auto") -> Iterator[Item]:
    """The items of CSV or NDJSON held in memory (a sample pasted in the mapping editor), read as a UTF-8 file of
    that format is read by a run: the same header checks, delimiter sniffing and item errors. Raises SourceError
    as a run would for the whole file (a bad header, a binary text)."""
    if fmt not in ("csv", "ndjson"):
        raise SourceError(f"unknown sample format {fmt!r}: use csv or ndjson")
    source = FileSource(path=name, format=fmt, delimiter=delimiter)
    lines = _Lines(_Plain(io.BytesIO(data)), source.max_record_bytes)
    if "\0" in data[:SNIFF_BYTES].decode("utf-8", "replace"):
        raise SourceError(f"{name} is not text: it has NUL bytes")
    if csv.field_size_limit() < source.max_record_bytes:
        csv.field_size_limit(source.max_record_bytes)
    items = source._csv_items if fmt == "csv" else source._ndjson_items
    yield from items(name, lines, "utf-8", "utf-8", None)


# ------------------------------------------------------------------------------------------------ helpers


BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),  # before UTF-16's, which it starts with
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
ZIP_MAGIC = b"PK\x03\x04"
OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # Excel 97-2003 .xls, Word .doc …
PREFERRED = "cp1252"  # Windows' Western European: what Excel saves "CSV" in, and a superset of Latin-1's letters


def _choose_codec(name: str, encoding: str, head: bytes, complete: bool, what: str) -> tuple[str, str]:
    """The codec to decode a file with and how it was chosen: "named" (the setting), "byte-order mark", or
    "detected" from `head`, the file's first DETECT_BYTES (`complete`: the whole file). Only the start is looked
    at, so a file that changes encoding further on has those lines refused, each naming its line."""
    if encoding != "auto":
        return _codec_for(encoding, head)[0], "named"
    for bom, codec in BOMS:
        if head.startswith(bom):
            return codec, "byte-order mark"
    if head.startswith(ZIP_MAGIC):
        raise SourceError(
            f"{name} is a zip archive, not text (an Excel workbook? name it .xlsx or set format to xlsx); "
            f"replace or remove the {what}"
        )
    if head.startswith(OLE_MAGIC):
        raise SourceError(
            f"{name} is an Excel 97-2003 (.xls) workbook or another binary document, not text: save it as .xlsx, "
            f"CSV or Unicode text; replace or remove the {what}"
        )
    sample = head[:SNIFF_BYTES]
    if b"\0" in sample:
        pairs = len(sample) // 2
        low, high = sample[1::2].count(0), sample[0::2].count(0)
        # UTF-16 without a byte-order mark: text that is mostly ASCII has every other byte NUL, and only those.
        if pairs >= 2 and high == 0 and low >= 0.9 * pairs:
            return "utf-16-le", "detected"
        if pairs >= 2 and low == 0 and high >= 0.9 * pairs:
            return "utf-16-be", "detected"
        raise SourceError(
            f"{name} is not a text file: its first 8 KB have NUL bytes (a spreadsheet, an archive, or UTF-16 or "
            f"UTF-32 without a byte-order mark? then set encoding, e.g. utf-16-le); replace or remove the {what}"
        )
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=complete)
    except UnicodeDecodeError:
        pass
    else:
        return "utf-8", "detected"
    legacy = _legacy(head)
    if legacy is None:
        raise SourceError(f"cannot tell the encoding of {name} (not UTF-8): set encoding, e.g. cp1252 or latin-1")
    try:
        return _codec_for(legacy, head)[0], "detected"
    except SourceError:
        raise SourceError(
            f"{name} looks like {legacy}, which cannot be read line by line: set encoding if that is wrong"
        ) from None


def _legacy(head: bytes) -> str | None:
    """The legacy encoding that charset-normalizer finds most likely for bytes that are not UTF-8; cp1252 when it
    reads them as well as the best (short samples with a few accents tie between a dozen code pages)."""
    from charset_normalizer import from_bytes

    matches = list(from_bytes(head))
    if not matches:
        return None
    best = matches[0]
    for m in matches:
        close = m.chaos <= best.chaos + 0.01 and m.coherence >= best.coherence - 0.1
        if close and PREFERRED in m.could_be_from_charset:
            return PREFERRED
    return best.encoding


def _codec_for(encoding: Any, head: bytes) -> tuple[str, bytes]:
    """The codec to decode lines with (utf-16/utf-32 resolved by the byte-order mark) and its line break."""
    if not isinstance(encoding, str) or not encoding:
        raise SourceError(f"the encoding must be a codec name such as utf-8, not {encoding!r}")
    try:
        info = codecs.lookup(encoding)
    except LookupError:
        raise SourceError(f"unknown encoding {encoding!r}") from None
    if not getattr(info, "_is_text_encoding", True):
        raise SourceError(f"{encoding!r} is not a text encoding")
    codec = info.name
    if codec == "utf-8-sig":
        codec = "utf-8"
    elif codec in ("utf-16", "utf-32"):
        big = codecs.BOM_UTF16_BE if codec == "utf-16" else codecs.BOM_UTF32_BE
        codec += "-be" if head.startswith(big) else "-le"
    try:
        nl = "\n".encode(codec)
        ok = nl.decode(codec) == "\n" and (len(nl) == 1 or codec.startswith(("utf-16", "utf-32")))
    except Exception:
        ok = False
    if not ok:
        raise SourceError(f"files in {encoding!r} cannot be read line by line")
    return codec, nl


def _open_regular(path) -> Any:
    """Open a file to read, refusing what is not a regular file without waiting on it: a pipe (or a link swapped
    for one since the listing) would block a plain open() until a writer came."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise SourceError(f"{path} is not a regular file (a pipe, a socket or a device?)")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb", buffering=0)
    except BaseException:
        os.close(fd)
        raise


def _inside(real: str, real_root: str) -> bool:
    return os.path.commonpath([real, real_root]) == real_root


def _extension(path: str) -> str:
    name = os.path.basename(path).lower()
    for suffix in (".gz", ".gzip"):
        name = name.removesuffix(suffix)
    return os.path.splitext(name)[1]


def _root(pattern: str) -> str:
    """The folder where a glob starts: its leading parts without wildcards."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts[:-1]:
        if MAGIC.search(part):
            break
        fixed.append(part)
    return str(Path(*fixed)) if fixed else "."


def _name(name: str) -> str:
    """A file name as text that JSON and databases accept (undecodable bytes shown as \\xNN)."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _is_position(cursor: Any) -> bool:
    return (
        isinstance(cursor, dict)
        and isinstance(cursor.get("file"), str)
        and all(type(cursor.get(k)) is int and cursor[k] >= 0 for k in ("offset", "line", "crc"))
    )


def _check_header(name: str, header: list[str]) -> None:
    if not any(header):
        raise SourceError(f"{name}: the first line must name the columns")
    empty = [str(i) for i, h in enumerate(header, 1) if not h]
    if empty:
        raise SourceError(f"{name}: the header has columns without a name (column {', '.join(empty)})")
    seen: dict[str, list[int]] = {}
    for i, h in enumerate(header, 1):
        seen.setdefault(h, []).append(i)
    twice = [f"{h!r} (columns {', '.join(map(str, cols))})" for h, cols in seen.items() if len(cols) > 1]
    if twice:
        raise SourceError(f"{name}: the header names a column more than once: {'; '.join(twice)}")


def _sniff(line: str) -> str:
    """The candidate delimiter found most often outside quotes in the header line; "," if none."""
    counts = dict.fromkeys(SNIFFED, 0)
    quoted = False
    for ch in line:
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch in counts:
            counts[ch] += 1
    best = max(SNIFFED, key=counts.__getitem__)
    return best if counts[best] else ","


def _delimiter_name(delimiter: str) -> str:
    return {"\t": "TAB", " ": "space"}.get(delimiter, repr(delimiter))


def _blank(row: list[str]) -> bool:
    return not row or (len(row) == 1 and not row[0].strip())


def _csv_reason(e: csv.Error) -> str:
    return str(e)


def _reason(e: UnicodeError) -> str:
    if isinstance(e, UnicodeDecodeError):
        return f"{e.reason} at byte {e.start + 1}"
    return str(e)


def _size(n: int) -> str:
    return f"{n // (1024 * 1024)} MiB" if n % (1024 * 1024) == 0 else f"{n} bytes"


def _excerpt(text: str) -> str:
    text = text.replace("\0", "\\x00")  # PostgreSQL text cannot hold NUL
    return text if len(text) <= EXCERPT else text[:EXCERPT] + "…"
