"""Mapping rules: a JSON document → a validated, compiled converter from source records to mParticle data.

The document format is described in the README ("Mappings"). `validate()` returns every problem with the
place it was found; `compile_mapping()` turns a valid document into a `Converter` whose `convert()` is called
once per record on the hot path, so each rule is compiled to a small closure once.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from feeds.mparticle import schema
from feeds.mparticle.batch import UserRecord, deterministic_id

MISSING = object()
VALUE_TYPES = ("auto", "string", "int", "float", "bool")
TRANSFORMS = ("trim", "lower", "upper")
TIMESTAMP_FORMATS = ("auto", "iso8601", "epoch_s", "epoch_ms")
TOP_LEVEL_KEYS = {"version", "record_key", "identities", "user_attributes", "events", "options", "description"}
VALUE_KEYS = {"field", "value", "type", "transform", "required", "default"}
EVENT_KEYS = {"event_type", "name", "custom_event_type", "timestamp", "attributes", "screen_name"}
TRUE_WORDS = {"true", "t", "yes", "y", "1", "on"}
FALSE_WORDS = {"false", "f", "no", "n", "0", "off", ""}


class MappingError(ValueError):
    """A mapping document that cannot be used; `errors` lists each problem and where it is."""

    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__("; ".join(errors))


class RecordError(ValueError):
    """A source record that cannot become valid mParticle data; the message says why, for people."""


# --------------------------------------------------------------------------------------------- validation


def _check_value_spec(spec: object, where: str, errors: list[str]) -> None:
    if isinstance(spec, str):
        if not spec:
            errors.append(f"{where}: the field name is empty")
        return
    if not isinstance(spec, dict):
        errors.append(f"{where}: expected a field name or an object with 'field' or 'value'")
        return
    unknown = set(spec) - VALUE_KEYS
    if unknown:
        errors.append(f"{where}: unknown keys {sorted(unknown)} (allowed: {sorted(VALUE_KEYS)})")
    if ("field" in spec) == ("value" in spec):
        errors.append(f"{where}: give exactly one of 'field' or 'value'")
    if "field" in spec and (not isinstance(spec["field"], str) or not spec["field"]):
        errors.append(f"{where}.field: must be a non-empty string")
    if spec.get("type", "auto") not in VALUE_TYPES:
        errors.append(f"{where}.type: {spec.get('type')!r} is not one of {', '.join(VALUE_TYPES)}")
    transforms = spec.get("transform", [])
    if isinstance(transforms, str):
        transforms = [transforms]
    if not isinstance(transforms, list) or any(t not in TRANSFORMS for t in transforms):
        errors.append(f"{where}.transform: must be a list of {', '.join(TRANSFORMS)}")
    if "required" in spec and not isinstance(spec["required"], bool):
        errors.append(f"{where}.required: must be true or false")


def _check_timestamp_spec(spec: object, where: str, errors: list[str]) -> None:
    if isinstance(spec, str):
        return
    if not isinstance(spec, dict) or not isinstance(spec.get("field"), str) or not spec.get("field"):
        errors.append(f"{where}: expected a field name or an object with 'field' and optional 'format'")
        return
    unknown = set(spec) - {"field", "format", "required"}
    if unknown:
        errors.append(f"{where}: unknown keys {sorted(unknown)}")
    fmt = spec.get("format", "auto")
    if not isinstance(fmt, str) or (fmt not in TIMESTAMP_FORMATS and "%" not in fmt):
        errors.append(
            f"{where}.format: {fmt!r} is not one of {', '.join(TIMESTAMP_FORMATS)} or a strptime pattern like '%Y-%m-%d %H:%M:%S'"
        )


def validate(doc: object) -> list[str]:
    """Every problem in a mapping document, each naming where it is. An empty list means valid."""
    errors: list[str] = []
    if not isinstance(doc, dict):
        return ["the mapping must be a JSON object"]
    unknown = set(doc) - TOP_LEVEL_KEYS
    if unknown:
        errors.append(f"unknown top-level keys {sorted(unknown)} (allowed: {sorted(TOP_LEVEL_KEYS)})")
    if "record_key" in doc and (not isinstance(doc["record_key"], str) or not doc["record_key"]):
        errors.append("record_key: must be the name of a field")

    identities = doc.get("identities")
    if not isinstance(identities, dict) or not identities:
        errors.append("identities: map at least one identity key (for example customer_id) to a field")
        identities = {}
    for key, spec in identities.items():
        if key not in schema.IDENTITY_KEYS:
            errors.append(
                f"identities.{key}: not an mParticle identity key (allowed: {', '.join(schema.IDENTITY_KEYS)})"
            )
        _check_value_spec(spec, f"identities.{key}", errors)

    attributes = doc.get("user_attributes", {})
    if not isinstance(attributes, dict):
        errors.append("user_attributes: must be an object of attribute name → field")
        attributes = {}
    if len(attributes) > schema.MAX_USER_ATTRIBUTES:
        errors.append(
            f"user_attributes: {len(attributes)} attributes, mParticle takes at most {schema.MAX_USER_ATTRIBUTES}"
        )
    for name, spec in attributes.items():
        if not name:
            errors.append("user_attributes: an attribute name is empty")
        elif len(name) > schema.MAX_NAME_LENGTH:
            errors.append(f"user_attributes.{name[:40]}…: name longer than {schema.MAX_NAME_LENGTH} characters")
        elif name.startswith("$") and name not in schema.RESERVED_USER_ATTRIBUTES:
            errors.append(
                f"user_attributes.{name}: names starting with $ are reserved ({', '.join(schema.RESERVED_USER_ATTRIBUTES)})"
            )
        _check_value_spec(spec, f"user_attributes.{name}", errors)

    events = doc.get("events", [])
    if not isinstance(events, list):
        errors.append("events: must be a list of event rules")
        events = []
    for i, rule in enumerate(events):
        where = f"events[{i}]"
        if not isinstance(rule, dict):
            errors.append(f"{where}: must be an object")
            continue
        unknown = set(rule) - EVENT_KEYS
        if unknown:
            errors.append(f"{where}: unknown keys {sorted(unknown)} (allowed: {sorted(EVENT_KEYS)})")
        event_type = rule.get("event_type", "custom_event")
        if event_type not in ("custom_event", "screen_view"):
            errors.append(f"{where}.event_type: {event_type!r} is not supported here (custom_event, screen_view)")
        if event_type == "custom_event":
            if "name" not in rule:
                errors.append(f"{where}.name: a custom_event needs a name (text or a field)")
            elif isinstance(rule["name"], str):
                if not rule["name"].strip():
                    errors.append(f"{where}.name: must not be empty")
            else:
                _check_value_spec(rule["name"], f"{where}.name", errors)
            if rule.get("custom_event_type", "other") not in schema.CUSTOM_EVENT_TYPES:
                errors.append(
                    f"{where}.custom_event_type: {rule.get('custom_event_type')!r} is not one of {', '.join(schema.CUSTOM_EVENT_TYPES)}"
                )
        elif event_type == "screen_view":
            screen = rule.get("screen_name", rule.get("name"))
            if screen is None:
                errors.append(f"{where}.screen_name: a screen_view needs a screen_name (text or a field)")
            elif not isinstance(screen, str):
                _check_value_spec(screen, f"{where}.screen_name", errors)
        if "timestamp" in rule:
            _check_timestamp_spec(rule["timestamp"], f"{where}.timestamp", errors)
        attrs = rule.get("attributes", {})
        if not isinstance(attrs, dict):
            errors.append(f"{where}.attributes: must be an object of attribute name → field")
            attrs = {}
        if len(attrs) > schema.MAX_ATTRIBUTES_PER_EVENT:
            errors.append(
                f"{where}.attributes: {len(attrs)} attributes, mParticle takes at most {schema.MAX_ATTRIBUTES_PER_EVENT}"
            )
        for name, spec in attrs.items():
            if not name:
                errors.append(f"{where}.attributes: an attribute name is empty")
            _check_value_spec(spec, f"{where}.attributes.{name}", errors)

    options = doc.get("options", {})
    if not isinstance(options, dict):
        errors.append("options: must be an object")
    elif options.get("long_values", "reject") not in ("reject", "truncate"):
        errors.append("options.long_values: must be 'reject' or 'truncate'")
    return errors


# ---------------------------------------------------------------------------------------------- compiling


def _getter(path: str) -> Callable[[dict], object]:
    """Read a field; dots walk into nested objects unless the record has the dotted name itself."""
    if "." not in path:
        return lambda record: record.get(path, MISSING)
    parts = path.split(".")

    def get(record: dict) -> object:
        value = record.get(path, MISSING)
        if value is not MISSING:
            return value
        value = record
        for part in parts:
            if isinstance(value, dict):
                value = value.get(part, MISSING)
            elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
                value = value[int(part)]
            else:
                return MISSING
            if value is MISSING:
                return MISSING
        return value

    return get


def _coerce(value: object, kind: str, where: str) -> object:
    if kind == "auto" or value is None:
        if isinstance(value, float) and not math.isfinite(value):
            raise RecordError(f"{where}: {value!r} is not a number mParticle accepts")
        return value
    if kind == "string":
        if isinstance(value, (dict, list)):
            raise RecordError(f"{where}: expected text, got a {type(value).__name__}")
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, (int, float)) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in TRUE_WORDS | FALSE_WORDS:
            return value.strip().lower() in TRUE_WORDS
        raise RecordError(f"{where}: {_show(value)} is not a boolean (true/false, yes/no, 1/0)")
    if kind == "int":
        if isinstance(value, bool):
            raise RecordError(f"{where}: {_show(value)} is not a whole number")
        if isinstance(value, int):
            return value
        try:
            number = float(value.strip()) if isinstance(value, str) else float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise RecordError(f"{where}: {_show(value)} is not a whole number") from None
        if not math.isfinite(number) or number != int(number):
            raise RecordError(f"{where}: {_show(value)} is not a whole number")
        return int(number)
    if kind == "float":
        if isinstance(value, bool):
            raise RecordError(f"{where}: {_show(value)} is not a number")
        try:
            number = float(value.strip()) if isinstance(value, str) else float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise RecordError(f"{where}: {_show(value)} is not a number") from None
        if not math.isfinite(number):
            raise RecordError(f"{where}: {_show(value)} is not a finite number")
        return number
    raise AssertionError(kind)


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "…"


def _value(spec: object, where: str) -> Callable[[dict], object]:
    """Compile a value spec into a function of the record that returns the value or MISSING."""
    if isinstance(spec, str):
        spec = {"field": spec}
    assert isinstance(spec, dict)
    kind = spec.get("type", "auto")
    transforms = spec.get("transform", [])
    if isinstance(transforms, str):
        transforms = [transforms]
    required = spec.get("required", False)
    default = spec.get("default", MISSING)
    if "value" in spec:
        constant = _coerce(spec["value"], kind, where)
        return lambda record: constant
    get = _getter(spec["field"])
    field_name = spec["field"]
    plain = kind == "auto" and not transforms

    def read(record: dict) -> object:
        value = get(record)
        if value is MISSING or value == "":
            if default is not MISSING:
                value = default
            elif required:
                raise RecordError(f"{where}: field '{field_name}' is missing or empty")
            else:
                return MISSING
        if plain:
            if isinstance(value, float) and not math.isfinite(value):
                raise RecordError(f"{where}: {value!r} is not a number mParticle accepts")
            return value
        if isinstance(value, str):
            for t in transforms:
                value = value.strip() if t == "trim" else value.lower() if t == "lower" else value.upper()
        return _coerce(value, kind, where)

    return read


def parse_timestamp(value: object, fmt: str) -> int:
    """A timestamp in epoch milliseconds; naive date-times are read as UTC."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not a time")
    if fmt in ("epoch_ms", "epoch_s") or (fmt == "auto" and isinstance(value, (int, float))):
        number = float(value) if not isinstance(value, str) else float(value.strip())
        if not math.isfinite(number):
            raise ValueError("not a finite number")
        if fmt == "epoch_s" or (fmt == "auto" and abs(number) < 1e11):
            number *= 1000
        return int(round(number))
    if not isinstance(value, str):
        raise ValueError(f"expected text, got a {type(value).__name__}")
    text = value.strip()
    if fmt == "auto":
        try:
            return parse_timestamp(float(text), "auto")
        except ValueError:
            pass
    if fmt in ("auto", "iso8601"):
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        moment = datetime.fromisoformat(text)
    else:
        moment = datetime.strptime(text, fmt)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _timestamp(spec: object, where: str) -> Callable[[dict], int | None]:
    if isinstance(spec, str):
        spec = {"field": spec}
    assert isinstance(spec, dict)
    get = _getter(spec["field"])
    fmt = spec.get("format", "auto")
    required = spec.get("required", True)
    field_name = spec["field"]

    def read(record: dict) -> int | None:
        value = get(record)
        if value is MISSING or value is None or value == "":
            if required:
                raise RecordError(f"{where}: field '{field_name}' is missing or empty")
            return None
        try:
            return parse_timestamp(value, fmt)
        except (ValueError, TypeError, OverflowError, OSError) as e:
            raise RecordError(f"{where}: {_show(value)} is not a time in format {fmt} ({e})") from None

    return read


