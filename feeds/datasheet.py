"""The feed data sheet: what a mapping sends to mParticle, in the terms of mParticle's feed documentation —
identities, user attributes, events and their attributes — each with where it comes from, its type and an
example value. Pure functions of a mapping document (no Django), so the page, the Markdown download and the
tests all read the same thing.

Examples come from the document's golden samples (or any records given), converted through the mapping; a
part that no sample produces shows "—". Types come from the rule (`"type": "int"`), else from what the
samples produce, else "as in the source".
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from feeds import mapping as mapping_rules
from feeds.mapping.conditions import COMPARISONS, fixed_values
from feeds.mapping.specs import is_template, parse_template, template_fields
from feeds.mapping.validation import ACTION_FIELDS, PRODUCT_FIELDS
from feeds.mparticle import schema
from feeds.words import json_excerpt, json_type

NONE = "—"
MAX_LISTED_NAMES = 20
RULE_TYPES = {
    "string": "string",
    "int": "integer",
    "float": "number",
    "number": "number",
    "bool": "boolean",
    "timestamp": "timestamp (epoch ms)",
}
_OPERATORS = {"gt": ">", "gte": "≥", "lt": "<", "lte": "≤"}


# Names from the mapping (fields, keys) are marked as code between these two private-use characters, never with
# backticks: a name may hold backticks, and text from the mapping is escaped for Markdown apart from its code.
CODE_OPEN, CODE_CLOSE = "\ue000", "\ue001"
_CODE = re.compile(f"{CODE_OPEN}(.*?){CODE_CLOSE}", re.S)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def code(name: object) -> str:
    """`name` marked as code (see CODE_OPEN)."""
    return f"{CODE_OPEN}{str(name).replace(CODE_OPEN, '').replace(CODE_CLOSE, '')}{CODE_CLOSE}"


def code_parts(text: str) -> list[tuple[str, bool]]:
    """Text with names marked by code() as (text, is_code) pieces, for the HTML page."""
    return [(piece, i % 2 == 1) for i, piece in enumerate(_CODE.split(text)) if piece]


@dataclass
class Line:
    """One thing sent: its name at mParticle, where it comes from, its type and an example value. `source`
    marks field names with backticks, as Markdown does."""

    name: str
    source: str
    type: str
    example: str = NONE
    note: str = ""

    @property
    def source_parts(self) -> list[tuple[str, bool]]:
        return code_parts(self.source)


@dataclass
class EventSheet:
    number: int  # 1-based, as people count
    path: str  # "events[0]", as in error messages and warnings
    event_type: str
    name: str  # the constant name, the template, or "" (read from a field: see name_source)
    name_source: str  # "constant", "template (fields `a`, `b`)", "field `event`"
    possible_names: list[str]  # for a template pinned by its condition
    custom_event_type: str
    condition: str
    example_name: str = NONE
    timestamp: Line | None = None
    attributes: list[Line] = field(default_factory=list)
    attributes_from: str = ""
    product_action: list[Line] = field(default_factory=list)
    products_source: str = ""
    products: list[Line] = field(default_factory=list)

    @property
    def name_source_parts(self) -> list[tuple[str, bool]]:
        return code_parts(self.name_source)

    @property
    def condition_parts(self) -> list[tuple[str, bool]]:
        return code_parts(self.condition)

    @property
    def attributes_from_parts(self) -> list[tuple[str, bool]]:
        return code_parts(self.attributes_from)

    @property
    def products_source_parts(self) -> list[tuple[str, bool]]:
        return code_parts(self.products_source)

    @property
    def fields(self) -> list[Line]:
        """The event's own fields: its timestamp and, for a commerce event, the product action's."""
        return ([self.timestamp] if self.timestamp else []) + self.product_action

    @property
    def title(self) -> str:
        if self.event_type == "commerce_event":
            return f"Event {self.number}: commerce event"
        what = "screen view" if self.event_type == "screen_view" else "custom event"
        return f"Event {self.number}: {what} “{self.name}”" if self.name else f"Event {self.number}: {what}"


@dataclass
class DataSheet:
    errors: list[str] = field(default_factory=list)  # the document is not valid: nothing else is filled
    warnings: list[str] = field(default_factory=list)
    description: str = ""
    record_key: str = ""
    identities: list[Line] = field(default_factory=list)
    mpid: Line | None = None
    user_attributes: list[Line] = field(default_factory=list)
    deleted_user_attributes: list[str] = field(default_factory=list)  # names that may be deleted
    user_attributes_from: str = ""
    # device_info.*, mp_deviceid, partner_identities.*, ip: sent once per batch
    batch_fields: list[Line] = field(default_factory=list)
    batch_fields_note: str = ""
    data_plan: str = ""  # "web_plan, version 2 (set by the mapping; …)", or "" without one
    events: list[EventSheet] = field(default_factory=list)
    samples: int = 0  # records the examples were taken from
    refused_samples: list[str] = field(default_factory=list)

    @property
    def user_attributes_from_parts(self) -> list[tuple[str, bool]]:
        return code_parts(self.user_attributes_from)

    @property
    def identity_lines(self) -> list[Line]:
        return self.identities + ([self.mpid] if self.mpid else [])


# ---------------------------------------------------------------------------------------------- describing


def show(value: object) -> str:
    """A value as JSON text, short enough for a table cell."""
    return json_excerpt(value, 80)


def describe_source(spec: object) -> str:
    """Where a value comes from, in words: "`email` (trim, lower)", "constant "USD""."""
    if isinstance(spec, str):
        return code(spec)
    if not isinstance(spec, dict):
        return show(spec)
    text = code(spec["field"]) if "field" in spec else f"constant {show(spec.get('value'))}"
    details = []
    transforms = spec.get("transform", [])
    details += [transforms] if isinstance(transforms, str) else list(transforms)
    if "split" in spec:
        details.append(f"split on {show(spec['split'])}")
    if "format" in spec:
        details.append(f"format {spec['format']}")
    if "timezone" in spec:
        details.append(f"zone {spec['timezone']}")
    if spec.get("required"):
        details.append("required")
    if spec.get("default") is not None:
        details.append(f"default {show(spec['default'])}")
    return text + (f" ({', '.join(details)})" if details else "")


def describe_condition(cond: object) -> str:
    """A `when` condition in words: `type` = "purchase" and `total` ≥ 500."""
    if not isinstance(cond, dict):
        return show(cond)
    if "not" in cond:
        return f"not ({describe_condition(cond['not'])})"
    for name, joiner in (("all", " and "), ("any", " or ")):
        if name in cond and isinstance(cond[name], list):
            parts = [describe_condition(c) for c in cond[name]]
            return joiner.join(f"({p})" if " and " in p or " or " in p else p for p in parts)
    subject = code(cond.get("field"))
    tests = []
    if "equals" in cond:
        tests.append(f"{subject} = {show(cond['equals'])}")
    if "in" in cond and isinstance(cond["in"], list):
        tests.append(f"{subject} is one of {', '.join(show(v) for v in cond['in'])}")
    if "exists" in cond:
        tests.append(f"{subject} is {'present' if cond['exists'] else 'absent or empty'}")
    for name in COMPARISONS:
        if name in cond:
            tests.append(f"{subject} {_OPERATORS[name]} {show(cond[name])}")
    return " and ".join(tests) or show(cond)


def _sent_type(value: object) -> str:
    """The type a constant is sent as, in the data sheet's words (RULE_TYPES'): JSON's name, with integers
    told from other numbers and a list named for what mParticle takes in one."""
    if isinstance(value, int) and not isinstance(value, bool):
        return "integer"
    name = json_type(value)
    return "list of strings" if name == "array" else name


def value_type(spec: object, examples: list, default: str = "auto") -> str:
    """The type a value spec sends: the rule's own, a constant's, or what the samples produced."""
    if isinstance(spec, dict):
        if "split" in spec:
            return "list of strings"
        kind: str = spec.get("type", default)
        if kind != "auto":
            return RULE_TYPES.get(kind, kind)
        if "value" in spec:
            return _sent_type(spec["value"])
    elif default != "auto":
        return RULE_TYPES.get(default, default)
    kinds = list(dict.fromkeys(_sent_type(v) for v in examples))
    return " or ".join(kinds) if kinds else "as in the source"


def _example(values: list) -> str:
    return show(values[0]) if values else NONE


def _timestamp_example(values: list) -> str:
    if not values:
        return NONE
    ms = values[0]
    try:
        when = datetime.fromtimestamp(ms / 1000, tz=UTC)
    except (OverflowError, OSError, ValueError, TypeError):
        return show(ms)
    return f"{ms} ({when.isoformat().replace('+00:00', 'Z')})"


# ----------------------------------------------------------------------------------------------- examples


@dataclass
class _Outputs:
    """What the sample records became: the user part of each, and per event rule the events made."""

    users: list[dict] = field(default_factory=list)  # sample_output form, without events
    events: list[list[dict]] = field(default_factory=list)  # per rule: the event data made from each record
    refused: list[str] = field(default_factory=list)


def _outputs(doc: dict, records: list[tuple[str, dict]]) -> _Outputs:
    """Convert each record with the user part of the mapping, and with each event rule on its own, so that a
    record refused by one rule still gives examples for the others."""
    base = {k: v for k, v in doc.items() if k not in ("events", "samples")}
    out = _Outputs(events=[[] for _ in doc.get("events", [])])
    if not records:
        return out
    convert_user = mapping_rules.compile_mapping(base).convert
    convert_rules = [
        mapping_rules.compile_mapping({**base, "events": [rule]}).convert for rule in doc.get("events", [])
    ]
    for ref, record in records:
        try:
            user = convert_user(record, ref)
        except mapping_rules.RecordError as e:
            out.refused.append(f"{ref}: {e}")
            continue
        out.users.append(mapping_rules.sample_output(user))
        for i, convert in enumerate(convert_rules):
            try:
                made = convert(record, ref).events
            except mapping_rules.RecordError:
                continue
            out.events[i] += [event["data"] for event in made]
    return out


def _sample_records(doc: dict) -> list[tuple[str, dict]]:
    """The golden samples' records, those expected to convert first (better examples)."""
    samples = [s for s in doc.get("samples", []) if isinstance(s, dict) and isinstance(s.get("record"), dict)]
    ordered = sorted(enumerate(samples), key=lambda pair: "rejected" in (pair[1].get("expect") or {}))
    return [(f"samples[{i}]" + (f" ({s['name']})" if s.get("name") else ""), s["record"]) for i, s in ordered]


