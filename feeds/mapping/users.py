"""User attributes: mapped ones (with `on_null`, the way a mapping deletes attributes) and those copied from
an object in the record (`user_attributes_from`), compiled into functions of the record."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from feeds.mparticle import schema

from .limits import MAX_VALUE, Limits, json_container
from .specs import value_reader
from .values import MISSING, RecordError, getter


class AttributeRule(NamedTuple):
    """One mapped user attribute, compiled."""

    name: str
    spec: object
    read: Callable[[dict], object]
    where: str
    mode: str  # on_null: send, omit or delete
    # "delete" needs to tell an absent field (leave the attribute alone) from an empty one (delete it).
    present: Callable[[dict], object] | None


def attribute_rules(doc: dict) -> list[AttributeRule]:
    rules = []
    for name, spec in doc.get("user_attributes", {}).items():
        mode = spec.get("on_null", "send") if isinstance(spec, dict) else "send"
        present = getter(spec["field"]) if mode == "delete" and "field" in spec else None
        where = f"user_attributes.{name}"
        rules.append(AttributeRule(name, spec, value_reader(spec, where), where, mode, present))
    return rules


def attributes_from(doc: dict, limits: Limits) -> Callable[[dict, dict, list], None] | None:
    """`user_attributes_from`: a function that copies the keys of the record's object into `attributes` (and
    the names of its null or empty ones into `deleted`, with "on_null": "delete"). None when not mapped."""
    from_spec = doc.get("user_attributes_from")
    if from_spec is None:
        return None
    from_field = from_spec if isinstance(from_spec, str) else from_spec["field"]
    from_mode = "send" if isinstance(from_spec, str) else from_spec.get("on_null", "send")
    dynamic = getter(from_field)
    from_where = "user_attributes_from"
    user_value = limits.user_value

    def fill(record: dict, attributes: dict, deleted: list) -> None:
        data = json_container(dynamic(record), dict, from_where)
        if not data:
            return
        if len(data) > schema.MAX_USER_ATTRIBUTES:
            raise RecordError(
                f"{from_where}: {len(data)} attributes, mParticle takes at most {schema.MAX_USER_ATTRIBUTES}"
            )
        for key, value in data.items():
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

    return fill


def user_attributes_reader(doc: dict, limits: Limits) -> Callable[[dict, dict, list], list] | None:
    """A function that fills the attributes dict of a record and returns its deleted attributes; None when
    the mapping has no user attributes."""
    rules = attribute_rules(doc)
    dynamic = attributes_from(doc, limits)
    if not rules and dynamic is None:
        return None
    user_value = limits.user_value

    def read(record: dict, attributes: dict, deleted: list) -> list:
        if dynamic is not None:
            dynamic(record, attributes, deleted)
        for name, _, read_value, where, mode, present in rules:
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
            return [name for name in deleted if name not in attributes]
        return deleted

    return read
