"""The hot path written out: one Python function per mapping, generated once and compiled.

`generate_converter()` writes the source of a single `convert(record, ref)` for a mapping: direct
`record.get(...)` reads, identities, user attributes and events built in line. Only the common cases are written
out — text that needs no check beyond being ASCII and short enough, a number read from text, an ISO 8601 time
in UTC, a custom event with a fixed name and type. Everything else, and every value the written-out case does
not take (empty, not text, not a finite number, too long…), goes through the closures the reference converter
is made of (specs.py, events.py, users.py), which read the value again from the record, and then through the
same steps as there (`_slow_paths`). A written-out case therefore only ever produces what the closures would
have produced, and every message and counter comes from them: tests/test_mapping_compiled.py holds the two
converters to that. `set_aside(record, ref, cutoff)` first tries the commonest record of a common feed as text
(`_as_text`): its set-aside form spliced together from pieces of JSON, which the general code would serialize.

Nothing from the document is pasted into the source as text. Field names, attribute names and other constants
enter it only as the `repr()` of a plain str/int/float/bool/None that reads back as the same value
(`_literal`), or as objects bound in the function's namespace under names made up here (_r0, _c1…).
"""

from __future__ import annotations

import ast
import contextlib
import itertools
import math
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import orjson

from feeds.mparticle import schema
from feeds.mparticle.batch import (
    ID_NAMESPACE,
    USER_KEY_TEXT,
    WHOLE,
    WHOLE_WITH_ATTRIBUTES,
    SetAside,
    UserRecord,
    has_older,
    user_key,
    uuid5,
    whole_form,
)
from feeds.words import kind

from .batchfields import batch_fields_reader
from .conditions import compile_condition
from .events import attributes_reader, choice_reader, event_rule, id_prefix, name_reader
from .limits import (
    INT64_MAX,
    INT64_MIN,
    MAX_NAME,
    MAX_VALUE,
    Limits,
    identity_text,
    mpid_value,
    no_identity_error,
    no_identity_message,
)
from .specs import value_reader
from .timestamps import EPOCH, MAX_TIME_TEXT, timestamp_reader
from .users import attribute_rules, attributes_from
from .values import MISSING, RecordError, getter, scalar_text

# Types whose common case is written out: text as read, or a number read from text.
_TEXT_TYPES = ("auto", "string")
_NUMBER_TYPES = ("int", "float", "number")
_TRANSFORMS = {
    "trim": ".strip()",
    "lower": ".lower()",
    "upper": ".upper()",
    # As specs._decimal_comma does it.
    "decimal_comma": r""".replace(".", "").replace(" ", "").replace("\xa0", "").replace("\u202f", "").replace(",", ".")""",
}


class _Slow:
    """Marks a value the written-out case does not take: the closure reads it instead."""

    __slots__ = ()


_SLOW = _Slow()


def _literal(value: object) -> str:
    """`value` as Python source, for plain constants only. The repr() of an exact str, int, bool or None reads
    back as the same value (a language guarantee); a float's is checked."""
    cls = type(value)
    if cls not in (str, int, float, bool, type(None)) or (cls is float and not math.isfinite(value)):  # type: ignore[arg-type]
        raise TypeError(f"not a plain constant: {cls.__name__}")
    text = repr(value)
    if cls is float and ast.literal_eval(text) != value:
        raise ValueError(f"{text} does not read back as the same value")
    return text


# Values written out per mapping; the others (of mappings with hundreds of values) call their closures, so that
# compiling stays quick (a few ms) whatever the mapping.
WRITTEN_OUT_VALUES = 300


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.namespace: dict[str, object] = {}
        self._numbers = itertools.count()
        self.values_left = WRITTEN_OUT_VALUES

    def __call__(self, depth: int, line: str) -> None:
        self.lines.append("    " * depth + line)

    @contextlib.contextmanager
    def apart(self) -> Iterator[list[str]]:
        """The lines written within go to the list given, not after the others."""
        kept, self.lines = self.lines, []
        try:
            yield self.lines
        finally:
            self.lines = kept

    def bind(self, obj: object, prefix: str) -> str:
        """A name for `obj` in the generated function's namespace."""
        name = f"_{prefix}{next(self._numbers)}"
        self.namespace[name] = obj
        return name


# Every field of UserRecord and the generated variable that holds it.
_USER_RECORD_FIELDS = (
    ("ref", "ref"),
    ("identities", "identities"),
    ("user_attributes", "attributes"),
    ("deleted_user_attributes", "deleted"),
    ("events", "events"),
    ("mpid", "mpid"),
    ("batch_fields", "batch_fields"),
)
if tuple(name for name, _ in _USER_RECORD_FIELDS) != UserRecord.__slots__:
    raise RuntimeError("UserRecord's fields changed: update _USER_RECORD_FIELDS in feeds/mapping/codegen.py")