def _values(items: list[dict], *path: str) -> list:
    """Every value found at `path` in `items` (dicts), in order."""
    found = []
    for item in items:
        value: object = item
        for key in path:
            if not isinstance(value, dict) or key not in value:
                break
            value = value[key]
        else:
            found.append(value)
    return found


# ------------------------------------------------------------------------------------------------- build


def build(doc: object, records: list[dict] | None = None, *, data_plan: dict | None = None) -> DataSheet:
    """The data sheet of a mapping document. Examples come from `records` when given, else from the
    document's golden samples. `data_plan` is the workspace's, used when the mapping names none."""
    errors = mapping_rules.validate(doc)
    if errors:
        return DataSheet(errors=errors)
    assert isinstance(doc, dict)
    named = [(f"record {i + 1}", r) for i, r in enumerate(records)] if records is not None else _sample_records(doc)
    outputs = _outputs(doc, named)
    users = outputs.users
    sheet = DataSheet(
        warnings=mapping_rules.warnings(doc),
        description=str(doc.get("description", "")),
        record_key=doc.get("record_key", ""),
        samples=len(named),
        refused_samples=outputs.refused,
    )
    for key, spec in doc.get("identities", {}).items():
        sheet.identities.append(Line(key, describe_source(spec), "string", _example(_values(users, "identities", key))))
    if "mpid" in doc:
        sheet.mpid = Line("mpid", describe_source(doc["mpid"]), "integer (64-bit)", _example(_values(users, "mpid")))
    for name, spec in doc.get("user_attributes", {}).items():
        examples = _values(users, "user_attributes", name)
        line = Line(name, describe_source(spec), value_type(spec, examples), _example(examples))
        on_null = spec.get("on_null", "send") if isinstance(spec, dict) else "send"
        if on_null == "delete":
            sheet.deleted_user_attributes.append(name)
            line.note = "deleted (deleted_user_attributes) when the value is empty or null"
        elif on_null == "omit":
            line.note = "left out when empty or null"
        elif name in schema.RESERVED_USER_ATTRIBUTES:
            line.note = "reserved mParticle attribute"
        sheet.user_attributes.append(line)
    if "user_attributes_from" in doc:
        spec = doc["user_attributes_from"]
        source = spec if isinstance(spec, str) else spec["field"]
        sheet.user_attributes_from = f"every key of the object in {code(source)}"
        if isinstance(spec, dict) and spec.get("on_null") == "delete":
            sheet.user_attributes_from += " (keys with an empty or null value are deleted)"
    _batch_fields(sheet, doc, users)
    sheet.batch_fields_note = BATCH_FIELDS_NOTE if sheet.batch_fields else ""
    plan, origin = (doc["data_plan"], "the mapping") if "data_plan" in doc else (data_plan, "the workspace")
    if plan:
        version = f", version {plan['plan_version']}" if plan.get("plan_version") is not None else ", active version"
        sheet.data_plan = f"{plan['plan_id']}{version} (set by {origin}; sent as context.data_plan)"
    for i, rule in enumerate(doc.get("events", [])):
        sheet.events.append(_event_sheet(i, rule, outputs.events[i]))
    return sheet


