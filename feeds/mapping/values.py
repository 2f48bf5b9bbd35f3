"""Reading one value from a record: field paths, value specs, type coercion, text, timestamps.

Everything here runs once per record and field, so specs are compiled into closures up front. Any problem
with a record's data raises `RecordError` with a message for people that names the rule ("where").
"""

from __future__ import annotations

import math
import re
import string
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from decimal import Decimal
from zoneinfo import ZoneInfo

VALUE_TYPES = ("auto", "string", "int", "float", "number", "bool", "timestamp")
TRANSFORMS = ("trim", "lower", "upper")
TIMESTAMP_FORMATS = ("auto", "iso8601", "epoch_s", "epoch_ms")
TRUE_WORDS = frozenset({"true", "t", "yes", "y", "1", "on"})
FALSE_WORDS = frozenset({"false", "f", "no", "n", "0", "off"})
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# Event times mParticle can take: years 1 to 9999, in epoch milliseconds.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MIN_TIMESTAMP_MS = -62135596800000
MAX_TIMESTAMP_MS = 253402300799999
# Below this, an "auto" epoch number is read as seconds (1e11 s is the year 5138; 1e11 ms is March 1973).
EPOCH_SECONDS_BELOW = 1e11
MAX_TIME_TEXT = 100  # longer text is not a time, and parsing it would only cost time
NAIVE_EPOCH = datetime(1970, 1, 1)
ONE_MS = timedelta(milliseconds=1)

_TRANSFORM_FUNCS = {"trim": str.strip, "lower": str.lower, "upper": str.upper}
_OFFSET = re.compile(r"^(?:UTC)?([+-])(\d{2}):?(\d{2})$")


class _Missing:
    """No value: the field is absent, or empty text. (A JSON null is `None`, a value.)"""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING = _Missing()


class RecordError(ValueError):
    """A source record that cannot become valid mParticle data; the message says why, for people."""


# ------------------------------------------------------------------------------------------------ showing