def generate_converter(
    doc: dict, limits: Limits, id_salt: str, bug: Callable[[Exception, str], Exception]
) -> tuple[Callable[[dict, str], UserRecord], Callable[[dict, str, int | None], SetAside], str]:
    """The generated `convert(record, ref)` and `set_aside(record, ref, cutoff)` of a valid mapping (see
    Converter), and their source. `bug(error, ref)` makes the RecordError for an exception that is not the
    record's fault (and logs it)."""
    w = _Writer()
    w.namespace.update(
        MISSING=MISSING,
        SLOW=_SLOW,
        RecordError=RecordError,
        UserRecord=UserRecord,
        new_object=object.__new__,
        whole_form=whole_form,
        has_older=has_older,
        dumps=orjson.dumps,
        SORT_KEYS=orjson.OPT_SORT_KEYS,
        USER_KEY_TEXT=USER_KEY_TEXT,
        user_key=user_key,
        WHOLE=WHOLE,
        WITH_ATTRIBUTES=WHOLE_WITH_ATTRIBUTES,
        kind=kind,
        mpid_value=mpid_value,
        no_identity_error=no_identity_error,
        scalar_text=scalar_text,
        fromisoformat=datetime.fromisoformat,
        UTC=UTC,
        EPOCH=EPOCH,
        uuid5=uuid5,
        ID_NAMESPACE=ID_NAMESPACE,
        concat="".join,
        concat_bytes=b"".join,
        bug=bug,
        **_slow_paths(limits),
    )
    w(2, "if not isinstance(record, dict):")
    w(3, 'raise RecordError(f"expected an object, got {kind(record)}")')
    w(2, "get = record.get")
    # set_aside's own way for the commonest records, written before the rest (see _as_text).
    head = len(w.lines)
    with w.apart() as as_text:
        _as_text(w, doc, limits, id_salt)
    _identities(w, doc)
    can_delete = _user_attributes(w, doc, limits)
    _record_key(w, doc)
    stamps = _events(w, doc, limits, id_salt)
    # Batch-level fields (device_info, ip…): rare, so not written out; None costs one store.
    read_batch_fields = batch_fields_reader(doc)
    if read_batch_fields is None:
        w(2, "batch_fields = None")
    else:
        w(2, f"batch_fields = {w.bind(read_batch_fields, 'x')}(record)")
    body = w.lines
    # UserRecord(ref, identities, …) without the call to its generated __init__ (a Python function): the same
    # seven fields stored here, at half the cost per record (test_mapping_compiled checks the records are equal).
    w.lines = ["    " * 2 + "out = new_object(UserRecord)"]
    for name, value in _USER_RECORD_FIELDS:
        w(2, f"out.{name} = {value if can_delete or value != 'deleted' else '[]'}")
    w(2, "return out")
    w(1, "except RecordError:")
    w(2, "raise")
    w(1, "except Exception as e:")
    w(2, "raise bug(e, ref) from e")
    tail = w.lines
    # set_aside: the record in its set-aside form when it has one and stays on the real-time endpoint (no event
    # before `cutoff`), as set_aside_form(convert(record, ref)) would give it; else its UserRecord, to be routed.
    common = ["not deleted"] if can_delete else []
    if "mpid" in doc:
        common.append("mpid is None")
    if read_batch_fields is not None:
        common.append("batch_fields is None")
    recent = " and ".join(stamps) if stamps is not None else "not has_older(events, cutoff)"
    w.lines = []
    if recent:
        common.append(f"(cutoff is None or {recent})")
    w(2, f"if {' and '.join(common) or 'True'}:")
    rules = doc.get("events", [])
    if rules and not any("when" in rule for rule in rules):
        # As many events as rules, never none: whole_form written out (tests hold the two to the same bytes).
        w(3, "ids_json = dumps(identities, option=SORT_KEYS)")
        w(3, "user = ids_json.decode() if len(ids_json) <= USER_KEY_TEXT else user_key(ids_json)")
        w(3, "if attributes:")
        data = "{'user_identities': identities, 'user_attributes': attributes, 'events': events}"
        w(4, f"return user, WITH_ATTRIBUTES + dumps({data}), {len(rules)}")
        w(3, f"return user, WHOLE + dumps({{'user_identities': identities, 'events': events}}), {len(rules)}")
    else:
        w(3, "return whole_form(identities, attributes, events)")
    direct = w.lines
    source = "\n".join(
        ["def convert(record, ref):", "    try:", *body, *tail, "", ""]
        + ["def set_aside(record, ref, cutoff):", "    try:", *body[:head], *as_text, *body[head:], *direct, *tail, ""]
    )
    code = compile(source, "<mpfeed generated converter>", "exec")
    exec(code, w.namespace)  # noqa: S102 - our own source: see the module docstring
    return w.namespace["convert"], w.namespace["set_aside"], source  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------- values


def _fast_spec(spec: object) -> dict | None:
    """The spec (as a dict) when it reads a field and its common case can be written out, else None."""
    if isinstance(spec, str):
        spec = {"field": spec}
    if not isinstance(spec, dict) or "field" not in spec or "split" in spec:
        return None
    if spec.get("type", "auto") not in (*_TEXT_TYPES, *_NUMBER_TYPES):
        return None
    return spec


def _raw(w: _Writer, path: str) -> str:
    """An expression reading a field as the record has it (None or MISSING when absent: either way, not text)."""
    if "." not in path:
        return f"get({_literal(path)})"
    return f"{w.bind(getter(path), 'g')}(record)"


