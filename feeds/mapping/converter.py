"""Compiling a valid mapping document into a `Converter`: one closure per rule, built once, so that
`convert()` (called once per record on the hot path) does no document lookups and no validation.

Everything a record can get wrong raises RecordError; anything else that escapes a rule is a bug, logged
and turned into a RecordError so that one strange record never stops a run.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from feeds.mparticle import schema
from feeds.mparticle.batch import MPFEED_NAMESPACE, UserRecord

from .conditions import compile_condition
from .validation import ACTION_FIELDS, PRODUCT_FIELDS, MappingError, validate
from .values import (
    INT64_MAX,
    INT64_MIN,
    MISSING,
    RecordError,
    check_int,
    check_text,
    getter,
    is_template,
    kind,
    parse_template,
    scalar_text,
    show,
    template_reader,
    timestamp_reader,
    value_reader,
)
from .values import _base as base_value
from .values import _foreign as foreign_value

logger = logging.getLogger(__name__)

MAX_NAME = schema.MAX_NAME_LENGTH
MAX_VALUE = schema.MAX_VALUE_LENGTH
MAX_ENTRIES = schema.MAX_USER_ATTRIBUTE_LIST_ENTRIES
MAX_ENTRY = schema.MAX_USER_ATTRIBUTE_LIST_ENTRY_LENGTH


@dataclass
class Stats:
    """What a converter changed to keep within mParticle's limits, for the run's counters."""

    names_truncated: int = 0
    values_truncated: int = 0


@dataclass
class Converter:
    """A compiled mapping. `convert(record, ref)` returns a UserRecord or raises RecordError."""

    doc: dict
    convert: Callable[[dict, str], UserRecord]
    stats: Stats = field(default_factory=Stats)


# ------------------------------------------------------------------------------------------------- limits


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
            return self.scalar(base_value(value), where)
        return self.scalar(foreign_value(value, where), where)

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
    elif cls is float and value.is_integer() and abs(value) < 2**53:  # type: ignore[union-attr]
        number = int(value)  # type: ignore[arg-type]
    if number is None:
        raise RecordError(f"mpid: {show(value)} is not an integer")
    if not INT64_MIN <= number <= INT64_MAX:
        raise RecordError(f"mpid: {show(value)} is outside the 64-bit range")
    return number


def json_container(value: object, want: type, where: str) -> object:
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


def id_maker(prefix: str) -> Callable[[str], str]:
    """`deterministic_id(prefix, ref)` (uuid5 in mpfeed's namespace), with the prefix hashed once."""
    start = hashlib.sha1(MPFEED_NAMESPACE.bytes + f"{prefix}:".encode(), usedforsecurity=False)
    variant = _VARIANT

    def make(ref: str) -> str:
        digest = start.copy()
        digest.update(ref.encode("utf-8", "surrogatepass"))
        h = digest.hexdigest()
        # Version 5 in the 13th digit, the RFC 4122 variant in the 17th, as uuid.uuid5 does.
        return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{variant[h[16]]}{h[17:20]}-{h[20:32]}"

    return make


_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


# ----------------------------------------------------------------------------------------------- compiling


def compile_mapping(doc: dict, *, id_salt: str = "") -> Converter:
    """Compile a mapping document. `id_salt` (e.g. the workspace id) makes event ids unique per workspace."""
    errors = validate(doc)
    if errors:
        raise MappingError(errors)
    stats = Stats()
    limits = Limits(doc.get("options", {}).get("long_values", "reject") == "truncate", stats)
    record_key = getter(doc["record_key"]) if doc.get("record_key") else None
    record_key_field = doc.get("record_key") if record_key is not None and "." not in doc["record_key"] else None
    record_key_where = f"record_key: field '{doc.get('record_key')}'"
    identity_rules = [
        (key, value_reader(spec, f"identities.{key}"), f"identities.{key}")
        for key, spec in doc.get("identities", {}).items()
    ]
    read_mpid = value_reader(doc["mpid"], "mpid") if "mpid" in doc else None
    no_identity = "no identity: every mapped identity field " + ("and mpid " if read_mpid else "")
    no_identity += "is missing or empty"
    user_attributes = _user_attributes(doc, limits)
    event_rules = [_event(i, rule, limits, id_salt) for i, rule in enumerate(doc.get("events", []))]

    def convert(record: dict, ref: str) -> UserRecord:
        try:
            if not isinstance(record, dict):
                raise RecordError(f"expected an object, got {kind(record)}")
            identities: dict[str, str] = {}
            for key, read, where in identity_rules:
                value = read(record)
                if type(value) is str and value.isascii():  # the common case: readers never return ""
                    identities[key] = value
                elif value is not MISSING and value is not None:
                    text = identity_text(value, where)
                    if text:
                        identities[key] = text
            mpid = mpid_value(read_mpid(record)) if read_mpid is not None else None
            if not identities and mpid is None:
                raise RecordError(no_identity)
            if user_attributes is not None:
                attributes, deleted = user_attributes(record)
            else:
                attributes, deleted = {}, []
            event_ref = ref
            if record_key is not None:
                key = record.get(record_key_field, MISSING) if record_key_field else record_key(record)
                if key is not MISSING and key is not None and key != "":
                    event_ref = key if type(key) is str else scalar_text(key, record_key_where)
            events = []
            for build in event_rules:
                event = build(record, event_ref)
                if event is not None:
                    events.append(event)
            return UserRecord(ref, identities, attributes, deleted, events, mpid)
        except RecordError:
            raise
        except Exception as e:
            # A bug, not the record's fault, but a run must go on: refuse the record and say so in the log.
            logger.warning("mapping failed on %s", ref, exc_info=True)
            raise RecordError(f"the record could not be converted ({type(e).__name__}: {str(e)[:200]})") from e

    return Converter(doc=doc, convert=convert, stats=stats)


def _user_attributes(doc: dict, limits: Limits) -> Callable[[dict], tuple[dict, list]] | None:
    rules = []
    for name, spec in doc.get("user_attributes", {}).items():
        mode = spec.get("on_null", "send") if isinstance(spec, dict) else "send"
        # "delete" needs to tell an absent field (leave the attribute alone) from an empty one (delete it).
        present = getter(spec["field"]) if mode == "delete" and "field" in spec else None
        rules.append((name, value_reader(spec, f"user_attributes.{name}"), f"user_attributes.{name}", mode, present))
    from_spec = doc.get("user_attributes_from")
    if not rules and from_spec is None:
        return None
    user_value = limits.user_value
    dynamic = None
    if from_spec is not None:
        from_field = from_spec if isinstance(from_spec, str) else from_spec["field"]
        from_mode = "send" if isinstance(from_spec, str) else from_spec.get("on_null", "send")
        dynamic = getter(from_field)
        from_where = "user_attributes_from"

    def read(record: dict) -> tuple[dict, list]:
        attributes: dict[str, object] = {}
        deleted: list[str] = []
        if dynamic is not None:
            data = json_container(dynamic(record), dict, from_where)
            if data:
                if len(data) > schema.MAX_USER_ATTRIBUTES:
                    raise RecordError(
                        f"{from_where}: {len(data)} attributes, mParticle takes at most {schema.MAX_USER_ATTRIBUTES}"
                    )
                for key, value in data.items():  # type: ignore[union-attr]
                    name = limits.dynamic_name(key, from_where)
                    where = f"{from_where}: '{name[:40]}'"
                    if name[0] == "$" and name not in schema.RESERVED_USER_ATTRIBUTES:
                        raise RecordError(f"{where}: names starting with $ are reserved")
                    if value is None or value == "":
                        if from_mode == "delete":
                            deleted.append(name)
                        elif from_mode == "send" and value is None:
                            attributes[name] = None
                        continue
                    attributes[name] = user_value(value, where)
        for name, read_value, where, mode, present in rules:
            value = read_value(record)
            if type(value) is str and len(value) <= MAX_VALUE and value.isascii():
                attributes[name] = value
                continue
            if value is MISSING or value is None:
                if mode == "delete" and (value is None or (present is not None and present(record) is not MISSING)):
                    deleted.append(name)
                    attributes.pop(name, None)
                elif value is None and mode == "send":
                    attributes[name] = None
                continue
            attributes[name] = user_value(value, where)
        if len(attributes) > schema.MAX_USER_ATTRIBUTES:
            raise RecordError(
                f"user_attributes: {len(attributes)} attributes, mParticle takes at most {schema.MAX_USER_ATTRIBUTES}"
            )
        if deleted and attributes:
            deleted = [name for name in deleted if name not in attributes]
        return attributes, deleted

    return read


def _attributes(
    static: dict, from_spec: object, where: str, limits: Limits
) -> Callable[[dict], dict[str, object]] | None:
    """Custom attributes of an event or product: mapped ones, and optionally every key of a nested object
    (mapped ones win). None when there are none."""
    if not static and from_spec is None:
        return None
    rules = [
        (name[:MAX_NAME], value_reader(spec, f"{where}.{name}"), f"{where}.{name}", len(name) > MAX_NAME)
        for name, spec in static.items()
    ]
    scalar = limits.scalar
    stats = limits.stats
    dynamic = None
    if from_spec is not None:
        dynamic = getter(from_spec if isinstance(from_spec, str) else from_spec["field"])
        from_where = where.rsplit(".", 1)[0] + ".attributes_from"

    def build(record: dict) -> dict[str, object]:
        custom: dict[str, object] = {}
        if dynamic is not None:
            data = json_container(dynamic(record), dict, from_where)
            if data:
                if len(data) > schema.MAX_ATTRIBUTES_PER_EVENT:
                    raise RecordError(
                        f"{from_where}: {len(data)} attributes, mParticle takes at most {schema.MAX_ATTRIBUTES_PER_EVENT}"
                    )
                for key, value in data.items():  # type: ignore[union-attr]
                    name = limits.dynamic_name(key, from_where)
                    if value != "":
                        custom[name] = scalar(value, f"{from_where}: '{name[:40]}'")
        for name, read, at, cut in rules:
            value = read(record)
            if type(value) is str and len(value) <= MAX_VALUE and value.isascii():
                custom[name] = value
            elif value is not MISSING:
                custom[name] = scalar(value, at)
            else:
                continue
            if cut:
                stats.names_truncated += 1
        if dynamic is not None and len(custom) > schema.MAX_ATTRIBUTES_PER_EVENT:
            raise RecordError(
                f"{where}: {len(custom)} attributes, mParticle takes at most {schema.MAX_ATTRIBUTES_PER_EVENT}"
            )
        return custom

    return build


def _name(spec: object, where: str, limits: Limits) -> tuple[str | None, Callable[[dict], str]]:
    """An event or screen name: (constant, None-safe reader). The constant is given when the name does not
    depend on the record and needs no counting, so the hot path can use it directly."""
    stats = limits.stats
    if isinstance(spec, str):
        parts = parse_template(spec) if is_template(spec) else [(spec, None)]
        if all(f is None for _, f in parts):
            text = "".join(literal for literal, _ in parts)
            if len(text) <= MAX_NAME:
                return text, lambda record: text
            cut = text[:MAX_NAME]

            def constant_cut(record: dict) -> str:
                stats.names_truncated += 1
                return cut

            return None, constant_cut
        render = template_reader(spec, where)
        return None, lambda record: limits.name(render(record), where)
    read = value_reader(spec, where)

    def from_field(record: dict) -> str:
        value = read(record)
        if value is MISSING or value is None:
            raise RecordError(f"{where}: the event name field is missing or not text")
        return limits.name(value if type(value) is str else scalar_text(value, where), where)

    return None, from_field


def _choice(spec: object, allowed: tuple[str, ...], where: str, what: str) -> tuple[str | None, Callable[[dict], str]]:
    """A value that must be one of `allowed`: constant text, or read from the record and checked."""
    if isinstance(spec, str):
        return spec, lambda record: spec
    read = value_reader(spec, where, "string")

    def choose(record: dict) -> str:
        value = read(record)
        if value is MISSING or value is None:
            raise RecordError(f"{where}: the {what} is missing or empty")
        if value not in allowed:
            raise RecordError(f"{where}: {show(value)} is not a {what} ({', '.join(allowed)})")
        return value  # type: ignore[return-value]

    return None, choose


def _event(index: int, rule: dict, limits: Limits, id_salt: str) -> Callable[[dict, str], dict | None]:
    where = f"events[{index}]"
    event_type = rule.get("event_type", "custom_event")
    when = compile_condition(rule["when"]) if "when" in rule else None
    timestamp = timestamp_reader(rule["timestamp"], f"{where}.timestamp") if "timestamp" in rule else None
    attributes = _attributes(rule.get("attributes", {}), rule.get("attributes_from"), f"{where}.attributes", limits)
    make_id = id_maker(f"{id_salt}:{index}")

    if event_type == "custom_event":
        constant_name, read_name = _name(rule["name"], f"{where}.name", limits)
        constant_type, read_type = _choice(
            rule.get("custom_event_type", "other"),
            schema.CUSTOM_EVENT_TYPES,
            f"{where}.custom_event_type",
            "custom event type",
        )

        def head(record: dict) -> dict:
            return {
                "event_name": constant_name if constant_name is not None else read_name(record),
                "custom_event_type": constant_type if constant_type is not None else read_type(record),
            }

    elif event_type == "screen_view":
        _, read_screen = _name(rule.get("screen_name", rule.get("name")), f"{where}.screen_name", limits)

        def head(record: dict) -> dict:
            return {"screen_name": read_screen(record)}

    else:
        head = _product_action(rule["product_action"], f"{where}.product_action", limits)

    if event_type == "custom_event" and constant_name is not None and constant_type is not None:
        # The most common rule, a fixed name and type: no call for the head.
        def build(record: dict, ref: str) -> dict | None:
            if when is not None and not when(record):
                return None
            data = {"event_name": constant_name, "custom_event_type": constant_type}
            if timestamp is not None:
                ts = timestamp(record)
                if ts is not None:
                    data["timestamp_unixtime_ms"] = ts
            data["source_message_id"] = make_id(ref)
            if attributes is not None:
                custom = attributes(record)
                if custom:
                    data["custom_attributes"] = custom
            return {"event_type": "custom_event", "data": data}

        return build

    def build(record: dict, ref: str) -> dict | None:
        if when is not None and not when(record):
            return None
        data = head(record)
        if timestamp is not None:
            ts = timestamp(record)
            if ts is not None:
                data["timestamp_unixtime_ms"] = ts
        data["source_message_id"] = make_id(ref)
        if attributes is not None:
            custom = attributes(record)
            if custom:
                data["custom_attributes"] = custom
        return {"event_type": event_type, "data": data}

    return build


def _product_action(spec: dict, where: str, limits: Limits) -> Callable[[dict], dict]:
    """The data of a commerce event: {"product_action": {...}, "currency_code": ...}."""
    constant_action, read_action = _choice(spec["action"], schema.PRODUCT_ACTIONS, f"{where}.action", "product action")
    fields = [
        (key, value_reader(spec[key], f"{where}.{key}", default_type), f"{where}.{key}")
        for key, default_type in ACTION_FIELDS.items()
        if key in spec and key != "currency_code"
    ]
    currency = (
        value_reader(spec["currency_code"], f"{where}.currency_code", "string") if "currency_code" in spec else None
    )
    products = _products(spec["products"], f"{where}.products", limits) if "products" in spec else None
    scalar = limits.scalar

    def build(record: dict) -> dict:
        action: dict[str, object] = {"action": constant_action if constant_action is not None else read_action(record)}
        for key, read, at in fields:
            value = read(record)
            if value is not MISSING and value is not None:
                action[key] = scalar(value, at)
        if products is not None:
            items = products(record)
            if items:
                action["products"] = items
        data: dict[str, object] = {"product_action": action}
        if currency is not None:
            code = currency(record)
            if code is not MISSING and code is not None:
                data["currency_code"] = scalar(code, f"{where}.currency_code")
        return data

    return build


def _product(spec: dict, where: str, limits: Limits) -> Callable[[dict], dict | None]:
    """One product from a source (the record, or an item of a list): None when it has no values at all."""
    fields = [
        (key, value_reader(spec[key], f"{where}.{key}", default_type), f"{where}.{key}")
        for key, default_type in PRODUCT_FIELDS.items()
        if key in spec
    ]
    attributes = _attributes(spec.get("attributes", {}), None, f"{where}.attributes", limits)
    scalar = limits.scalar

    def build(source: dict) -> dict | None:
        product: dict[str, object] = {}
        for key, read, at in fields:
            value = read(source)
            if value is not MISSING and value is not None:
                product[key] = scalar(value, at)
        custom = attributes(source) if attributes is not None else None
        if not product and not custom:
            return None
        if "id" not in product and "name" not in product:
            raise RecordError(f"{where}: a product needs an id or a name, and both are missing")
        if custom:
            product["custom_attributes"] = custom
        return product

    return build


def _products(spec: dict | list, where: str, limits: Limits) -> Callable[[dict], list[dict]]:
    if isinstance(spec, list):
        # Products read from columns: an empty group of columns is no product.
        builders = [_product(one, f"{where}[{i}]", limits) for i, one in enumerate(spec)]

        def from_columns(record: dict) -> list[dict]:
            return [p for p in (build(record) for build in builders) if p is not None]

        return from_columns

    source = spec["from"]
    get_items = getter(source)
    build_one = _product(spec, where, limits)
    from_where = f"{where}.from"

    def from_list(record: dict) -> list[dict]:
        items = json_container(get_items(record), list, f"{from_where}: field '{source}'")
        if not items:
            return []
        products = []
        for i, item in enumerate(items):  # type: ignore[arg-type]
            if not isinstance(item, dict):
                raise RecordError(f"{where}: item {i + 1} of '{source}' is {kind(item)}, not an object")
            try:
                product = build_one(item)
            except RecordError as e:
                raise RecordError(f"{e} (item {i + 1} of '{source}')") from None
            if product is None:
                raise RecordError(f"{where}: item {i + 1} of '{source}' has none of the mapped product fields")
            products.append(product)
        return products

    return from_list
