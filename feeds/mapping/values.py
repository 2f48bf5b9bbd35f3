"""Values read from records: missing values, field paths, type coercion and text, mParticle's value rules.

Any problem with a record's data raises `RecordError` with a message for people that names the rule ("where").
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal

from feeds.words import kind, truth

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


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


def show(value: object) -> str:
    """A short, safe rendering of a value for a message (never the whole of a huge or deeply nested value)."""
    if isinstance(value, str):
        return repr(value) if len(value) <= 60 else repr(value[:57]) + "…"
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, int):
        return repr(value) if abs(value) < 10**30 else f"a {value.bit_length()}-bit number"
    if isinstance(value, (float, Decimal)):
        return str(value) if len(str(value)) <= 40 else f"a {type(value).__name__}"
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
    parts = tuple((p, int(p) if p.isascii() and p.isdigit() else None) for p in path.split("."))

    def get(record: dict) -> object:
        value = record.get(path, MISSING)
        if value is not MISSING:
            return value
        value = record
        for key, index in parts:
            if isinstance(value, dict):
                value = value.get(key, MISSING)
                if value is MISSING:
                    return MISSING
            elif index is not None and isinstance(value, list) and index < len(value):
                value = value[index]
            else:
                return MISSING
        return value

    return get


# ----------------------------------------------------------------------------------------------- coercion


def json_value(value: object, where: str) -> object:
    """Values that are not JSON types (from database or API sources) as JSON types, or RecordError."""
    if isinstance(value, Decimal):
        if not value.is_finite() or value.adjusted() > 308:
            raise RecordError(f"{where}: {show(value)} is not a number mParticle accepts")
        if abs(value) < 2**63 and value == value.to_integral_value():
            return int(value)
        return float(value)
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
        if value.is_integer() and abs(value) < 2**53:  # type: ignore[attr-defined,arg-type]  # cls is float
            return str(int(value))  # type: ignore[call-overload]  # cls is float
        return repr(value)
    if isinstance(value, (dict, list, tuple)):
        raise RecordError(f"{where}: expected text, got {kind(value)}")
    if value is None:
        raise RecordError(f"{where}: expected text, got null")
    if isinstance(value, (str, bool, int, float)):  # subclasses
        return scalar_text(builtin_value(value), where)
    return scalar_text(json_value(value, where), where)


def builtin_value(value: object) -> object:
    for cls in (bool, int, float, str):
        if isinstance(value, cls):
            return cls(value)  # type: ignore[arg-type,call-overload]  # value is an instance of cls
    return value


def to_string(value: object, where: str) -> str:
    return scalar_text(value, where)


def to_int(value: object, where: str) -> int:
    if isinstance(value, str):
        text = value.strip()
        try:
            return check_int(int(text), where)
        except ValueError:
            pass
        try:
            number = float(text)
        except ValueError:
            raise RecordError(f"{where}: {show(value)} is not a whole number") from None
    elif isinstance(value, bool):
        raise RecordError(f"{where}: {show(value)} is not a whole number")
    elif isinstance(value, int):
        return check_int(int(value), where)
    elif isinstance(value, float):
        number = value
    elif isinstance(value, Decimal):
        whole = json_value(value, where)
        if isinstance(whole, int):
            return whole
        raise RecordError(f"{where}: {value} is not a whole number")
    else:
        raise RecordError(f"{where}: {show(value)} is not a whole number")
    if not math.isfinite(number) or not number.is_integer():
        raise RecordError(f"{where}: {show(value)} is not a whole number")
    return check_int(int(number), where)


def to_float(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (str, int, float, Decimal)):
        raise RecordError(f"{where}: {show(value)} is not a number")
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (ValueError, OverflowError):
        raise RecordError(f"{where}: {show(value)} is not a number") from None
    if not math.isfinite(number):
        raise RecordError(f"{where}: {show(value)} is not a finite number")
    return number


def to_number(value: object, where: str) -> int | float:
    """Whole numbers stay integers, others become floats."""
    if type(value) is int:
        return check_int(value, where)
    if isinstance(value, str):
        try:
            return check_int(int(value), where)
        except ValueError:
            pass
    elif isinstance(value, Decimal):
        return to_number(json_value(value, where), where)
    return to_float(value, where)


def as_bool(value: object) -> bool | None:
    """A record value as a boolean, for a rule's "bool" type and a condition's comparison alike: true and false,
    1 and 0, and the words of feeds.words.truth; None for anything else."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        return truth(value)
    return None


def to_bool(value: object, where: str) -> bool:
    result = as_bool(value)
    if result is None:
        raise RecordError(f"{where}: {show(value)} is not a boolean (true/false, yes/no, 1/0)")
    return result


COERCERS: dict[str, Callable[[object, str], object]] = {
    "string": to_string,
    "int": to_int,
    "float": to_float,
    "number": to_number,
    "bool": to_bool,
}