BATCH_FIELDS_NOTE = (
    "Sent once per batch, which carries one device: a user's records with different values go in different "
    "batches, never merged."
)


def _batch_fields(sheet: DataSheet, doc: dict, users: list[dict]) -> None:
    for key, spec in doc.get("device_info", {}).items():
        uuid = key in schema.UUID_DEVICE_IDS
        sheet.batch_fields.append(
            Line(
                f"device_info.{key}",
                describe_source(spec),
                "string (UUID)" if uuid else "string",
                _example(_values(users, "device_info", key)),
            )
        )
    if "mp_deviceid" in doc:
        examples = _values(users, "mp_deviceid")
        sheet.batch_fields.append(
            Line("mp_deviceid", describe_source(doc["mp_deviceid"]), "string (UUID)", _example(examples))
        )
    for name, spec in doc.get("partner_identities", {}).items():
        examples = _values(users, "partner_identities", name)
        sheet.batch_fields.append(
            Line(f"partner_identities.{name}", describe_source(spec), "string", _example(examples))
        )
    if "ip" in doc:
        examples = _values(users, "ip")
        sheet.batch_fields.append(Line("ip", describe_source(doc["ip"]), "string (IPv4 or IPv6)", _example(examples)))


def _name_info(spec: object, when: object) -> tuple[str, str, list[str]]:
    """(name, where it comes from, the names it can take when a condition pins its fields)."""
    if isinstance(spec, str):
        if not is_template(spec):
            return spec, "constant", []
        fields = template_fields(spec)
        listed = ", ".join(code(f) for f in fields)
        if not fields:  # only escaped braces
            return "".join(literal for literal, _ in parse_template(spec)), "constant", []
        return spec, f"template of field{'s' if len(fields) > 1 else ''} {listed}", _possible_names(spec, when)
    return "", f"field {describe_source(spec)}", []