def _text_test(spec: object, var: str, max_length: int | None, with_ascii: bool = True) -> str | None:
    """For a spec that reads text as it is (or trimmed, lowered…), the test that the value just read into `var`
    is the common case — text, non-empty, ASCII, short enough — leaving `var` as the closure would return it.
    None for other specs. Without `with_ascii`, the caller tests the rest itself."""
    fast_spec = _fast_spec(spec)
    if fast_spec is None or fast_spec.get("type", "auto") not in _TEXT_TYPES:
        return None
    transformed = _transformed(fast_spec, var)
    test = f"type({var}) is str and " + (f"({var} := {transformed})" if transformed != var else var)
    if max_length is not None:
        test += f" and len({var}) <= {_literal(max_length)}"
    return (test + f" and {var}.isascii()") if with_ascii else test


def _constant(spec: object, where: str) -> object:
    """The value of a constant spec, as its reader gives it (MISSING for empty text); _NOT_CONSTANT otherwise."""
    if isinstance(spec, dict) and "value" in spec:
        return value_reader(spec, where)({})
    return _NOT_CONSTANT


_NOT_CONSTANT = object()


def _plain_text(value: object, max_length: int | None) -> bool:
    return type(value) is str and bool(value) and value.isascii() and (max_length is None or len(value) <= max_length)


def _literal_dict(
    w: _Writer,
    depth: int,
    name: str,
    entries: list[tuple[str, object, str]],
    max_length: int | None,
    *,
    numbers: bool = False,
) -> bool:
    """When every entry (key, spec, where) reads text (or, with `numbers`, a number from text) or is a constant,
    write the reads and `if <all of them are the common case>: name = {...}` and return True: the caller writes
    the `else:` branch. False (and nothing written) otherwise."""
    reads, parsed, tests, items = [], [], [], []
    for i, (key, spec, where) in enumerate(entries):
        constant = _constant(spec, where)
        if constant is MISSING:  # an empty constant: never sent
            continue
        if constant is not _NOT_CONSTANT:
            if not _plain_text(constant, max_length):
                return False
            items.append(f"{_literal(key)}: {_literal(constant)}")
            continue
        var = f"v{i}"
        fast_spec = _fast_spec(spec)
        test = _text_test(spec, var, max_length)
        if test is None:
            if fast_spec is None or not numbers or fast_spec.get("type", "auto") not in _NUMBER_TYPES:
                return False
            parsed.append((var, fast_spec))
            test = f"{var} is not SLOW"
        reads.append(f"{var} = {_raw(w, fast_spec['field'])}")  # type: ignore[index]
        tests.append(test)
        items.append(f"{_literal(key)}: {var}")
    if not tests:
        return False
    for read in reads:
        w(depth, read)
    for var, fast_spec in parsed:
        _number(w, depth, var, fast_spec)
    w(depth, f"if {' and '.join(tests)}:")
    w(depth + 1, f"{name} = {{{', '.join(items)}}}")
    return True


def _transformed(spec: dict, name: str) -> str:
    transforms = spec.get("transform", [])
    if isinstance(transforms, str):
        transforms = [transforms]
    return name + "".join(_TRANSFORMS[t] for t in transforms)


def _value(
    w: _Writer,
    depth: int,
    spec: object,
    where: str,
    max_length: int | None,
    store: Callable[[str], str],
    slow: Callable[[str], str],
    *,
    numbers: bool = True,
) -> None:
    """Write the code for one value. `store(expression)` is the line that stores it when it is the common
    case — text, non-empty, ASCII, at most `max_length` characters; or, when the spec has a numeric type and
    `numbers`, a finite number read from text. `slow(expression)` is the line that hands any value the spec's
    reader returns to the slow path, which does what the closures do."""
    constant = _constant(spec, where)
    if constant is not _NOT_CONSTANT:
        if _plain_text(constant, max_length):
            w(depth, store(_literal(constant)))
        elif constant is not MISSING:
            w(depth, slow(w.bind(constant, "c")))
        return
    fast_spec = _fast_spec(spec)
    kind_name = fast_spec.get("type", "auto") if fast_spec else None
    read = f"{w.bind(value_reader(spec, where), 'r')}(record)"
    if fast_spec is None or (kind_name in _NUMBER_TYPES and not numbers) or w.values_left <= 0:
        w(depth, slow(read))
        return
    w.values_left -= 1
    w(depth, f"v = {_raw(w, fast_spec['field'])}")
    text_test = _text_test(fast_spec, "v", max_length)
    if text_test is not None:
        w(depth, f"if {text_test}:")
        w(depth + 1, store("v"))
        w(depth, "else:")
        w(depth + 1, slow(read))
        return
    _number(w, depth, "v", fast_spec)
    w(depth, "if v is not SLOW:")
    w(depth + 1, store("v"))
    w(depth, "else:")
    w(depth + 1, slow(read))


