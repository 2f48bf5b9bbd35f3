"""Checking a mapping document: `validate()` lists every error with where it is (risks.py lists what is allowed
but likely to lose data)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from feeds.mparticle import schema

from .batchfields import MAX_PARTNER_IDENTITIES, data_plan_problems, ip_problem, uuid_problem
from .conditions import check_condition
from .specs import TRANSFORMS, VALUE_TYPES, finisher, is_template, parse_template
from .timestamps import TIMESTAMP_FORMATS, parse_zone
from .values import INT64_MAX, INT64_MIN, RecordError

TOP_LEVEL_KEYS = {
    "version",
    "description",
    "record_key",
    "identities",
    "mpid",
    "user_attributes",
    "user_attributes_from",
    "events",
    "options",
    "samples",
    "device_info",
    "mp_deviceid",
    "partner_identities",
    "ip",
    "data_plan",
}
# Batch fields a mapping may not set, and why (said to whoever writes one).
REFUSED_KEYS = {
    "consent_state": (
        "mpfeed does not send consent. Consent state (GDPR and CCPA purposes) is the client's legal record of "
        "what each user agreed to, with the document, time and place it was given; mParticle applies it to "
        "every output, so it must come from the client's own consent management (its SDKs or its own API "
        "calls), not be copied from a partner's data. Leave it out of the mapping"
    ),
}
VALUE_KEYS = {"field", "value", "type", "transform", "required", "default", "format", "timezone"}
USER_VALUE_KEYS = VALUE_KEYS | {"on_null", "split"}
ON_NULL = ("send", "omit", "delete")
OPTION_KEYS = {"long_values"}
SUPPORTED_EVENT_TYPES = ("custom_event", "screen_view", "commerce_event")
EVENT_KEYS = {
    "event_type",
    "name",
    "screen_name",
    "custom_event_type",
    "when",
    "timestamp",
    "attributes",
    "attributes_from",
    "product_action",
    "promotion_action",
    "product_impressions",
}
COMMERCE_KINDS = ("product_action", "promotion_action", "product_impressions")
# Fields of a product action and of a product, with the type used when the spec does not give one.
ACTION_FIELDS = {
    "transaction_id": "string",
    "total_amount": "number",
    "tax_amount": "number",
    "shipping_amount": "number",
    "coupon_code": "string",
    "currency_code": "string",
}
PRODUCT_FIELDS = {
    "id": "string",
    "name": "string",
    "brand": "string",
    "category": "string",
    "variant": "string",
    "position": "int",
    "price": "number",
    "quantity": "number",
    "coupon_code": "string",
}
SAMPLE_KEYS = {"name", "note", "record", "expect"}
EXPECT_KEYS = {
    "identities",
    "mpid",
    "user_attributes",
    "deleted_user_attributes",
    "events",
    "rejected",
    "device_info",
    "mp_deviceid",
    "partner_identities",
    "ip",
}


_PATTERN_PROBE = datetime(2026, 11, 20, 10, 30, 15, tzinfo=UTC)
_INTEGER = re.compile(r"-?[0-9]{1,30}")


class MappingError(ValueError):
    """A mapping document that cannot be used; `errors` lists each problem and where it is."""

    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__("; ".join(errors))


# ------------------------------------------------------------------------------------------------ pieces


def _check_value_spec(spec: object, where: str, errors: list[str], *, user: bool = False) -> None:
    """A value: a field name, or {"field" | "value", "type", "transform", ...}. `user`: a user attribute,
    which may also say `on_null` and `split`."""
    if isinstance(spec, str):
        if not spec:
            errors.append(f"{where}: the field name is empty")
        return
    if not isinstance(spec, dict):
        errors.append(f"{where}: expected a field name or an object with 'field' or 'value'")
        return
    before = len(errors)
    allowed = USER_VALUE_KEYS if user else VALUE_KEYS
    unknown = set(spec) - allowed
    if unknown:
        extra = " (on_null and split are for user attributes)" if unknown & {"on_null", "split"} else ""
        errors.append(f"{where}: unknown keys {sorted(unknown)} (allowed: {sorted(allowed)}){extra}")
    if ("field" in spec) == ("value" in spec):
        errors.append(f"{where}: give exactly one of 'field' or 'value'")
    if "field" in spec and (not isinstance(spec["field"], str) or not spec["field"]):
        errors.append(f"{where}.field: must be a non-empty string")
    kind = spec.get("type", "auto")
    if kind not in VALUE_TYPES:
        errors.append(f"{where}.type: {kind!r} is not one of {', '.join(VALUE_TYPES)}")
    transforms = spec.get("transform", [])
    if isinstance(transforms, str):
        transforms = [transforms]
    if not isinstance(transforms, list) or any(t not in TRANSFORMS for t in transforms):
        errors.append(f"{where}.transform: must be one of {', '.join(TRANSFORMS)}, or a list of them")
    if "required" in spec and not isinstance(spec["required"], bool):
        errors.append(f"{where}.required: must be true or false")
    if ("format" in spec or "timezone" in spec) and kind != "timestamp":
        errors.append(f"{where}: 'format' and 'timezone' go with \"type\": \"timestamp\"")
    if "format" in spec:
        _check_format(spec["format"], f"{where}.format", errors)
    if "timezone" in spec:
        _check_zone(spec["timezone"], f"{where}.timezone", errors)
    if "on_null" in spec:
        if spec["on_null"] not in ON_NULL:
            errors.append(f"{where}.on_null: must be one of {', '.join(ON_NULL)}")
        elif spec["on_null"] == "delete" and (spec.get("required") or spec.get("default") is not None):
            errors.append(f"{where}: a required value or one with a default is never deleted; drop one of them")
    if "split" in spec:
        if not isinstance(spec["split"], str) or not spec["split"]:
            errors.append(f'{where}.split: must be the separator, e.g. ","')
        elif kind != "auto":
            errors.append(f"{where}.split: gives a list of texts, so it takes no 'type'")
    for key in ("value", "default"):
        if key in spec:
            _check_constant(spec[key], f"{where}.{key}", errors, user=user)
    if len(errors) == before:
        # The spec is well formed: check that its constant and default survive its own type.
        for key in ("value", "default"):
            if key in spec and spec[key] is not None:
                try:
                    finisher({k: v for k, v in spec.items() if k != "default"}, f"{where}.{key}")(spec[key])
                except RecordError as e:
                    errors.append(str(e))


def _check_mpid(spec: object, errors: list[str]) -> None:
    before = len(errors)
    _check_value_spec(spec, "mpid", errors)
    if len(errors) > before or not isinstance(spec, dict):
        return
    if spec.get("type", "auto") not in ("auto", "int", "string"):
        errors.append("mpid.type: an mpid is a 64-bit integer; use auto, int or string")
    if "value" in spec:
        value = spec["value"]
        text = value if isinstance(value, str) else None
        if isinstance(value, bool) or not (
            isinstance(value, int) or (text is not None and _INTEGER.fullmatch(text.strip()))
        ):
            errors.append(f"mpid.value: {value!r} is not an integer")
        elif text is not None and not INT64_MIN <= int(text) <= INT64_MAX:
            errors.append("mpid.value: too large a number (64-bit integers)")


def _check_choice_spec(spec: object, allowed: tuple[str, ...], where: str, errors: list[str]) -> None:
    """A value spec whose value must be one of `allowed` (a constant one is checked now)."""
    _check_value_spec(spec, where, errors)
    if isinstance(spec, dict) and isinstance(spec.get("value"), str) and spec["value"] not in allowed:
        errors.append(f"{where}.value: {spec['value']!r} is not one of {', '.join(allowed)}")


def _check_constant(value: object, where: str, errors: list[str], *, user: bool) -> None:
    if value is None or isinstance(value, (str, bool, int)):
        if isinstance(value, int) and not isinstance(value, bool) and not INT64_MIN <= value <= INT64_MAX:
            errors.append(f"{where}: too large a number (64-bit integers)")
        return
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            errors.append(f"{where}: must be a finite number")
        return
    if user and isinstance(value, list) and all(isinstance(v, str) for v in value):
        return
    what = "text, a number, true/false, null or a list of texts" if user else "text, a number, true/false or null"
    errors.append(f"{where}: must be {what}")


def _check_format(fmt: object, where: str, errors: list[str]) -> None:
    if not isinstance(fmt, str) or (fmt not in TIMESTAMP_FORMATS and "%" not in fmt):
        errors.append(
            f"{where}: {fmt!r} is not one of {', '.join(TIMESTAMP_FORMATS)} or a strptime pattern like '%Y-%m-%d %H:%M:%S'"
        )
    elif fmt not in TIMESTAMP_FORMATS:
        try:  # a pattern must read back what it writes
            datetime.strptime(_PATTERN_PROBE.strftime(fmt), fmt)
        except (ValueError, TypeError) as e:
            errors.append(f"{where}: {fmt!r} is not a usable strptime pattern ({e})")


def _check_zone(zone: object, where: str, errors: list[str]) -> None:
    if not isinstance(zone, str):
        errors.append(f"{where}: must be a time zone name like 'Europe/Paris', 'UTC' or '+02:00'")
        return
    try:
        parse_zone(zone)
    except ValueError as e:
        errors.append(f"{where}: {e} (use a name like 'Europe/Paris', 'UTC' or '+02:00')")


def _check_timestamp_spec(spec: object, where: str, errors: list[str]) -> None:
    if isinstance(spec, str):
        if not spec:
            errors.append(f"{where}: the field name is empty")
        return
    if not isinstance(spec, dict) or not isinstance(spec.get("field"), str) or not spec.get("field"):
        errors.append(f"{where}: expected a field name or an object with 'field' and optional 'format'")
        return
    unknown = set(spec) - {"field", "format", "timezone", "required"}
    if unknown:
        errors.append(f"{where}: unknown keys {sorted(unknown)} (allowed: field, format, timezone, required)")
    _check_format(spec.get("format", "auto"), f"{where}.format", errors)
    if "timezone" in spec:
        _check_zone(spec["timezone"], f"{where}.timezone", errors)
    if "required" in spec and not isinstance(spec["required"], bool):
        errors.append(f"{where}.required: must be true or false")


def _check_name_spec(spec: object, where: str, errors: list[str], what: str) -> None:
    """A name: constant text, a template such as "{category} Viewed", or a value spec."""
    if spec is None:
        errors.append(f'{where}: a {what} is needed (text, a template like "{{field}} Viewed", or a field)')
    elif isinstance(spec, str):
        if not spec.strip():
            errors.append(f"{where}: must not be empty")
        elif is_template(spec):
            try:
                parse_template(spec)
            except ValueError as e:
                errors.append(f"{where}: {e}")
    else:
        _check_value_spec(spec, where, errors)


def _check_from_spec(spec: object, where: str, errors: list[str], *, user: bool = False) -> None:
    """A field holding a JSON object (or list): a field name or {"field": ...}."""
    if isinstance(spec, str) and spec:
        return
    allowed = {"field", "on_null"} if user else {"field"}
    if isinstance(spec, dict) and isinstance(spec.get("field"), str) and spec["field"] and set(spec) <= allowed:
        if spec.get("on_null", "send") not in ON_NULL:
            errors.append(f"{where}.on_null: must be one of {', '.join(ON_NULL)}")
        return
    errors.append(f'{where}: expected the name of a field holding an object (or {{"field": ...}})')


def _check_attributes(attrs: object, where: str, errors: list[str]) -> None:
    if not isinstance(attrs, dict):
        errors.append(f"{where}: must be an object of attribute name → field")
        return
    if len(attrs) > schema.MAX_ATTRIBUTES_PER_EVENT:
        errors.append(f"{where}: {len(attrs)} attributes, mParticle takes at most {schema.MAX_ATTRIBUTES_PER_EVENT}")
    for name, spec in attrs.items():
        if not name:
            errors.append(f"{where}: an attribute name is empty")
        _check_value_spec(spec, f"{where}.{name}", errors)


def _check_products(spec: object, where: str, errors: list[str]) -> None:
    if isinstance(spec, dict):
        if not isinstance(spec.get("from"), str) or not spec["from"]:
            errors.append(
                f"{where}.from: name the field holding the list of products (or give a list of product specs)"
            )
        _check_product(spec, where, errors, extra={"from"})
    elif isinstance(spec, list) and spec:
        for i, product in enumerate(spec):
            if not isinstance(product, dict):
                errors.append(f"{where}[{i}]: must be an object of product field → value")
            else:
                _check_product(product, f"{where}[{i}]", errors, extra=set())
    else:
        errors.append(
            f'{where}: either {{"from": "items", "id": ..., ...}} for a list in the record, '
            f"or a list of product specs read from columns"
        )


def _check_product(spec: dict, where: str, errors: list[str], extra: set[str]) -> None:
    allowed = set(PRODUCT_FIELDS) | {"attributes"} | extra
    unknown = set(spec) - allowed
    if unknown:
        errors.append(f"{where}: unknown keys {sorted(unknown)} (allowed: {sorted(allowed)})")
    if "id" not in spec and "name" not in spec:
        errors.append(f"{where}: a product needs an 'id' or a 'name'")
    for key in PRODUCT_FIELDS:
        if key in spec:
            _check_value_spec(spec[key], f"{where}.{key}", errors)
    if "attributes" in spec:
        _check_attributes(spec["attributes"], f"{where}.attributes", errors)


def _check_product_action(spec: object, where: str, errors: list[str]) -> None:
    if not isinstance(spec, dict):
        errors.append(f"{where}: a commerce_event needs a product_action object with an 'action'")
        return
    unknown = set(spec) - {"action", "products", *ACTION_FIELDS}
    if unknown:
        errors.append(
            f"{where}: unknown keys {sorted(unknown)} (allowed: action, products, {', '.join(ACTION_FIELDS)})"
        )
    action = spec.get("action")
    if action is None:
        errors.append(f'{where}.action: needed, one of {", ".join(schema.PRODUCT_ACTIONS)} (or {{"field": ...}})')
    elif isinstance(action, str):
        if action not in schema.PRODUCT_ACTIONS:
            errors.append(
                f"{where}.action: {action!r} is not one of {', '.join(schema.PRODUCT_ACTIONS)}"
                f' (to read it from a field write {{"field": {action!r}}})'
            )
    else:
        _check_choice_spec(action, schema.PRODUCT_ACTIONS, f"{where}.action", errors)
    for key in ACTION_FIELDS:
        if key in spec:
            _check_value_spec(spec[key], f"{where}.{key}", errors)
    if "products" in spec:
        _check_products(spec["products"], f"{where}.products", errors)


def _check_promotion_action(spec: object, where: str, errors: list[str]) -> None:
    if not isinstance(spec, dict):
        errors.append(f'{where}: must be an object with an "action" (view or click) and "promotions"')
        return
    unknown = set(spec) - {"action", "promotions"}
    if unknown:
        errors.append(f"{where}: unknown keys {sorted(unknown)} (allowed: action, promotions)")
    action = spec.get("action")
    if action is None:
        errors.append(f'{where}.action: needed, one of {", ".join(schema.PROMOTION_ACTIONS)} (or {{"field": ...}})')
    elif isinstance(action, str):
        if action not in schema.PROMOTION_ACTIONS:
            errors.append(f"{where}.action: {action!r} is not one of {', '.join(schema.PROMOTION_ACTIONS)}")
    else:
        _check_choice_spec(action, schema.PROMOTION_ACTIONS, f"{where}.action", errors)
    promotions = spec.get("promotions")
    at = f"{where}.promotions"
    if isinstance(promotions, dict):
        if not isinstance(promotions.get("from"), str) or not promotions["from"]:
            errors.append(f"{at}.from: name the field holding the list of promotions (or give a list of specs)")
        _check_promotion(promotions, at, errors, extra={"from"})
    elif isinstance(promotions, list) and promotions:
        for i, promotion in enumerate(promotions):
            if not isinstance(promotion, dict):
                errors.append(f"{at}[{i}]: must be an object of promotion field → value")
            else:
                _check_promotion(promotion, f"{at}[{i}]", errors, extra=set())
    else:
        errors.append(
            f'{at}: either {{"from": "promos", "id": ..., ...}} for a list in the record, '
            f"or a list of promotion specs read from columns"
        )


def _check_promotion(spec: dict, where: str, errors: list[str], extra: set[str]) -> None:
    allowed = set(schema.PROMOTION_FIELDS) | extra
    unknown = set(spec) - allowed
    if unknown:
        errors.append(f"{where}: unknown keys {sorted(unknown)} (allowed: {sorted(allowed)})")
    if "id" not in spec and "name" not in spec:
        errors.append(f"{where}: a promotion needs an 'id' or a 'name'")
    for key in schema.PROMOTION_FIELDS:
        if key in spec:
            _check_text_spec(spec[key], f"{where}.{key}", errors)


def _check_product_impressions(spec: object, where: str, errors: list[str]) -> None:
    if not isinstance(spec, list) or not spec:
        errors.append(f'{where}: a list of {{"product_impression_list": "Search results", "products": ...}}')
        return
    for i, impression in enumerate(spec):
        at = f"{where}[{i}]"
        if not isinstance(impression, dict):
            errors.append(f"{at}: must be an object with product_impression_list and products")
            continue
        unknown = set(impression) - {"product_impression_list", "products"}
        if unknown:
            errors.append(f"{at}: unknown keys {sorted(unknown)} (allowed: product_impression_list, products)")
        if "product_impression_list" not in impression:
            errors.append(f"{at}.product_impression_list: needed, the name of the list the products were shown in")
        else:
            _check_name_spec(
                impression["product_impression_list"], f"{at}.product_impression_list", errors, "list name"
            )
        if "products" not in impression:
            errors.append(f"{at}.products: needed, the products shown")
        else:
            _check_products(impression["products"], f"{at}.products", errors)


def _check_text_spec(spec: object, where: str, errors: list[str], check=None) -> None:
    """A value sent as text (device ids, partner ids, ip…): type auto or string; a constant is checked with
    `check(text) -> problem or None`."""
    before = len(errors)
    _check_value_spec(spec, where, errors)
    if len(errors) > before or not isinstance(spec, dict):
        return
    if spec.get("type", "auto") not in ("auto", "string"):
        errors.append(f"{where}.type: this is sent as text; use auto or string")
    if check is not None:
        for key in ("value", "default"):
            value = spec.get(key)
            if isinstance(value, str) and value and (problem := check(value)) is not None:
                errors.append(f"{where}.{key}: {problem}")
            elif value is not None and not isinstance(value, str):
                errors.append(f"{where}.{key}: must be text")


def _check_batch_fields(doc: dict, errors: list[str]) -> None:
    """device_info, mp_deviceid, partner_identities, ip and data_plan."""
    device = doc.get("device_info", {})
    if not isinstance(device, dict):
        errors.append("device_info: must be an object of device identity → field")
        device = {}
    for key, spec in device.items():
        if key not in schema.DEVICE_IDS:
            errors.append(
                f"device_info.{key}: not a device identity mParticle takes (allowed: {', '.join(schema.DEVICE_IDS)})"
            )
            continue
        _check_text_spec(spec, f"device_info.{key}", errors, uuid_problem if key in schema.UUID_DEVICE_IDS else None)
    if "mp_deviceid" in doc:
        _check_text_spec(doc["mp_deviceid"], "mp_deviceid", errors, uuid_problem)
    if "ip" in doc:
        _check_text_spec(doc["ip"], "ip", errors, ip_problem)
    partners = doc.get("partner_identities", {})
    if not isinstance(partners, dict):
        errors.append("partner_identities: must be an object of partner identity name → field")
        partners = {}
    if len(partners) > MAX_PARTNER_IDENTITIES:
        errors.append(f"partner_identities: {len(partners)} names, at most {MAX_PARTNER_IDENTITIES}")
    for name, spec in partners.items():
        if not name or len(name) > schema.MAX_NAME_LENGTH:
            errors.append(f"partner_identities: a name must have 1 to {schema.MAX_NAME_LENGTH} characters")
            continue
        _check_text_spec(spec, f"partner_identities.{name}", errors)
    if "data_plan" in doc:
        errors += data_plan_problems(doc["data_plan"], "data_plan")


def _check_event(rule: object, where: str, errors: list[str]) -> None:
    if not isinstance(rule, dict):
        errors.append(f"{where}: must be an object")
        return
    unknown = set(rule) - EVENT_KEYS
    if unknown:
        errors.append(f"{where}: unknown keys {sorted(unknown)} (allowed: {sorted(EVENT_KEYS)})")
    event_type = rule.get("event_type", "custom_event")
    if event_type not in SUPPORTED_EVENT_TYPES:
        errors.append(f"{where}.event_type: {event_type!r} is not supported here ({', '.join(SUPPORTED_EVENT_TYPES)})")
    if event_type == "custom_event":
        if "name" not in rule:
            errors.append(f"{where}.name: a custom_event needs a name (text, a template or a field)")
        else:
            _check_name_spec(rule["name"], f"{where}.name", errors, "name")
        kind = rule.get("custom_event_type", "other")
        if isinstance(kind, dict):
            _check_choice_spec(kind, schema.CUSTOM_EVENT_TYPES, f"{where}.custom_event_type", errors)
        elif kind not in schema.CUSTOM_EVENT_TYPES:
            errors.append(f"{where}.custom_event_type: {kind!r} is not one of {', '.join(schema.CUSTOM_EVENT_TYPES)}")
    elif event_type == "screen_view":
        _check_name_spec(rule.get("screen_name", rule.get("name")), f"{where}.screen_name", errors, "screen_name")
    elif event_type == "commerce_event":
        for key in ("name", "screen_name", "custom_event_type"):
            if key in rule:
                errors.append(
                    f"{where}.{key}: not used by a commerce_event (it is described by its product_action, "
                    f"promotion_action or product_impressions)"
                )
        kinds = [key for key in COMMERCE_KINDS if key in rule]
        if len(kinds) != 1:
            errors.append(
                f"{where}: a commerce_event needs exactly one of product_action, promotion_action or "
                f"product_impressions" + (f" (found {', '.join(kinds)})" if kinds else "")
            )
        if "product_action" in rule or not kinds:
            _check_product_action(rule.get("product_action"), f"{where}.product_action", errors)
        if "promotion_action" in rule:
            _check_promotion_action(rule["promotion_action"], f"{where}.promotion_action", errors)
        if "product_impressions" in rule:
            _check_product_impressions(rule["product_impressions"], f"{where}.product_impressions", errors)
    for key in COMMERCE_KINDS:
        if key in rule and event_type != "commerce_event":
            errors.append(f'{where}.{key}: only for "event_type": "commerce_event"')
    if "when" in rule:
        check_condition(rule["when"], f"{where}.when", errors)
    if "timestamp" in rule:
        _check_timestamp_spec(rule["timestamp"], f"{where}.timestamp", errors)
    if "attributes" in rule:
        _check_attributes(rule["attributes"], f"{where}.attributes", errors)
    if "attributes_from" in rule:
        _check_from_spec(rule["attributes_from"], f"{where}.attributes_from", errors)


def _check_samples(samples: object, errors: list[str]) -> None:
    if not isinstance(samples, list):
        errors.append('samples: must be a list of {"record": {...}, "expect": {...}}')
        return
    for i, sample in enumerate(samples):
        where = f"samples[{i}]"
        if not isinstance(sample, dict):
            errors.append(f"{where}: must be an object with 'record' and 'expect'")
            continue
        unknown = set(sample) - SAMPLE_KEYS
        if unknown:
            errors.append(f"{where}: unknown keys {sorted(unknown)} (allowed: {sorted(SAMPLE_KEYS)})")
        if not isinstance(sample.get("record"), dict):
            errors.append(f"{where}.record: must be the source record, an object")
        expect = sample.get("expect")
        if not isinstance(expect, dict):
            errors.append(f'{where}.expect: must be an object (the output, or {{"rejected": "reason"}})')
            continue
        unknown = set(expect) - EXPECT_KEYS
        if unknown:
            errors.append(f"{where}.expect: unknown keys {sorted(unknown)} (allowed: {sorted(EXPECT_KEYS)})")
        if "rejected" in expect:
            if not isinstance(expect["rejected"], str):
                errors.append(f"{where}.expect.rejected: must be (part of) the reason, as text")
            if len(expect) > 1:
                errors.append(f"{where}.expect: a rejected sample expects nothing else")
        for key in ("identities", "user_attributes", "device_info", "partner_identities"):
            if key in expect and not isinstance(expect[key], dict):
                errors.append(f"{where}.expect.{key}: must be an object")
        for key in ("deleted_user_attributes", "events"):
            if key in expect and not isinstance(expect[key], list):
                errors.append(f"{where}.expect.{key}: must be a list")


# ---------------------------------------------------------------------------------------------- validate


def validate(doc: object) -> list[str]:
    """Every problem in a mapping document, each naming where it is. An empty list means valid."""
    errors: list[str] = []
    if not isinstance(doc, dict):
        return ["the mapping must be a JSON object"]
    for key, reason in REFUSED_KEYS.items():
        if key in doc:
            errors.append(f"{key}: {reason}")
    unknown = set(doc) - TOP_LEVEL_KEYS - set(REFUSED_KEYS)
    if unknown:
        errors.append(f"unknown top-level keys {sorted(unknown)} (allowed: {sorted(TOP_LEVEL_KEYS)})")
    if "record_key" in doc and (not isinstance(doc["record_key"], str) or not doc["record_key"]):
        errors.append("record_key: must be the name of a field")

    identities = doc.get("identities", {})
    if not isinstance(identities, dict):
        errors.append("identities: must be an object of identity key → field")
        identities = {}
    if not identities and "mpid" not in doc:
        errors.append("identities: map at least one identity key (for example customer_id) to a field, or give mpid")
    for key, spec in identities.items():
        if key not in schema.IDENTITY_KEYS:
            errors.append(
                f"identities.{key}: not an mParticle identity key (allowed: {', '.join(schema.IDENTITY_KEYS)})"
            )
        _check_value_spec(spec, f"identities.{key}", errors)
    if "mpid" in doc:
        _check_mpid(doc["mpid"], errors)
    _check_batch_fields(doc, errors)

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
        _check_value_spec(spec, f"user_attributes.{name}", errors, user=True)
    if "user_attributes_from" in doc:
        _check_from_spec(doc["user_attributes_from"], "user_attributes_from", errors, user=True)

    events = doc.get("events", [])
    if not isinstance(events, list):
        errors.append("events: must be a list of event rules")
        events = []
    for i, rule in enumerate(events):
        _check_event(rule, f"events[{i}]", errors)

    options = doc.get("options", {})
    if not isinstance(options, dict):
        errors.append("options: must be an object")
    else:
        if set(options) - OPTION_KEYS:
            errors.append(
                f"options: unknown keys {sorted(set(options) - OPTION_KEYS)} (allowed: {sorted(OPTION_KEYS)})"
            )
        if options.get("long_values", "reject") not in ("reject", "truncate"):
            errors.append("options.long_values: must be 'reject' or 'truncate'")
    if "samples" in doc:
        _check_samples(doc["samples"], errors)
    return errors
