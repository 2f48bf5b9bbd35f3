"""Times: ISO 8601 text, epoch seconds or milliseconds, strptime patterns, database datetimes → epoch ms."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from decimal import Decimal
from zoneinfo import ZoneInfo

from feeds.words import kind

from .values import MISSING, RecordError, getter, show

TIMESTAMP_FORMATS = ("auto", "iso8601", "epoch_s", "epoch_ms")
# Event times mParticle can take: years 1 to 9999, in epoch milliseconds.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
NAIVE_EPOCH = datetime(1970, 1, 1)
ONE_MS = timedelta(milliseconds=1)
MIN_TIMESTAMP_MS = -62135596800000
MAX_TIMESTAMP_MS = 253402300799999
# Below this, an "auto" epoch number is read as seconds (1e11 s is the year 5138; 1e11 ms is March 1973).
EPOCH_SECONDS_BELOW = 1e11
MAX_TIME_TEXT = 100  # longer text is not a time, and parsing it would only cost time
_OFFSET = re.compile(r"^(?:UTC)?([+-])(\d{2}):?(\d{2})$")


def parse_zone(name: str) -> tzinfo:
    """A time zone: an IANA name ("Europe/Paris"), "UTC", or a fixed offset ("+02:00"). Raises ValueError."""
    if name in ("UTC", "Z"):
        return UTC
    match = _OFFSET.match(name)
    if match:
        sign, hours, minutes = match.groups()
        offset = timedelta(hours=int(hours), minutes=int(minutes))
        if offset >= timedelta(hours=24):
            raise ValueError(f"{name!r} is not a time zone offset")
        return timezone(-offset if sign == "-" else offset)
    try:
        return ZoneInfo(name)
    except Exception:  # ZoneInfoNotFoundError, or ValueError for names that are not paths
        raise ValueError(f"{name!r} is not a known time zone") from None


def _epoch_ms(value: object, fmt: str) -> int:
    if isinstance(value, str):
        text = value.strip()
        try:
            number: int | float = int(text)
        except ValueError:
            number = float(text)
    elif isinstance(value, (int, float)):
        number = value
    elif isinstance(value, Decimal):
        number = float(value)
    else:
        raise ValueError(f"expected a number, got {kind(value)}")
    if isinstance(number, float) and not math.isfinite(number):
        raise ValueError("not a finite number")
    if fmt == "epoch_s" or (fmt == "auto" and abs(number) < EPOCH_SECONDS_BELOW):
        number = number * 1000
    if isinstance(number, float):
        if not math.isfinite(number):
            raise ValueError("out of range")
        number = round(number)
    return number


def _moment_ms(moment: datetime, zone: tzinfo | None) -> int:
    tz = moment.tzinfo
    if tz is None:
        if zone is None:
            return (moment - NAIVE_EPOCH) // ONE_MS
        moment = moment.replace(tzinfo=zone)
    return (moment - EPOCH) // ONE_MS


def _looks_numeric(text: str) -> bool:
    return text.lstrip("+-").replace(".", "", 1).isdigit()


def _parse(value: object, fmt: str, zone: tzinfo | None) -> int:
    if isinstance(value, bool):
        raise ValueError("a boolean is not a time")
    if isinstance(value, datetime):
        return _moment_ms(value, zone)
    if isinstance(value, date):
        return _moment_ms(datetime(value.year, value.month, value.day), zone)
    if fmt in ("epoch_ms", "epoch_s") or (fmt == "auto" and not isinstance(value, str)):
        ms = _epoch_ms(value, fmt)
        if not MIN_TIMESTAMP_MS <= ms <= MAX_TIMESTAMP_MS:
            raise ValueError("outside the years 1 to 9999")
        return ms
    if not isinstance(value, str):
        raise ValueError(f"expected text, got {kind(value)}")
    text = value.strip()
    if len(text) > MAX_TIME_TEXT:
        raise ValueError("too long to be a time")
    if fmt == "auto" and _looks_numeric(text):
        return _parse_number(text)
    if fmt in ("auto", "iso8601"):
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            if fmt == "auto":  # 1.7e9 and the like
                try:
                    return _parse_number(text)
                except ValueError:
                    pass
            raise
    else:
        moment = datetime.strptime(text, fmt)
    return _moment_ms(moment, zone)


def _parse_number(text: str) -> int:
    ms = _epoch_ms(text, "auto")
    if not MIN_TIMESTAMP_MS <= ms <= MAX_TIMESTAMP_MS:
        raise ValueError("outside the years 1 to 9999")
    return ms


def parse_timestamp(value: object, fmt: str = "auto", tz: tzinfo | None = None) -> int:
    """A time in epoch milliseconds. `fmt`: auto (epoch seconds or milliseconds, or ISO 8601), iso8601,
    epoch_s, epoch_ms, or a strptime pattern. Times without a zone are in `tz` (default UTC).
    Raises ValueError when the value is not such a time."""
    return _parse(value, fmt, tz)


def timestamp_parser(fmt: str, zone: tzinfo | None = None) -> Callable[[object], int]:
    """parse_timestamp for one format, with a fast path for ISO 8601 text (the common case)."""
    if fmt not in ("iso8601", "auto"):
        return lambda value: _parse(value, fmt, zone)
    fromisoformat = datetime.fromisoformat

    def parse(value: object) -> int:
        if type(value) is str and len(value) <= MAX_TIME_TEXT:
            try:
                moment = fromisoformat(value)
            except ValueError:
                return _parse(value, fmt, zone)
            if fmt == "auto" and _looks_numeric(value):  # "20261120" is an epoch number in auto
                return _parse(value, fmt, zone)
            return _moment_ms(moment, zone)
        return _parse(value, fmt, zone)

    return parse


def timestamp_reader(spec: object, where: str) -> Callable[[dict], int | None]:
    """Compile an event's `timestamp` spec: a field name or {"field", "format", "timezone", "required"}."""
    if isinstance(spec, str):
        spec = {"field": spec}
    assert isinstance(spec, dict)
    get = getter(spec["field"])
    fmt = spec.get("format", "auto")
    zone = parse_zone(spec["timezone"]) if "timezone" in spec else None
    required = spec.get("required", True)
    field_name = spec["field"]
    parse = timestamp_parser(fmt, zone)
    fast = fmt in ("iso8601", "auto")
    fromisoformat = datetime.fromisoformat

    def read(record: dict) -> int | None:
        value = get(record)
        if fast and type(value) is str and 0 < len(value) <= MAX_TIME_TEXT:
            # The common case, ISO 8601 in UTC, in line.
            try:
                moment = fromisoformat(value)
            except ValueError:
                moment = None
            if moment is not None and moment.tzinfo is UTC:
                return (moment - EPOCH) // ONE_MS
        if value is MISSING or value is None or value == "":
            if required:
                raise RecordError(f"{where}: field '{field_name}' is missing or empty")
            return None
        try:
            return parse(value)
        except (ValueError, TypeError, OverflowError) as e:
            raise RecordError(f"{where}: {show(value)} is not a time in format {fmt} ({e})") from None

    return read