@dataclass
class Stats:
    """What a converter changed to keep within mParticle's limits, for the run's counters."""

    names_truncated: int = 0
    values_truncated: int = 0


class _Limits:
    def __init__(self, truncate_values: bool, stats: Stats):
        self.truncate_values = truncate_values
        self.stats = stats

    def name(self, name: str) -> str:
        if len(name) > schema.MAX_NAME_LENGTH:
            self.stats.names_truncated += 1
            return name[: schema.MAX_NAME_LENGTH]
        return name

    def scalar(self, value: object, where: str) -> object:
        if isinstance(value, (dict, list, tuple)):
            raise RecordError(f"{where}: must be a single value, got a {type(value).__name__}")
        if isinstance(value, str) and len(value) > schema.MAX_VALUE_LENGTH:
            if not self.truncate_values:
                raise RecordError(f"{where}: {len(value)} characters, over mParticle's {schema.MAX_VALUE_LENGTH}")
            self.stats.values_truncated += 1
            return value[: schema.MAX_VALUE_LENGTH]
        return value

    def user_value(self, value: object, where: str) -> object:
        if isinstance(value, (list, tuple)):
            if len(value) > schema.MAX_USER_ATTRIBUTE_LIST_ENTRIES:
                raise RecordError(
                    f"{where}: {len(value)} entries, over mParticle's {schema.MAX_USER_ATTRIBUTE_LIST_ENTRIES}"
                )
            out = []
            for item in value:
                if isinstance(item, (dict, list)) or item is None:
                    raise RecordError(f"{where}: list entries must be text")
                item = str(item) if not isinstance(item, str) else item
                if len(item) > schema.MAX_USER_ATTRIBUTE_LIST_ENTRY_LENGTH:
                    raise RecordError(
                        f"{where}: a list entry has {len(item)} characters, over {schema.MAX_USER_ATTRIBUTE_LIST_ENTRY_LENGTH}"
                    )
                out.append(item)
            return out
        return self.scalar(value, where)