def _number(w: _Writer, depth: int, var: str, fast_spec: dict) -> None:
    """Write the code that makes `var`, as read from the record, the number its spec's type reads from text, or
    SLOW: whatever int() or float() does not take, or takes but the type refuses, is for the slow path."""
    kind_name = fast_spec.get("type", "auto")
    w(depth, f"if type({var}) is str:")
    text = _transformed(fast_spec, var)
    if kind_name == "float":
        _number_from_text(w, depth + 1, var, "float", text)
    else:
        w(depth + 1, "try:")
        w(depth + 2, f"{var} = int({text})")
        w(depth + 1, "except ValueError:")
        if kind_name == "int":
            w(depth + 2, f"{var} = SLOW")
        else:
            _number_from_text(w, depth + 2, var, "float", text)
        w(depth + 1, "else:")
        w(depth + 2, f"if not {_literal(INT64_MIN)} <= {var} <= {_literal(INT64_MAX)}:")
        w(depth + 3, f"{var} = SLOW")
    w(depth, "else:")
    w(depth + 1, f"{var} = SLOW")


def _number_from_text(w: _Writer, depth: int, var: str, parse: str, text: str) -> None:
    w(depth, "try:")
    w(depth + 1, f"{var} = {parse}({text})")
    w(depth, "except ValueError:")
    w(depth + 1, f"{var} = SLOW")
    w(depth, "else:")
    w(depth + 1, f"if {var} - {var} != 0.0:  # NaN or an infinity")
    w(depth + 2, f"{var} = SLOW")


# ------------------------------------------------------------------------------------------ identities


def _identities(w: _Writer, doc: dict) -> None:
    specs = doc.get("identities", {})
    depth = 2
    if _literal_dict(w, 2, "identities", [(key, spec, f"identities.{key}") for key, spec in specs.items()], None):
        w(2, "else:")
        depth = 3
    w(depth, "identities = {}")
    for key, spec in specs.items():
        where = f"identities.{key}"
        key_source, where_source = _literal(key), _literal(where)

        def store(v: str, key_source: str = key_source) -> str:
            return f"identities[{key_source}] = {v}"

        def slow(v: str, key_source: str = key_source, where_source: str = where_source) -> str:
            return f"put_identity(identities, {key_source}, {v}, {where_source})"

        _value(w, depth, spec, where, None, store, slow, numbers=False)
    if "mpid" in doc:
        w(2, f"mpid = mpid_value({w.bind(value_reader(doc['mpid'], 'mpid'), 'r')}(record))")
        w(2, "if not identities and mpid is None:")
    else:
        w(2, "mpid = None")
        w(2, "if not identities:")
    w(3, f"raise no_identity_error({_literal(no_identity_message(doc))}, record)")


# ------------------------------------------------------------------------------------- user attributes


def _user_attributes(w: _Writer, doc: dict, limits: Limits) -> bool:
    """`attributes` and, when the mapping can delete any (returned: True), `deleted`."""
    rules = attribute_rules(doc)
    dynamic = attributes_from(doc, limits)
    can_delete = dynamic is not None or any(rule.mode == "delete" for rule in rules)
    # Without a rule that deletes, nothing is ever added to `deleted`: it is not made (the record's is []), and
    # put_user_attribute, which touches it only for a rule that deletes, is given None.
    if can_delete:
        w(2, "deleted = []")
    deleted = "deleted" if can_delete else "None"
    depth = 2
    if dynamic is not None:
        w(2, "attributes = {}")
        w(2, f"{w.bind(dynamic, 'f')}(record, attributes, deleted)")
    elif _literal_dict(
        w, 2, "attributes", [(rule.name, rule.spec, rule.where) for rule in rules], MAX_VALUE, numbers=True
    ):
        w(2, "else:")
        w(3, "attributes = {}")
        depth = 3
    else:
        w(2, "attributes = {}")
    for rule in rules:
        name = _literal(rule.name)
        present = w.bind(rule.present, "g") if rule.present is not None else "None"
        rest = f"{_literal(rule.where)}, {_literal(rule.mode)}, {present}, record"

        def store(v: str, name: str = name) -> str:
            return f"attributes[{name}] = {v}"

        def slow(v: str, name: str = name, rest: str = rest, deleted: str = deleted) -> str:
            return f"put_user_attribute(attributes, {deleted}, {name}, {v}, {rest})"

        _value(w, depth, rule.spec, rule.where, MAX_VALUE, store, slow)
    if dynamic is not None or len(rules) > schema.MAX_USER_ATTRIBUTES:
        w(2, f"if len(attributes) > {_literal(schema.MAX_USER_ATTRIBUTES)}:")
        w(3, "raise RecordError(")
        w(
            4,
            f'f"user_attributes: {{len(attributes)}} attributes, mParticle takes at most {schema.MAX_USER_ATTRIBUTES}"',
        )
        w(3, ")")
    if can_delete:
        w(2, "if deleted and attributes:")
        w(3, "deleted = [name for name in deleted if name not in attributes]")
    return can_delete


# ------------------------------------------------------------------------------------------ record key


def _record_key(w: _Writer, doc: dict) -> None:
    w(2, "event_ref = ref")
    if not doc.get("record_key"):
        return
    path = doc["record_key"]
    w(2, f"k = {_raw(w, path)}")
    w(2, "if type(k) is str:")
    w(3, "if k:")
    w(4, "event_ref = k")
    w(2, 'elif k is not MISSING and k is not None and k != "":')
    where = "record_key: field '" + path + "'"
    w(3, f"event_ref = scalar_text(k, {_literal(where)})")


