"""Compiling a valid mapping document into a `Converter`: one closure per rule, built once, so that
`convert()` (called once per record on the hot path) does no document lookups and no validation.

Everything a record can get wrong raises RecordError; anything else that escapes a rule is a bug, logged
and turned into a RecordError so that one strange record never stops a run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from feeds.mparticle import schema
from feeds.mparticle.batch import UserRecord

from .events import event_rule
from .limits import MAX_VALUE, Limits, Stats, identity_text, json_container, mpid_value
from .specs import value_reader
from .validation import MappingError, validate
from .values import MISSING, RecordError, getter, kind, scalar_text

logger = logging.getLogger(__name__)


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
    event_rules = [event_rule(i, rule, limits, id_salt) for i, rule in enumerate(doc.get("events", []))]
    unconditional = not any("when" in rule for rule in doc.get("events", []))  # every rule makes its event

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
            attributes: dict[str, object] = {}
            deleted: list[str] = []
            if user_attributes is not None:
                deleted = user_attributes(record, attributes, deleted)
            event_ref = ref
            if record_key is not None:
                key = record.get(record_key_field, MISSING) if record_key_field else record_key(record)
                if key is not MISSING and key is not None and key != "":
                    event_ref = key if type(key) is str else scalar_text(key, record_key_where)
            if unconditional:
                events = [build(record, event_ref) for build in event_rules]
            else:
                events = [e for e in (build(record, event_ref) for build in event_rules) if e is not None]
            return UserRecord(ref, identities, attributes, deleted, events, mpid)
        except RecordError:
            raise
        except Exception as e:
            # A bug, not the record's fault, but a run must go on: refuse the record and say so in the log.
            logger.warning("mapping failed on %s", ref, exc_info=True)
            raise RecordError(f"the record could not be converted ({type(e).__name__}: {str(e)[:200]})") from e

    return Converter(doc=doc, convert=convert, stats=stats)


def _user_attributes(doc: dict, limits: Limits) -> Callable[[dict, dict, list], list] | None:
    """A function that fills the attributes dict of a record and returns its deleted attributes."""
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

    def read(record: dict, attributes: dict, deleted: list) -> list:
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
            return [name for name in deleted if name not in attributes]
        return deleted

    return read