@dataclass
class Converter:
    """A compiled mapping. `convert(record, ref)` returns a UserRecord or raises RecordError."""

    doc: dict
    convert: Callable[[dict, str], UserRecord]
    stats: Stats = field(default_factory=Stats)


def compile_mapping(doc: dict, *, id_salt: str = "") -> Converter:
    """Compile a mapping document. `id_salt` (e.g. the workspace id) makes event ids unique per workspace."""
    errors = validate(doc)
    if errors:
        raise MappingError(errors)
    stats = Stats()
    options = doc.get("options", {})
    limits = _Limits(options.get("long_values", "reject") == "truncate", stats)
    record_key = _getter(doc["record_key"]) if doc.get("record_key") else None

    identity_rules = [(key, _value(spec, f"identities.{key}")) for key, spec in doc["identities"].items()]
    attribute_rules = [
        (limits.name(name), _value(spec, f"user_attributes.{name}"), f"user_attributes.{name}")
        for name, spec in doc.get("user_attributes", {}).items()
    ]
    event_rules = [_compile_event(i, rule, limits, id_salt) for i, rule in enumerate(doc.get("events", []))]

    def convert(record: dict, ref: str) -> UserRecord:
        if not isinstance(record, dict):
            raise RecordError(f"expected an object, got a {type(record).__name__}")
        identities: dict[str, str] = {}
        for key, read in identity_rules:
            value = read(record)
            if value is MISSING or value is None:
                continue
            if isinstance(value, (dict, list)):
                raise RecordError(f"identities.{key}: must be text, got a {type(value).__name__}")
            if isinstance(value, bool):
                raise RecordError(f"identities.{key}: must be text, got a boolean")
            text = str(value) if not isinstance(value, str) else value
            if isinstance(value, float) and value.is_integer():
                text = str(int(value))
            if text:
                identities[key] = text
        if not identities:
            raise RecordError("no identity: every mapped identity field is missing or empty")
        attributes: dict[str, object] = {}
        for name, read, where in attribute_rules:
            value = read(record)
            if value is not MISSING:
                attributes[name] = limits.user_value(value, where)
        if record_key is not None:
            key = record_key(record)
            event_ref = ref if key is MISSING or key is None or key == "" else str(key)
        else:
            event_ref = ref
        events = [build(record, event_ref) for build in event_rules]
        return UserRecord(ref=ref, identities=identities, user_attributes=attributes, events=events)

    return Converter(doc=doc, convert=convert, stats=stats)