# ---------------------------------------------------------------------------------------------- events


def _events(w: _Writer, doc: dict, limits: Limits, id_salt: str) -> list[str] | None:
    """`events`, the record's events. Returns what says that none of them is before `cutoff` when every event
    is a written-out custom event made whatever the record (one test per timestamp: `t0 >= cutoff`…), or None
    when the events must be looked at (has_older)."""
    rules = doc.get("events", [])
    unconditional = not any("when" in rule for rule in rules)
    stamps: list[str] | None = [] if unconditional else None
    if not unconditional:
        w(2, "events = []")
    for index, rule in enumerate(rules):
        made = f"e{index}" if unconditional else None
        written = _custom_event(w, index, rule, limits, id_salt, made)
        if written is None:
            stamps = None
            build = w.bind(event_rule(index, rule, limits, id_salt), "b")
            if made is not None:
                w(2, f"{made} = {build}(record, event_ref)")
            elif "when" in rule:
                w(2, f"e = {build}(record, event_ref)")
                w(2, "if e is not None:")
                w(3, "events.append(e)")
            else:
                w(2, f"events.append({build}(record, event_ref))")
        elif stamps is not None and written:
            stamps.append(written)
    if unconditional:
        w(2, f"events = [{', '.join(f'e{i}' for i in range(len(rules)))}]")
    return stamps


def _fixed_custom_event(index: int, rule: dict, limits: Limits) -> tuple[str, str] | None:
    """(name, custom event type) of a custom event rule whose name and type do not depend on the record (as
    events.event_rule reads them); None for any other rule."""
    where = f"events[{index}]"
    if rule.get("event_type", "custom_event") != "custom_event":
        return None
    name, _ = name_reader(rule["name"], f"{where}.name", limits, "event name")
    event_type, _ = choice_reader(
        rule.get("custom_event_type", "other"),
        schema.CUSTOM_EVENT_TYPES,
        f"{where}.custom_event_type",
        "custom event type",
    )
    return None if name is None or event_type is None else (name, event_type)


def _reads_iso(spec: dict) -> bool:
    """Whether a timestamp spec reads ISO 8601 (or any format, auto): its common case is written out."""
    return spec.get("format", "auto") in ("iso8601", "auto")


def _custom_event(w: _Writer, index: int, rule: dict, limits: Limits, id_salt: str, made: str | None) -> str | None:
    """Write out a custom event with a fixed name and type (as events.event_rule builds it). Returns the test
    that its time is not before `cutoff` ("" when it has none), or None for any other rule (not written)."""
    where = f"events[{index}]"
    fixed = _fixed_custom_event(index, rule, limits)
    if fixed is None:
        return None
    name, event_type = fixed
    depth = 2
    if "when" in rule:
        w(depth, f"if {w.bind(compile_condition(rule['when']), 'w')}(record):")
        depth += 1
    head = f"{_literal('event_name')}: {_literal(name)}, {_literal('custom_event_type')}: {_literal(event_type)}, "
    optional_time = False
    recent = ""
    if "timestamp" in rule:
        _timestamp(w, depth, rule["timestamp"], f"{where}.timestamp")
        spec = rule["timestamp"]
        optional_time = isinstance(spec, dict) and spec.get("required", True) is False
        w(depth, f"t{index} = ts")
        # A required time is never None (its reader refuses the record instead).
        recent = f"(t{index} is None or t{index} >= cutoff)" if optional_time else f"t{index} >= cutoff"
    _event_id(w, depth, w.bind(id_prefix(f"{id_salt}:{index}"), "s"))
    has_attributes = bool(rule.get("attributes")) or "attributes_from" in rule
    always_attributes = has_attributes and _event_attributes(w, depth, rule, f"{where}.attributes", limits)
    tail = ", 'custom_attributes': custom" if always_attributes else ""
    without_time = f"data = {{{head}'source_message_id': mid{tail}}}"
    with_time = f"data = {{{head}'timestamp_unixtime_ms': ts, 'source_message_id': mid{tail}}}"
    if "timestamp" not in rule:
        w(depth, without_time)
    elif optional_time:
        w(depth, "if ts is None:")
        w(depth + 1, without_time)
        w(depth, "else:")
        w(depth + 1, with_time)
    else:
        w(depth, with_time)
    if has_attributes and not always_attributes:
        w(depth, "if custom:")
        w(depth + 1, "data['custom_attributes'] = custom")
    event = "{'event_type': 'custom_event', 'data': data}"
    if made is not None:
        w(depth, f"{made} = {event}")
    else:
        w(depth, f"events.append({event})")
    return recent


def _timestamp(w: _Writer, depth: int, spec: object, where: str) -> None:
    """`ts` = the event time, as timestamps.timestamp_reader reads it (ISO 8601 in UTC written out)."""
    read = w.bind(timestamp_reader(spec, where), "t")
    if isinstance(spec, str):
        spec = {"field": spec}
    assert isinstance(spec, dict)
    if not _reads_iso(spec):
        w(depth, f"ts = {read}(record)")
        return
    _iso_time(w, depth, spec["field"], "ts", f"{read}(record)")


