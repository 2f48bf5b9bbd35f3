"""`warnings()`: what a valid mapping allows but may lose data at mParticle — names cut, more than 1,000 event
names per workspace, attribute counts that depend on the record, a currency read as a field name."""

from __future__ import annotations

from feeds.mparticle import schema

from .conditions import fixed_values
from .specs import is_template, template_fields
from .validation import validate


def _fields_of(spec: object) -> list[str] | None:
    """The fields a name is built from: [] for constant text, None when it is not read from fields."""
    if isinstance(spec, str):
        return template_fields(spec) if is_template(spec) else []
    if isinstance(spec, dict):
        return [spec["field"]] if "field" in spec else []
    return []


def warnings(doc: dict) -> list[str]:
    """What a valid mapping allows but may lose data at mParticle. An invalid document gives []."""
    if validate(doc):
        return []
    found: list[str] = []
    limit = schema.MAX_EVENT_NAMES_PER_WORKSPACE
    total_names = 0
    unbounded = False
    for i, rule in enumerate(doc.get("events", [])):
        where = f"events[{i}]"
        event_type = rule.get("event_type", "custom_event")
        if event_type == "commerce_event":
            spec = rule.get("product_action", {}).get("currency_code")
            if isinstance(spec, str) and len(spec) == 3 and spec.isupper():
                found.append(
                    f"{where}.product_action.currency_code: {spec!r} is read as a field name; "
                    f'for a fixed currency write {{"value": {spec!r}}}'
                )
        else:
            key = "name" if event_type == "custom_event" else "screen_name"
            spec = rule.get("name") if key == "name" else rule.get("screen_name", rule.get("name"))
            fields = _fields_of(spec)
            if fields:
                count = 1
                for field in fields:
                    values = fixed_values(rule.get("when"), field)
                    if values is None:
                        count = 0
                        break
                    count *= len(values)
                if count:
                    total_names += count
                else:
                    unbounded = True
                    found.append(
                        f"{where}.{key}: built from field{'s' if len(fields) > 1 else ''} "
                        f"{', '.join(repr(f) for f in fields)}: every distinct value makes a new event name, and "
                        f"mParticle keeps at most {limit:,} per workspace (events with other names are dropped). "
                        f"Limit the values with a 'when' condition (\"in\": [...]) or put the value in an attribute."
                    )
            else:
                total_names += 1
                text = spec if isinstance(spec, str) else None
                if text is not None and len(text.replace("{{", "{").replace("}}", "}")) > schema.MAX_NAME_LENGTH:
                    found.append(f"{where}.{key}: longer than {schema.MAX_NAME_LENGTH} characters; it will be cut")
        for name in rule.get("attributes", {}):
            if len(name) > schema.MAX_NAME_LENGTH:
                found.append(
                    f"{where}.attributes.{name[:40]}…: name longer than {schema.MAX_NAME_LENGTH} characters; it will be cut"
                )
        if "attributes_from" in rule:
            room = schema.MAX_ATTRIBUTES_PER_EVENT - len(rule.get("attributes", {}))
            found.append(
                f"{where}.attributes_from: the number of attributes depends on each record; an event with more "
                f"than {schema.MAX_ATTRIBUTES_PER_EVENT} attributes (more than {room} from this field, when they "
                f"do not overlap the mapped ones) is refused"
            )
    if total_names > limit and not unbounded:
        found.append(
            f"events: the rules can produce up to {total_names:,} distinct event names, over mParticle's "
            f"{limit:,} per workspace (events with other names are dropped)"
        )
    elif total_names > limit:
        found.append(f"events: the rules can produce more than {limit:,} distinct event names")
    if "user_attributes_from" in doc:
        room = schema.MAX_USER_ATTRIBUTES - len(doc.get("user_attributes", {}))
        found.append(
            f"user_attributes_from: the number of user attributes depends on each record; a record with more than "
            f"{schema.MAX_USER_ATTRIBUTES} (more than {room} from this field, when they do not overlap the "
            f"mapped ones) is refused"
        )
    return found
