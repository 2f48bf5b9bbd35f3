"""Compiling a valid mapping document into a `Converter`, built once, so that `convert()` (called once per
record on the hot path) does no document lookups and no validation.

Each rule is compiled to a small closure (this module, events.py, users.py); codegen.py then writes one Python
function for the whole mapping that does the common cases in line and calls those closures for the rest. The
closures alone make a converter too (`codegen=False`): it is the reference the generated one is tested against.

Everything a record can get wrong raises RecordError; anything else that escapes a rule is a bug, logged
and turned into a RecordError so that one strange record never stops a run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from feeds.mparticle.batch import SetAside, UserRecord, has_older, is_whole, whole_form
from feeds.words import kind

from .batchfields import batch_fields_reader, data_plan_context, data_plan_problems
from .codegen import generate_converter
from .events import event_rule
from .limits import Limits, Stats, identity_text, mpid_value, no_identity_error, no_identity_message
from .specs import value_reader
from .users import user_attributes_reader
from .validation import MappingError, validate
from .values import MISSING, RecordError, getter, scalar_text

logger = logging.getLogger(__name__)


@dataclass
class Converter:
    """A compiled mapping. `convert(record, ref)` returns a UserRecord or raises RecordError.

    `set_aside(record, ref, cutoff)` is the engine's way in (feeds.pipeline.set_aside): it converts the same
    way, and for a record in the common form (identities; no mpid, deletions or batch-level fields) with no
    event timestamped before `cutoff` (None: no bound) returns straight away what set_aside_form would make of
    it, as (user, data, event count), without making a UserRecord; any other record it returns as a UserRecord,
    to be routed."""

    doc: dict
    convert: Callable[[dict, str], UserRecord]
    set_aside: Callable[[dict, str, int | None], SetAside]
    stats: Stats = field(default_factory=Stats)
    source: str = ""  # the generated Python source of `convert`, for reading when in doubt
    # The `context` of every batch (the data plan: the mapping's, else the workspace's), or None.
    context: dict | None = None


def conversion_bug(error: Exception, ref: str) -> RecordError:
    """A bug, not the record's fault, but a run must go on: refuse the record and say so in the log.
    Called from an `except` block, so the log has the traceback."""
    logger.warning("mapping failed on %s", ref, exc_info=True)
    return RecordError(f"the record could not be converted ({type(error).__name__}: {str(error)[:200]})")


def compile_mapping(doc: dict, *, id_salt: str = "", codegen: bool = True, data_plan: dict | None = None) -> Converter:
    """Compile a mapping document. `id_salt` (e.g. the workspace id) makes event ids unique per workspace.
    `data_plan` ({"plan_id", "plan_version"?}, the workspace's) is used when the mapping names none.
    `codegen=False` gives the converter made of closures only (same output, slower)."""
    errors = validate(doc)
    if data_plan and "data_plan" not in doc:
        errors += data_plan_problems(data_plan, "the workspace's data plan")
    if errors:
        raise MappingError(errors)
    stats = Stats()
    limits = Limits(doc.get("options", {}).get("long_values", "reject") == "truncate", stats)
    context = data_plan_context(doc.get("data_plan", data_plan))
    if codegen:
        convert, set_aside, source = generate_converter(doc, limits, id_salt, conversion_bug)
        return Converter(doc, convert, set_aside, stats=stats, source=source, context=context)
    convert = _closure_converter(doc, limits, id_salt)
    return Converter(doc, convert, _set_aside_of(convert), stats=stats, context=context)


def _set_aside_of(convert: Callable[[dict, str], UserRecord]) -> Callable[[dict, str, int | None], SetAside]:
    """Converter.set_aside for the closures: convert, then take the common form apart."""

    def set_aside(record: dict, ref: str, cutoff: int | None) -> SetAside:
        user = convert(record, ref)
        if is_whole(user) and (cutoff is None or not has_older(user.events, cutoff)):
            return whole_form(user.identities, user.user_attributes, user.events)
        return user

    return set_aside


def _closure_converter(doc: dict, limits: Limits, id_salt: str) -> Callable[[dict, str], UserRecord]:
    record_key = getter(doc["record_key"]) if doc.get("record_key") else None
    record_key_field = doc.get("record_key") if record_key is not None and "." not in doc["record_key"] else None
    record_key_where = f"record_key: field '{doc.get('record_key')}'"
    identity_rules = [
        (key, value_reader(spec, f"identities.{key}"), f"identities.{key}")
        for key, spec in doc.get("identities", {}).items()
    ]
    read_mpid = value_reader(doc["mpid"], "mpid") if "mpid" in doc else None
    no_identity = no_identity_message(doc)
    user_attributes = user_attributes_reader(doc, limits)
    batch_fields = batch_fields_reader(doc)
    event_rules = [event_rule(i, rule, limits, id_salt) for i, rule in enumerate(doc.get("events", []))]
    # Without a `when`, every rule makes its event: then their builders never return None.
    unconditional = not any("when" in rule for rule in doc.get("events", []))
    always = cast("list[Callable[[dict, str], dict]]", event_rules) if unconditional else None

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
                raise no_identity_error(no_identity, record)
            attributes: dict[str, object] = {}
            deleted: list[str] = []
            if user_attributes is not None:
                deleted = user_attributes(record, attributes, deleted)
            event_ref = ref
            if record_key is not None:
                key = record.get(record_key_field, MISSING) if record_key_field else record_key(record)
                if key is not MISSING and key is not None and key != "":
                    event_ref = key if type(key) is str else scalar_text(key, record_key_where)
            if always is not None:
                events = [build(record, event_ref) for build in always]
            else:
                events = [e for e in (build(record, event_ref) for build in event_rules) if e is not None]
            fields = batch_fields(record) if batch_fields is not None else None
            return UserRecord(ref, identities, attributes, deleted, events, mpid, fields)
        except RecordError:
            raise
        except Exception as e:
            raise conversion_bug(e, ref) from e

    return convert