def _iso_time(w: _Writer, depth: int, field: str, var: str, otherwise: str) -> None:
    """`var` = the field's ISO 8601 time in UTC, in ms since the epoch, or `otherwise` for any other value."""
    w(depth, f"v = {_raw(w, field)}")
    w(depth, f"if type(v) is str and 0 < len(v) <= {_literal(MAX_TIME_TEXT)}:")
    w(depth + 1, "try:")
    w(depth + 2, "m = fromisoformat(v)")
    w(depth + 1, "except ValueError:")
    w(depth + 2, "m = None")
    w(depth + 1, "if m is not None and m.tzinfo is UTC:")
    # (m - EPOCH) // ONE_MS in whole numbers: a timedelta's floor division costs more than the parse.
    w(depth + 2, "t = m - EPOCH")
    w(depth + 2, f"{var} = t.days * 86400000 + t.seconds * 1000 + t.microseconds // 1000")
    w(depth + 1, "else:")
    w(depth + 2, f"{var} = {otherwise}")
    w(depth, "else:")
    w(depth + 1, f"{var} = {otherwise}")


def _event_id(w: _Writer, depth: int, start: str, var: str = "mid") -> None:
    """`var` = events.id_maker(prefix)(event_ref), written out (`start`: the name's start, in bytes)."""
    w(depth, "try:")
    w(depth + 1, f"{var} = str(uuid5(ID_NAMESPACE, {start} + event_ref.encode()))")
    w(depth, "except UnicodeEncodeError:  # a lone surrogate: named as the closures do")
    w(depth + 1, f"{var} = str(uuid5(ID_NAMESPACE, {start} + event_ref.encode('utf-8', 'surrogatepass')))")


def _event_attributes(w: _Writer, depth: int, rule: dict, where: str, limits: Limits) -> bool:
    """`custom` = the event's custom attributes, as events.attributes_reader builds them. Returns whether `custom` is
    never empty (a constant attribute is always stored)."""
    static = rule.get("attributes", {})
    if "attributes_from" in rule:
        build = attributes_reader(static, rule["attributes_from"], where, limits)
        w(depth, f"custom = {w.bind(build, 'a')}(record)")
        return False
    entries = [(name, spec, f"{where}.{name}") for name, spec in static.items()]
    depth_values = depth
    if all(len(name) <= MAX_NAME for name in static) and _literal_dict(
        w, depth, "custom", entries, MAX_VALUE, numbers=True
    ):
        w(depth, "else:")
        depth_values += 1
    w(depth_values, "custom = {}")
    never_empty = False
    for name, spec, at in entries:
        key = _literal(name[:MAX_NAME])
        cut = len(name) > MAX_NAME
        rest = f"{_literal(at)}, {_literal(cut)}"

        def store(v: str, key: str = key) -> str:
            return f"custom[{key}] = {v}"

        def slow(v: str, key: str = key, rest: str = rest) -> str:
            return f"put_event_attribute(custom, {key}, {v}, {rest})"

        # A cut name is counted on every record, by the slow path: it has no written-out case.
        _value(w, depth_values, spec, at, MAX_VALUE, slow if cut else store, slow)
        never_empty = never_empty or (not cut and _plain_text(_constant(spec, at), MAX_VALUE))
    return never_empty


# ------------------------------------------------------------------------------ the set-aside form written as text

# Events of one record the text form is written for at most (one test and one id each); more: the general code.
_TEXT_FORM_EVENTS = 8
_TEXT_FORM_VALUES = 60
if _TEXT_FORM_VALUES >= schema.MAX_USER_ATTRIBUTES:
    raise RuntimeError("_TEXT_FORM_VALUES must stay under MAX_USER_ATTRIBUTES (see _as_text)")


class _NotText(Exception):
    """What the text form is not written for: the general code does it."""


def _json(value: object) -> str:
    """A constant of the mapping as JSON (a name, a key, a constant value); _NotText when orjson cannot write it
    (text with a lone surrogate: the general code refuses each record instead, as it did before)."""
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        raise _NotText from None


# How a value enters the text form: ("json", its JSON: a constant), ("text", a variable of text spliced in
# between quotes), ("int", a variable of an int, written by Python as JSON writes it), or ("bytes", an expression
# of orjson's bytes). NEVER_SENT: an empty constant, not in the JSON at all.
_Value = tuple[str, str]
_NEVER_SENT: _Value = ("", "")