def _possible_names(template: str, when: object) -> list[str]:
    parts = parse_template(template)
    choices = []
    for f in template_fields(template):
        values = fixed_values(when, f)
        if values is None:
            return []
        choices.append(sorted(values, key=str))
    names = []
    for combination in itertools.product(*choices):
        picked = iter(combination)
        names.append("".join(literal + (str(next(picked)) if f is not None else "") for literal, f in parts))
        if len(names) > MAX_LISTED_NAMES:
            return []
    return names


def _event_sheet(index: int, rule: dict, made: list[dict]) -> EventSheet:
    event_type = rule.get("event_type", "custom_event")
    when = rule.get("when")
    if event_type == "custom_event":
        name, name_source, possible = _name_info(rule["name"], when)
        kind = rule.get("custom_event_type", "other")
        custom_event_type = kind if isinstance(kind, str) else f"from field {describe_source(kind)}"
        example_name = _example(_values(made, "event_name"))
    elif event_type == "screen_view":
        name, name_source, possible = _name_info(rule.get("screen_name", rule.get("name")), when)
        custom_event_type = ""
        example_name = _example(_values(made, "screen_name"))
    else:
        name, name_source, possible, custom_event_type, example_name = "", "", [], "", NONE
    sheet = EventSheet(
        number=index + 1,
        path=f"events[{index}]",
        event_type=event_type,
        name=name,
        name_source=name_source,
        possible_names=possible,
        custom_event_type=custom_event_type,
        condition=describe_condition(when) if when is not None else "",
        example_name=example_name,
    )
    if "timestamp" in rule:
        spec = rule["timestamp"]
        source = describe_source(spec if isinstance(spec, str) else {**spec, "format": spec.get("format", "auto")})
        optional = isinstance(spec, dict) and spec.get("required") is False
        sheet.timestamp = Line(
            "timestamp_unixtime_ms",
            source,
            "integer (epoch ms)",
            _timestamp_example(_values(made, "timestamp_unixtime_ms")),
            "optional: mParticle uses the time it receives the event when missing" if optional else "",
        )
    for attr, spec in rule.get("attributes", {}).items():
        examples = _values(made, "custom_attributes", attr)
        sheet.attributes.append(Line(attr, describe_source(spec), value_type(spec, examples), _example(examples)))
    if "attributes_from" in rule:
        spec = rule["attributes_from"]
        sheet.attributes_from = f"every key of the object in {code(spec if isinstance(spec, str) else spec['field'])}"
    if event_type == "commerce_event":
        if "promotion_action" in rule:
            _promotions(sheet, rule["promotion_action"], made)
        elif "product_impressions" in rule:
            _impressions(sheet, rule["product_impressions"], made)
        else:
            _commerce(sheet, rule["product_action"], made)
    return sheet