def kind(value: object) -> str:
    """A value's kind in JSON words, with an article, for messages: "a list", "an object", "a number"."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float, Decimal)):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


def show(value: object) -> str:
    """A short, safe rendering of a value for a message (never the whole of a huge or deeply nested value)."""
    if isinstance(value, str):
        return repr(value) if len(value) <= 60 else repr(value[:57]) + "…"
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, int):
        return repr(value) if abs(value) < 10**30 else f"a {value.bit_length()}-bit number"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict):
        return f"an object with {len(value)} keys"
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)} items"
    return f"a {type(value).__name__}"


# ---------------------------------------------------------------------------------------------- reading


def getter(path: str) -> Callable[[dict], object]:
    """Read a field; dots walk into nested objects (and list positions) unless the record has the dotted
    name itself. Returns MISSING when there is nothing there."""
    if "." not in path:
        return lambda record: record.get(path, MISSING)
    parts = tuple(int(p) if p.isdigit() else p for p in path.split("."))

    def get(record: dict) -> object:
        value = record.get(path, MISSING)
        if value is not MISSING:
            return value
        value = record
        for part in parts:
            if isinstance(value, dict):
                value = value.get(part if isinstance(part, str) else str(part), MISSING)
                if value is MISSING:
                    return MISSING
            elif isinstance(value, list) and isinstance(part, int) and part < len(value):
                value = value[part]
            else:
                return MISSING
        return value

    return get


# ----------------------------------------------------------------------------------------------- coercion


def _foreign(value: object, where: str) -> object:
    """Values that are not JSON types (from database or API sources) as JSON types, or RecordError."""
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise RecordError(f"{where}: {value} is not a number mParticle accepts")
        return int(value) if value == value.to_integral_value() and abs(value) < 2**63 else float(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    raise RecordError(f"{where}: {kind(value)} is not a value mParticle accepts")


def check_int(value: int, where: str) -> int:
    if INT64_MIN <= value <= INT64_MAX:
        return value
    raise RecordError(f"{where}: {show(value)} is too large a number (mParticle takes 64-bit integers)")


def check_text(value: str, where: str) -> str:
    """Text as JSON can carry it: lone surrogates (possible from some decoders) cannot be sent."""
    if value.isascii():
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise RecordError(f"{where}: the text is not valid Unicode") from None
    return value


def scalar_text(value: object, where: str) -> str:
    """A single value as text: numbers as written (whole numbers without ".0"), booleans as true/false."""
    cls = type(value)
    if cls is str:
        return check_text(value, where)  # type: ignore[arg-type]
    if cls is bool:
        return "true" if value else "false"
    if cls is int:
        try:
            return str(value)
        except ValueError:  # more digits than Python will print
            raise RecordError(f"{where}: {show(value)} is too long to be text") from None
    if cls is float:
        if not math.isfinite(value):  # type: ignore[arg-type]
            raise RecordError(f"{where}: {value!r} is not a number mParticle accepts")
        if value.is_integer() and abs(value) < 2**53:  # type: ignore[union-attr]
            return str(int(value))  # type: ignore[arg-type]
        return repr(value)
    if isinstance(value, (dict, list, tuple)):
        raise RecordError(f"{where}: expected text, got {kind(value)}")
    if value is None:
        raise RecordError(f"{where}: expected text, got null")
    if isinstance(value, (str, bool, int, float)):  # subclasses
        return scalar_text(_base(value), where)
    return scalar_text(_foreign(value, where), where)


def _base(value: object) -> object:
    for cls in (bool, int, float, str):
        if isinstance(value, cls):
            return cls(value)  # type: ignore[call-overload]
    return value


def to_string(value: object, where: str) -> str:
    return scalar_text(value, where)


def to_int(value: object, where: str) -> int:
    cls = type(value)
    if cls is int:
        return check_int(value, where)  # type: ignore[arg-type]
    if cls is str:
        text = value.strip()  # type: ignore[union-attr]
        try:
            return check_int(int(text), where)
        except ValueError:
            pass
        try:
            number = float(text)
        except ValueError:
            raise RecordError(f"{where}: {show(value)} is not a whole number") from None
    elif cls is float:
        number = value  # type: ignore[assignment]
    elif isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
        raise RecordError(f"{where}: {show(value)} is not a whole number")
    else:
        return to_int(_base(value) if not isinstance(value, Decimal) else _foreign(value, where), where)
    if not math.isfinite(number) or not number.is_integer():
        raise RecordError(f"{where}: {show(value)} is not a whole number")
    return check_int(int(number), where)


def to_float(value: object, where: str) -> float:
    cls = type(value)
    try:
        if cls is float:
            number = value
        elif cls is str:
            number = float(value.strip())  # type: ignore[union-attr]
        elif cls is int or (isinstance(value, (int, float, Decimal)) and not isinstance(value, bool)):
            number = float(value)  # type: ignore[arg-type]
        else:
            raise RecordError(f"{where}: {show(value)} is not a number")
    except (ValueError, OverflowError):
        raise RecordError(f"{where}: {show(value)} is not a number") from None
    if not math.isfinite(number):  # type: ignore[arg-type]
        raise RecordError(f"{where}: {show(value)} is not a finite number")
    return number  # type: ignore[return-value]


def to_number(value: object, where: str) -> int | float:
    """Whole numbers stay integers, others become floats."""
    cls = type(value)
    if cls is int:
        return check_int(value, where)  # type: ignore[arg-type]
    if cls is str:
        try:
            return check_int(int(value), where)  # type: ignore[call-overload]
        except ValueError:
            pass
    if isinstance(value, Decimal):
        return to_number(_foreign(value, where), where)
    return to_float(value, where)


def to_bool(value: object, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
    raise RecordError(f"{where}: {show(value)} is not a boolean (true/false, yes/no, 1/0)")


COERCERS: dict[str, Callable[[object, str], object]] = {
    "string": to_string,
    "int": to_int,
    "float": to_float,
    "number": to_number,
    "bool": to_bool,
}


# --------------------------------------------------------------------------------------------- timestamps


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


# ---------------------------------------------------------------------------------------------- value specs


def value_reader(spec: object, where: str, default_type: str = "auto") -> Callable[[dict], object]:
    """Compile a value spec into a function of the record that returns the value, None (a JSON null) or
    MISSING. `default_type` applies when the spec does not give a type."""
    if isinstance(spec, str):
        spec = {"field": spec}
    assert isinstance(spec, dict)
    finish = finisher(spec, where, default_type)
    if "value" in spec:
        constant = finish(spec["value"])
        return lambda record: constant

    get = getter(spec["field"])
    if finish is _as_is:
        path = spec["field"]
        if "." not in path:

            def read_plain(record: dict) -> object:
                value = record.get(path, MISSING)
                return MISSING if value == "" else value

            return read_plain

        def read_nested(record: dict) -> object:
            value = get(record)
            return MISSING if value == "" else value

        return read_nested

    def read(record: dict) -> object:
        return finish(get(record))

    return read


def _as_is(value: object) -> object:
    return MISSING if value == "" else value


def _compose(steps: list[Callable[[str], str]]) -> Callable[[str], str] | None:
    if not steps:
        return None
    if len(steps) == 1:
        return steps[0]
    if len(steps) == 2:
        first, second = steps
        return lambda text: second(first(text))

    def apply(text: str) -> str:
        for step in steps:
            text = step(text)
        return text

    return apply


def finisher(spec: dict, where: str, default_type: str = "auto") -> Callable[[object], object]:
    """The part of a value spec that applies to a value once read: transforms, default, required, split,
    type. Returns the value, None or MISSING."""
    kind_name = spec.get("type", default_type)
    transforms = spec.get("transform", [])
    if isinstance(transforms, str):
        transforms = [transforms]
    transform = _compose([_TRANSFORM_FUNCS[t] for t in transforms])
    required = spec.get("required", False)
    separator = spec.get("split")
    field_name = spec.get("field")
    if kind_name == "timestamp":
        fmt = spec.get("format", "auto")
        zone = parse_zone(spec["timezone"]) if "timezone" in spec else None

        parse = timestamp_parser(fmt, zone)

        def coerce(value: object, where: str) -> object:
            try:
                return parse(value)
            except (ValueError, TypeError, OverflowError) as e:
                raise RecordError(f"{where}: {show(value)} is not a time in format {fmt} ({e})") from None

    else:
        coerce = COERCERS.get(kind_name)  # type: ignore[assignment]
    if transform is None and not required and separator is None and coerce is None and "default" not in spec:
        return _as_is

    def finish(value: object) -> object:
        if transform is not None and isinstance(value, str):
            value = transform(value)
        if value is MISSING or value is None or value == "":
            if default is not MISSING:
                return default
            if required:
                what = f"field '{field_name}'" if field_name else "the value"
                raise RecordError(f"{where}: {what} is missing or empty")
            return MISSING if value is not None else None
        if separator is not None and isinstance(value, str):
            return [part for part in (p.strip() for p in value.split(separator)) if part]
        return coerce(value, where) if coerce is not None else value

    default: object = MISSING
    if "default" in spec and spec["default"] is not None:
        default = finish(spec["default"])
    return finish


# ------------------------------------------------------------------------------------------------ templates


def parse_template(text: str) -> list[tuple[str, str | None]]:
    """Split "{category} Viewed" into (literal, field) pairs. Raises ValueError with a reason for people."""
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as e:
        raise ValueError(f"{e} (write {{{{ and }}}} for literal braces)") from None
    parts: list[tuple[str, str | None]] = []
    for literal, field, spec, conversion in parsed:
        if field is not None:
            if not field:
                raise ValueError("a placeholder {} needs a field name, e.g. {category}")
            if spec or conversion:
                raise ValueError(f"{{{field}...}}: only plain {{field}} placeholders are supported (no ! or :)")
        parts.append((literal, field))
    return parts


def template_reader(text: str, where: str) -> Callable[[dict], str]:
    """A name built from fields: every placeholder must have a value, or the record is refused."""
    parts = [(literal, getter(field) if field is not None else None, field) for literal, field in parse_template(text)]

    def render(record: dict) -> str:
        out = []
        for literal, get, field in parts:
            out.append(literal)
            if get is not None:
                value = get(record)
                if value is MISSING or value is None or value == "":
                    raise RecordError(f"{where}: field '{field}' is missing or empty (needed for {text!r})")
                out.append(scalar_text(value, f"{where}: field '{field}'"))
        return "".join(out)

    return render


def template_fields(text: str) -> list[str]:
    return [field for _, field in parse_template(text) if field is not None]


def is_template(text: str) -> bool:
    return "{" in text or "}" in text
