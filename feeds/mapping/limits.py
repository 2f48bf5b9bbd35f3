"""mParticle's limits on what is sent, applied to each value on its way out of the converter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import orjson

from feeds.mparticle import schema
from feeds.words import kind

from .values import (
    INT64_MAX,
    INT64_MIN,
    MISSING,
    RecordError,
    builtin_value,
    check_int,
    check_text,
    json_value,
    scalar_text,
    show,
)

MAX_NAME = schema.MAX_NAME_LENGTH
MAX_VALUE = schema.MAX_VALUE_LENGTH
MAX_ENTRIES = schema.MAX_USER_ATTRIBUTE_LIST_ENTRIES
MAX_ENTRY = schema.MAX_USER_ATTRIBUTE_LIST_ENTRY_LENGTH


@dataclass
class Stats:
    """What a converter changed to keep within mParticle's limits, for the run's counters."""

    names_truncated: int = 0
    values_truncated: int = 0


class Limits:
    """mParticle's limits on what is sent, applied to each value on its way out."""

    __slots__ = ("truncate_values", "stats")

    def __init__(self, truncate_values: bool, stats: Stats):
        self.truncate_values = truncate_values
        self.stats = stats

    def name(self, name: str, where: str) -> str:
        """An event, screen or attribute name read from the record: not empty, cut to 256 (counted)."""
        if not name.strip():
            raise RecordError(f"{where}: the name is empty")
        if len(name) > MAX_NAME:
            self.stats.names_truncated += 1
            name = name[:MAX_NAME]
        return check_text(name, where)

    def scalar(self, value: object, where: str) -> object:
        cls = type(value)
        if cls is str:
            if len(value) > MAX_VALUE:  # type: ignore[arg-type]
                if not self.truncate_values:
                    raise RecordError(f"{where}: {len(value)} characters, over mParticle's {MAX_VALUE}")  # type: ignore[arg-type]
                self.stats.values_truncated += 1
                value = value[:MAX_VALUE]  # type: ignore[index]
            return check_text(value, where)  # type: ignore[arg-type]
        if cls is int:
            return check_int(value, where)  # type: ignore[arg-type]
        if cls is float:
            if value - value == 0.0:  # type: ignore[operator]  # finite
                return value
            raise RecordError(f"{where}: {value!r} is not a number mParticle accepts")
        if value is None or cls is bool:
            return value
        if isinstance(value, (dict, list, tuple)):
            raise RecordError(f"{where}: must be a single value, got {kind(value)}")
        if isinstance(value, (str, int, float)):
            return self.scalar(builtin_value(value), where)
        return self.scalar(json_value(value, where), where)

    def user_value(self, value: object, where: str) -> object:
        """A user attribute value: a single value, or a list of texts."""
        if not isinstance(value, (list, tuple)):
            return self.scalar(value, where)
        if len(value) > MAX_ENTRIES:
            raise RecordError(f"{where}: {len(value)} entries, over mParticle's {MAX_ENTRIES}")
        out = []
        for item in value:
            if type(item) is not str:
                if item is None or isinstance(item, (dict, list, tuple)):
                    raise RecordError(f"{where}: list entries must be text, found {kind(item)}")
                item = scalar_text(item, where)
            if len(item) > MAX_ENTRY:
                if not self.truncate_values:
                    raise RecordError(f"{where}: a list entry has {len(item)} characters, over {MAX_ENTRY}")
                self.stats.values_truncated += 1
                item = item[:MAX_ENTRY]
            out.append(check_text(item, where))
        return out

    def dynamic_name(self, key: object, where: str) -> str:
        """An attribute name taken from a key of the record's data."""
        if type(key) is not str:
            raise RecordError(f"{where}: attribute names must be text, found {kind(key)}")
        if not key:
            raise RecordError(f"{where}: an attribute name is empty")
        if len(key) > MAX_NAME:
            self.stats.names_truncated += 1
            key = key[:MAX_NAME]
        return check_text(key, where)


def no_identity_message(doc: dict) -> str:
    """The start of the reason a record without any identity is refused: which fields were looked at."""
    fields = [_field_of(spec) for spec in doc.get("identities", {}).values()]
    if "mpid" in doc:
        fields.append(_field_of(doc["mpid"]))
    named = ", ".join(sorted({f for f in fields if f}))  # sorted: a document stored as jsonb loses its key order
    also = "and mpid " if "mpid" in doc else ""
    return f"no identity: every mapped identity field {also}is missing or empty" + (f" ({named})" if named else "")


def _field_of(spec: object) -> str | None:
    if isinstance(spec, str):
        return spec
    if isinstance(spec, dict) and isinstance(spec.get("field"), str):
        return spec["field"]
    return None


def no_identity_error(message: str, record: dict) -> RecordError:
    """The refusal of a record without any identity, naming the fields the record has (a field name that does
    not match the file's header, or a CSV read with the wrong delimiter, shows at once)."""
    names = [str(name) for name in list(record)[:9]]
    if not names:
        return RecordError(f"{message}; the record has no fields")
    shown = ", ".join(n if len(n) <= 60 else n[:57] + "..." for n in names[:8])
    return RecordError(f"{message}; the record's fields are {shown}{', …' if len(names) > 8 else ''}")


def identity_text(value: object, where: str) -> str:
    if isinstance(value, bool):
        raise RecordError(f"{where}: must be text, got a boolean")
    if isinstance(value, (dict, list, tuple)):
        raise RecordError(f"{where}: must be text, got {kind(value)}")
    return scalar_text(value, where)


def mpid_value(value: object) -> int | None:
    if value is MISSING or value is None:
        return None
    cls = type(value)
    number: int | None = None
    if cls is int:
        number = value  # type: ignore[assignment]
    elif cls is str:
        try:
            number = int(value)  # type: ignore[call-overload]
        except ValueError:
            number = None
    elif cls is float and value.is_integer() and abs(value) < 2**53:  # type: ignore[attr-defined,arg-type]  # cls is float
        number = int(value)  # type: ignore[call-overload]  # cls is float
    if number is None:
        raise RecordError(f"mpid: {show(value)} is not an integer")
    if not INT64_MIN <= number <= INT64_MAX:
        raise RecordError(f"mpid: {show(value)} is outside the 64-bit range")
    return number


_Container = TypeVar("_Container", dict, list)


def json_container(value: object, want: type[_Container], where: str) -> _Container | None:
    """A nested object or list from the record, or from JSON text in a CSV column. None when absent."""
    if value is MISSING or value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError:
            raise RecordError(f"{where}: {show(text)} is not JSON") from None
    if not isinstance(value, want):
        raise RecordError(f"{where}: expected {'an object' if want is dict else 'a list'}, got {kind(value)}")
    return value