def _promotions(sheet: EventSheet, action: dict, made: list[dict]) -> None:
    spec = action["action"]
    sheet.product_action.append(
        Line(
            "promotion_action.action",
            f"constant {show(spec)}" if isinstance(spec, str) else describe_source(spec),
            "one of " + ", ".join(schema.PROMOTION_ACTIONS) if not isinstance(spec, str) else "string",
            _example(_values(made, "promotion_action", "action")),
        )
    )
    promotions = action["promotions"]
    specs = [promotions] if isinstance(promotions, dict) else promotions
    items = [item for listed in _values(made, "promotion_action", "promotions") for item in listed]
    source = (
        f"one per item of the list in {code(promotions['from'])}"
        if isinstance(promotions, dict)
        else f"up to {len(promotions)} from columns"
    )
    for key in schema.PROMOTION_FIELDS:
        if any(key in one for one in specs):
            line = Line(f"promotion_action.promotions[].{key}", _product_sources(specs, key), "string")
            line.example = _example(_values(items, key))
            line.note = f"promotions: {source}"
            sheet.product_action.append(line)


def _impressions(sheet: EventSheet, impressions: list[dict], made: list[dict]) -> None:
    shown = [one for listed in _values(made, "product_impressions") for one in listed]
    lists = [spec["product_impression_list"] for spec in impressions]
    sheet.product_action.append(
        Line(
            "product_impressions[].product_impression_list",
            ", ".join(f"constant {show(s)}" if isinstance(s, str) else describe_source(s) for s in lists),
            "string",
            _example(_values(shown, "product_impression_list")),
        )
    )
    products = [p for one in shown for p in one.get("products", [])]
    specs: list[dict] = []
    for spec in impressions:
        specs += [spec["products"]] if isinstance(spec["products"], dict) else spec["products"]
    sheet.products_source = f"{len(impressions)} impression list{'s' if len(impressions) > 1 else ''}"
    seen: set[str] = set()
    for one in specs:
        for key, default in PRODUCT_FIELDS.items():
            if key in one and key not in seen:
                seen.add(key)
                examples = _values(products, key)
                line = Line(f"products[].{key}", _product_sources(specs, key), value_type(one[key], examples, default))
                line.example = _example(examples)
                sheet.products.append(line)