class _Json:
    """The pieces of one JSON text, in order: JSON made here, variables spliced in, orjson's bytes."""

    def __init__(self) -> None:
        self.items: list[_Value] = []  # ("json", text), ("var", a variable of text or int), ("bytes", expression)

    def json(self, text: str) -> None:
        if self.items and self.items[-1][0] == "json":
            self.items[-1] = ("json", self.items[-1][1] + text)
        else:
            self.items.append(("json", text))

    def value(self, value: _Value) -> None:
        how, what = value
        if how == "json":
            self.json(what)
        elif how == "text":
            self.json('"')
            self.items.append(("var", what))
            self.json('"')
        else:
            self.items.append(("var" if how == "int" else "bytes", what))

    def members(self, members: list[tuple[str, _Value]]) -> None:
        """`{"key": value, …}`."""
        self.json("{")
        for i, (key, value) in enumerate(members):
            self.json(("," if i else "") + _json(key) + ":")
            self.value(value)
        self.json("}")

    def expression(self, w: _Writer) -> str:
        """Python source making the bytes: f-strings of bound pieces and variables, encoded, with orjson's bytes
        joined in between (JSON alone: bound as bytes)."""
        out: list[str] = []
        run: list[_Value] = []
        for how, what in [*self.items, ("bytes", "")]:
            if how != "bytes":
                run.append((how, what))
                continue
            if len(run) == 1 and run[0][0] == "json":
                out.append(w.bind(run[0][1].encode(), "p"))
            elif run:
                out.append(f"{self.text(w, run)}.encode()")
            run = []
            if what:
                out.append(what)
        return out[0] if len(out) == 1 else f"concat_bytes(({', '.join(out)}))"

    def text(self, w: _Writer, items: list[_Value] | None = None) -> str:
        """An f-string of bound pieces and variables making the text (no bytes among the items)."""
        parts = self.items if items is None else items
        return "f'" + "".join("{" + (w.bind(what, "p") if how == "json" else what) + "}" for how, what in parts) + "'"


class _TextForm:
    """What `_as_text` writes for a mapping: the fields read, the tests that each is the common case, the
    numbers parsed, the text spliced in and the events' times (the JSON texts themselves: _text_layout)."""

    def __init__(self, w: _Writer) -> None:
        self.w = w
        self.reads: list[str] = []
        self.tests: list[str] = []
        self.parsed: list[tuple[str, dict]] = []
        self.spliced: list[str] = []
        self.times: list[tuple[str, str]] = []  # (variable, field) of each event's time
        self._numbers = itertools.count()

    def value(self, spec: object, where: str, max_length: int | None, *, number: bool, ascii_only: bool) -> _Value:
        """How a value of the mapping enters the JSON. `number`: a numeric type may be read. `ascii_only` for
        identities: the user's key is then as long in characters as in bytes, its limit (USER_KEY_TEXT) tested
        on the text."""
        constant = _constant(spec, where)
        if constant is MISSING:
            return _NEVER_SENT
        if constant is not _NOT_CONSTANT:
            if not _plain_text(constant, max_length):
                raise _NotText
            return ("json", _json(constant))
        fast_spec = _fast_spec(spec)
        if fast_spec is None:
            raise _NotText
        var = f"x{next(self._numbers)}"
        test = _text_test(fast_spec, var, max_length, with_ascii=ascii_only)
        if test is None and (not number or fast_spec.get("type", "auto") not in _NUMBER_TYPES):
            raise _NotText
        self.reads.append(f"{var} = {_raw(self.w, fast_spec['field'])}")
        if test is None:
            self.parsed.append((var, fast_spec))
            return ("int", var) if fast_spec.get("type") == "int" else ("bytes", f"dumps({var})")
        self.tests.append(test)
        self.spliced.append(var)
        return ("text", var)


def _as_text(w: _Writer, doc: dict, limits: Limits, id_salt: str) -> None:
    """Write set_aside's text form, for the mappings a common feed has: identities and user attributes read as
    text (or constant), unconditional custom events with fixed names, a required ISO 8601 time or none, and
    event attributes of text, numbers or constants. For a record whose values are all the common case, and each
    its own JSON string (printable, no quote or backslash), it returns the set-aside form and the user's key
    made by splicing the values into pieces of JSON made here once: no dict is built and serialized (a tenth or
    more of set_aside's time). A record any of that does not hold for falls through to the general code written
    after it, which gives the same bytes (tests/test_mapping_compiled.py holds the two to that). Nothing is
    written for other mappings."""
    rules = doc.get("events", [])
    if "mpid" in doc or batch_fields_reader(doc) is not None or attributes_from(doc, limits) is not None:
        return
    if not rules or len(rules) > _TEXT_FORM_EVENTS or any("when" in r or "attributes_from" in r for r in rules):
        return
    form = _TextForm(w)
    try:
        key, data = _text_layout(form, doc, limits)
    except _NotText:
        return
    for read in form.reads:
        w(2, read)
    w(2, f"if {' and '.join(form.tests) or 'True'}:")
    for var, fast_spec in form.parsed:
        _number(w, 3, var, fast_spec)
    common = [f"{var} is not SLOW" for var, _ in form.parsed]
    if form.spliced:
        w(3, f"j = concat(({', '.join(form.spliced)},))")
        # Printable text but '"' and '\\' is its own JSON string in UTF-8: orjson escapes nothing else, and lone
        # surrogates (which the closures refuse) and control characters are not printable.
        common += ["j.isprintable()", "'\"' not in j", "'\\\\' not in j"]
    w(3, f"if {' and '.join(common) or 'True'}:")
    depth = 4
    if doc.get("record_key"):
        w(depth, f"k = {_raw(w, doc['record_key'])}")
        w(depth, "if k is None or k is MISSING or type(k) is str:")
        depth += 1
        w(depth, "event_ref = k if type(k) is str and k else ref")
    else:
        w(depth, "event_ref = ref")
    times = [var for var, _ in form.times]
    for var, field in form.times:
        _iso_time(w, depth, field, var, "None")
    if times:
        known = " and ".join(f"{t} is not None" for t in times)
        w(depth, f"if {known} and (cutoff is None or {' and '.join(f'{t} >= cutoff' for t in times)}):")
        depth += 1
    for index in range(len(rules)):
        _event_id(w, depth, w.bind(id_prefix(f"{id_salt}:{index}"), "s"), f"xmid{index}")
    w(depth, f"user = {key.text(w)}")
    w(depth, "if len(user) > USER_KEY_TEXT:")
    w(depth + 1, "user = user_key(user.encode())")
    w(depth, f"return user, {data.expression(w)}, {len(rules)}")