def _compile_event(index: int, rule: dict, limits: _Limits, id_salt: str) -> Callable[[dict, str], dict]:
    where = f"events[{index}]"
    event_type = rule.get("event_type", "custom_event")
    timestamp = _timestamp(rule["timestamp"], f"{where}.timestamp") if "timestamp" in rule else None
    attributes = [
        (limits.name(name), _value(spec, f"{where}.attributes.{name}"), f"{where}.attributes.{name}")
        for name, spec in rule.get("attributes", {}).items()
    ]
    name_key = "event_name" if event_type == "custom_event" else "screen_name"
    name_spec = rule.get("name") if event_type == "custom_event" else rule.get("screen_name", rule.get("name"))
    if isinstance(name_spec, str):
        constant_name = limits.name(name_spec)
        read_name = None
    else:
        constant_name = None
        read_name = _value(name_spec, f"{where}.{'name' if event_type == 'custom_event' else 'screen_name'}")
    custom_event_type = rule.get("custom_event_type", "other")
    salt = f"{id_salt}:{index}"

    def build(record: dict, ref: str) -> dict:
        if read_name is None:
            name = constant_name
        else:
            value = read_name(record)
            if value is MISSING or value is None or isinstance(value, (dict, list)):
                raise RecordError(f"{where}: the event name field is missing or not text")
            name = limits.name(str(value))
        data: dict = {name_key: name}
        if event_type == "custom_event":
            data["custom_event_type"] = custom_event_type
        if timestamp is not None:
            ts = timestamp(record)
            if ts is not None:
                data["timestamp_unixtime_ms"] = ts
        data["source_message_id"] = deterministic_id(salt, ref)
        if attributes:
            custom = {}
            for attr_name, read, attr_where in attributes:
                value = read(record)
                if value is not MISSING:
                    custom[attr_name] = limits.scalar(value, attr_where)
            if custom:
                data["custom_attributes"] = custom
        return {"event_type": event_type, "data": data}

    return build