def _commerce(sheet: EventSheet, action: dict, made: list[dict]) -> None:
    spec = action["action"]
    sheet.product_action.append(
        Line(
            "product_action.action",
            f"constant {show(spec)}" if isinstance(spec, str) else describe_source(spec),
            "one of " + ", ".join(schema.PRODUCT_ACTIONS) if not isinstance(spec, str) else "string",
            _example(_values(made, "product_action", "action")),
        )
    )
    for key, default in ACTION_FIELDS.items():
        if key not in action:
            continue
        path = ("currency_code",) if key == "currency_code" else ("product_action", key)
        examples = _values(made, *path)
        line = Line(".".join(path), describe_source(action[key]), value_type(action[key], examples, default))
        line.example = _example(examples)
        sheet.product_action.append(line)
    products = action.get("products")
    if products is None:
        return
    items = [item for listed in _values(made, "product_action", "products") for item in listed]
    if isinstance(products, dict):
        sheet.products_source = f"one product per item of the list in {code(products['from'])}"
        specs = [products]
    else:
        sheet.products_source = f"up to {len(products)} product{'s' if len(products) > 1 else ''} from columns"
        specs = products
    seen: set[str] = set()
    for one in specs:
        for key, default in PRODUCT_FIELDS.items():
            if key in one and key not in seen:
                seen.add(key)
                examples = _values(items, key)
                line = Line(f"products[].{key}", _product_sources(specs, key), value_type(one[key], examples, default))
                line.example = _example(examples)
                sheet.products.append(line)
        for attr, spec in one.get("attributes", {}).items():
            name = f"products[].custom_attributes.{attr}"
            if name not in seen:
                seen.add(name)
                examples = _values(items, "custom_attributes", attr)
                sheet.products.append(Line(name, describe_source(spec), value_type(spec, examples), _example(examples)))


def _product_sources(specs: list[dict], key: str) -> str:
    return ", ".join(dict.fromkeys(describe_source(s[key]) for s in specs if key in s))


# ----------------------------------------------------------------------------------------------- Markdown


# Markdown's punctuation, escaped with a backslash wherever text from a mapping or a workspace is written:
# no emphasis, link, image, HTML, heading, list, table cell or code span can come out of a name or a value.
# What GitHub's Markdown turns into a link by itself (its "autolink" extension): scheme:// URLs, www. names,
# e-mail addresses; shown as code instead.
_AUTOLINK = re.compile(r"(?:\b[a-z][a-z0-9+.-]*://|\bwww\.)\S+|[\w.+-]+@[\w-]+(?:\.[\w-]+)+", re.I)
_MARKDOWN_PUNCTUATION = re.compile(r"([\\`*_\[\]<>|~!&#])")
# What starts a list, a rule or a setext heading when it opens a line ("#", ">" are escaped everywhere).
_LINE_START = re.compile(r"^(\s*)(?:([-+=])|(\d+)([.)]))")


def _md(text: object, *, table: bool = False) -> str:
    """Plain text for Markdown: on one line, every Markdown character escaped; names marked by code() become code
    spans, and so do URLs, www. names and e-mail addresses (GitHub would make links of them, even escaped).
    `table`: for a table cell (pipes in code spans escaped too, as GFM tables need)."""
    out = []
    for piece, is_code in code_parts(_CONTROL.sub(" ", str(text))):
        if is_code:
            out.append(_code(piece, table=table))
            continue
        start = 0
        for link in _AUTOLINK.finditer(piece):
            out.append(_MARKDOWN_PUNCTUATION.sub(r"\\\1", piece[start : link.start()]))
            out.append(_code(link.group(0), table=table))
            start = link.end()
        out.append(_MARKDOWN_PUNCTUATION.sub(r"\\\1", piece[start:]))
    escaped = "".join(out)
    return _LINE_START.sub(
        lambda m: m.group(1) + (f"\\{m.group(2)}" if m.group(2) else f"{m.group(3)}\\{m.group(4)}"), escaped
    )


def _cell(text: object) -> str:
    return _md(text, table=True) or " "


def _code(text: str, *, table: bool = False) -> str:
    """A code span that survives backticks in the text: fenced by more backticks than the longest run inside."""
    if text == NONE:
        return text
    text = _CONTROL.sub(" ", str(text))
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or not text.strip() else ""
    if table:  # a pipe splits a table cell even inside a code span unless escaped (GFM)
        text = text.replace("|", "\\|")
    return f"{fence}{pad}{text}{pad}{fence}"