def _text_layout(form: _TextForm, doc: dict, limits: Limits) -> tuple[_Json, _Json]:
    """The user's key and the set-aside form as JSON pieces (whole_form's layout: the identities in the mapping's
    order in the form, sorted in the key); _NotText for a mapping the text form is not for."""
    identities = [
        (key, form.value(spec, f"identities.{key}", None, number=False, ascii_only=True))
        for key, spec in doc.get("identities", {}).items()
    ]
    # (Fewer values than mParticle takes user attributes: the general code's count test is never needed here.)
    attributes = [
        (rule.name, form.value(rule.spec, rule.where, MAX_VALUE, number=False, ascii_only=False))
        for rule in attribute_rules(doc)
    ]
    events = []
    for index, rule in enumerate(doc["events"]):
        where = f"events[{index}]"
        fixed = _fixed_custom_event(index, rule, limits)
        time_spec = rule.get("timestamp")
        if isinstance(time_spec, str):
            time_spec = {"field": time_spec}
        if fixed is None or (
            time_spec is not None and (not _reads_iso(time_spec) or time_spec.get("required", True) is False)
        ):
            raise _NotText
        if time_spec is not None:
            form.times.append((f"xt{index}", time_spec["field"]))
        static = rule.get("attributes", {})
        if any(len(name) > MAX_NAME for name in static):  # a cut name is counted: the general code does it
            raise _NotText
        custom = [
            (name, form.value(spec, f"{where}.attributes.{name}", MAX_VALUE, number=True, ascii_only=False))
            for name, spec in static.items()
        ]
        events.append((index, *fixed, time_spec is not None, custom))
    if len(identities) + len(attributes) + sum(len(event[-1]) for event in events) > _TEXT_FORM_VALUES:
        raise _NotText
    identities = [(key, v) for key, v in identities if v is not _NEVER_SENT]
    attributes = [(key, v) for key, v in attributes if v is not _NEVER_SENT]
    if not identities:
        raise _NotText
    key, data = _Json(), _Json()
    key.members(sorted(identities))  # the user's key: the identities' canonical JSON (see set_aside_form)
    data.json((WHOLE_WITH_ATTRIBUTES if attributes else WHOLE).decode() + '{"user_identities":')
    data.members(identities)
    if attributes:
        data.json(',"user_attributes":')
        data.members(attributes)
    data.json(',"events":[')
    for i, (index, name, event_type, timed, custom) in enumerate(events):
        data.json(("," if i else "") + '{"event_type":"custom_event","data":{"event_name":' + _json(name))
        data.json(',"custom_event_type":' + _json(event_type))
        if timed:
            data.json(',"timestamp_unixtime_ms":')
            data.value(("int", f"xt{index}"))
        data.json(',"source_message_id":')
        data.value(("text", f"xmid{index}"))
        sent = [(name, v) for name, v in custom if v is not _NEVER_SENT]
        if sent:
            data.json(',"custom_attributes":')
            data.members(sent)
        data.json("}}")
    data.json("]}")
    return key, data


# ------------------------------------------------------------------------------------------- slow paths


def _slow_paths(limits: Limits) -> dict[str, Callable]:
    """What the closures do with a value once read, for the values the written-out cases do not take."""
    scalar = limits.scalar
    user_value = limits.user_value
    stats = limits.stats

    def put_identity(identities: dict, key: str, value: object, where: str) -> None:
        if type(value) is str and value.isascii():
            identities[key] = value
        elif value is not MISSING and value is not None:
            text = identity_text(value, where)
            if text:
                identities[key] = text

    def put_user_attribute(
        attributes: dict, deleted: list, name: str, value: object, where: str, mode: str, present, record: dict
    ) -> None:
        if type(value) is str and len(value) <= MAX_VALUE and value.isascii():
            attributes[name] = value
        elif value is MISSING or value is None:
            if mode == "delete" and (value is None or (present is not None and present(record) is not MISSING)):
                deleted.append(name)
                attributes.pop(name, None)
            elif value is None and mode == "send":
                attributes[name] = None
        else:
            attributes[name] = user_value(value, where)

    def put_event_attribute(custom: dict, name: str, value: object, at: str, cut: bool) -> None:
        if type(value) is str and len(value) <= MAX_VALUE and value.isascii():
            custom[name] = value
        elif value is not MISSING:
            custom[name] = scalar(value, at)
        else:
            return
        if cut:
            stats.names_truncated += 1

    return {
        "put_identity": put_identity,
        "put_user_attribute": put_user_attribute,
        "put_event_attribute": put_event_attribute,
    }