def _table(lines: list[Line], first: str = "Name", notes: bool = True) -> list[str]:
    show_notes = notes and any(line.note for line in lines)
    head = [first, "Source field(s)", "Type", "Example value"] + (["Notes"] if show_notes else [])
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for line in lines:
        cells = [code(line.name), line.source, line.type, code(line.example)] + ([line.note] if show_notes else [])
        out.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return out


def to_markdown(sheet: DataSheet, *, title: str, details: Sequence[str] = ()) -> str:
    """The data sheet as a Markdown document. `title` names the feed; `details` are lines under it
    (workspace, mapping and version, date)."""
    out = [f"# {_md(title)}", ""]
    out += [f"- {_md(d)}" for d in details]
    if details:
        out.append("")
    if sheet.errors:
        out += ["## This mapping is not valid", ""] + [f"- {_md(e)}" for e in sheet.errors] + [""]
        return "\n".join(out)
    if sheet.description:
        out += [_md(line) for line in str(sheet.description).splitlines()] + [""]
    if sheet.samples:
        out.append(f"Example values come from {sheet.samples} sample record{'s' if sheet.samples > 1 else ''}.")
    else:
        out.append(f"The mapping keeps no sample records, so no example values ({NONE}).")
    out.append("")
    if sheet.warnings:
        out += ["## Warnings", ""] + [f"- {_md(w)}" for w in sheet.warnings] + [""]

    out += ["## Identities", ""]
    lines = sheet.identity_lines
    out += (_table(lines, "Identity") if lines else ["No identities."]) + [""]
    if sheet.record_key:
        out += [f"Records are identified by the field {_code(sheet.record_key)}.", ""]

    out += ["## User attributes", ""]
    if sheet.user_attributes:
        out += _table(sheet.user_attributes, "Attribute") + [""]
    if sheet.user_attributes_from:
        out += [_md(f"Also {sheet.user_attributes_from}: names and types vary by record."), ""]
    if sheet.deleted_user_attributes:
        names = ", ".join(_code(n) for n in sheet.deleted_user_attributes)
        out += [f"Deletions: {names} may be sent in `deleted_user_attributes`.", ""]
    if not sheet.user_attributes and not sheet.user_attributes_from:
        out += ["No user attributes.", ""]

    if sheet.batch_fields or sheet.data_plan:
        out += ["## Device and batch fields", ""]
        if sheet.batch_fields:
            out += _table(sheet.batch_fields, "Field") + ["", BATCH_FIELDS_NOTE, ""]
        if sheet.data_plan:
            out += [f"Data plan: {_code(sheet.data_plan)}.", ""]

    out += ["## Events", ""]
    if not sheet.events:
        out += ["No events.", ""]
    for event in sheet.events:
        out += [f"### {_md(event.title)}", ""]
        facts = [f"Event type: {code(event.event_type)}"]
        if event.event_type != "commerce_event":
            label = "Screen name" if event.event_type == "screen_view" else "Event name"
            named = f"{code(event.name)} ({event.name_source})" if event.name else event.name_source
            facts.append(f"{label}: {named}")
            if event.possible_names:
                facts.append("Possible names: " + ", ".join(code(n) for n in event.possible_names))
            facts.append(f"Example name: {code(event.example_name)}")
        if event.custom_event_type:
            facts.append(f"Custom event type: {code(event.custom_event_type)}")
        facts.append(f"Sent when: {event.condition}" if event.condition else "Sent for every record")
        out += [f"- {_md(f)}" for f in facts] + [""]
        if event.fields:
            out += _table(event.fields, "Field") + [""]
        if event.attributes:
            out += ["Event attributes (`custom_attributes`):", ""] + _table(event.attributes, "Attribute") + [""]
        if event.attributes_from:
            out += [_md(f"Also {event.attributes_from} as event attributes: names and types vary by record."), ""]
        if event.products:
            out += [_md(f"Products ({event.products_source}):"), ""] + _table(event.products, "Product field") + [""]
    if sheet.refused_samples:
        out += ["## Sample records the mapping refuses", ""] + [f"- {_md(r)}" for r in sheet.refused_samples] + [""]
    return "\n".join(out).rstrip() + "\n"
