"""Event rules compiled into functions of (record, ref): custom events, screen views, commerce events."""

from __future__ import annotations

from collections.abc import Callable

from feeds.mparticle import schema
from feeds.mparticle.batch import uuid5_of
from feeds.words import kind

from .conditions import compile_condition
from .limits import MAX_NAME, MAX_VALUE, Limits, json_container
from .specs import is_template, parse_template, template_reader, value_reader
from .timestamps import timestamp_reader
from .validation import ACTION_FIELDS, PRODUCT_FIELDS
from .values import MISSING, RecordError, getter, scalar_text, show


def id_prefix(prefix: str) -> bytes:
    """The start of the name of `deterministic_id(prefix, ref)`, before the ref."""
    return f"{prefix}:".encode()


def id_maker(prefix: str) -> Callable[[str], str]:
    """`deterministic_id(prefix, ref)` (uuid5 in mpfeed's namespace) for any ref, lone surrogates included."""
    start = id_prefix(prefix)

    def make(ref: str) -> str:
        return uuid5_of(start + ref.encode("utf-8", "surrogatepass"))

    return make


def attributes_reader(
    static: dict, from_spec: str | dict | None, where: str, limits: Limits
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
                for key, value in data.items():
                    if value != "":  # empty text is missing, as everywhere
                        name = limits.dynamic_name(key, from_where)
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


def name_reader(spec: object, where: str, limits: Limits, label: str) -> tuple[str | None, Callable[[dict], str]]:
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
            raise RecordError(f"{where}: the {label} field is missing or empty")
        return limits.name(value if type(value) is str else scalar_text(value, where), where)

    return None, from_field


def choice_reader(
    spec: object, allowed: tuple[str, ...], where: str, what: str
) -> tuple[str | None, Callable[[dict], str]]:
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


def event_rule(index: int, rule: dict, limits: Limits, id_salt: str) -> Callable[[dict, str], dict | None]:
    where = f"events[{index}]"
    event_type = rule.get("event_type", "custom_event")
    when = compile_condition(rule["when"]) if "when" in rule else None
    timestamp = timestamp_reader(rule["timestamp"], f"{where}.timestamp") if "timestamp" in rule else None
    attributes = attributes_reader(
        rule.get("attributes", {}), rule.get("attributes_from"), f"{where}.attributes", limits
    )
    make_id = id_maker(f"{id_salt}:{index}")

    head: Callable[[dict], dict]
    if event_type == "custom_event":
        constant_name, read_name = name_reader(rule["name"], f"{where}.name", limits, "event name")
        constant_type, read_type = choice_reader(
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
        _, read_screen = name_reader(
            rule.get("screen_name", rule.get("name")), f"{where}.screen_name", limits, "screen name"
        )

        def head(record: dict) -> dict:
            return {"screen_name": read_screen(record)}

    elif "promotion_action" in rule:
        head = _promotion_action(rule["promotion_action"], f"{where}.promotion_action", limits)
    elif "product_impressions" in rule:
        head = _product_impressions(rule["product_impressions"], f"{where}.product_impressions", limits)
    else:
        head = _product_action(rule["product_action"], f"{where}.product_action", limits)

    if event_type == "custom_event" and constant_name is not None and constant_type is not None:
        # The most common rule, a fixed name and type: no call for the head.
        def build_fixed(record: dict, ref: str) -> dict | None:
            if when is not None and not when(record):
                return None
            data: dict[str, object] = {"event_name": constant_name, "custom_event_type": constant_type}
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

        return build_fixed

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
    constant_action, read_action = choice_reader(
        spec["action"], schema.PRODUCT_ACTIONS, f"{where}.action", "product action"
    )
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
    attributes = attributes_reader(spec.get("attributes", {}), None, f"{where}.attributes", limits)
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
        for i, item in enumerate(items):
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


def _promotion_action(spec: dict, where: str, limits: Limits) -> Callable[[dict], dict]:
    """The data of a commerce event about promotions: {"promotion_action": {"action", "promotions"}}."""
    constant_action, read_action = choice_reader(
        spec["action"], schema.PROMOTION_ACTIONS, f"{where}.action", "promotion action"
    )
    promotions = spec["promotions"]
    at = f"{where}.promotions"
    if isinstance(promotions, list):
        builders = [_promotion(one, f"{at}[{i}]") for i, one in enumerate(promotions)]

        def read_promotions(record: dict) -> list[dict]:
            return [p for p in (build(record) for build in builders) if p is not None]

    else:
        source = promotions["from"]
        get_items = getter(source)
        build_one = _promotion(promotions, at)

        def read_promotions(record: dict) -> list[dict]:
            items = json_container(get_items(record), list, f"{at}.from: field '{source}'")
            out = []
            for i, item in enumerate(items or ()):
                if not isinstance(item, dict):
                    raise RecordError(f"{at}: item {i + 1} of '{source}' is {kind(item)}, not an object")
                try:
                    promotion = build_one(item)
                except RecordError as e:
                    raise RecordError(f"{e} (item {i + 1} of '{source}')") from None
                if promotion is None:
                    raise RecordError(f"{at}: item {i + 1} of '{source}' has none of the mapped promotion fields")
                out.append(promotion)
            return out

    def build(record: dict) -> dict:
        action: dict[str, object] = {"action": constant_action if constant_action is not None else read_action(record)}
        found = read_promotions(record)
        if found:
            action["promotions"] = found
        return {"promotion_action": action}

    return build


def _promotion(spec: dict, where: str) -> Callable[[dict], dict | None]:
    """One promotion (id, name, creative, position: all text): None when it has no values at all."""
    fields = [
        (key, value_reader(spec[key], f"{where}.{key}", "string"), f"{where}.{key}")
        for key in schema.PROMOTION_FIELDS
        if key in spec
    ]

    def build(source: dict) -> dict | None:
        promotion: dict[str, object] = {}
        for key, read, at in fields:
            value = read(source)
            if value is not MISSING and value is not None:
                text = scalar_text(value, at)
                if len(text) > MAX_VALUE:
                    raise RecordError(f"{at}: {len(text)} characters, mParticle takes at most {MAX_VALUE}")
                promotion[key] = text
        if not promotion:
            return None
        if "id" not in promotion and "name" not in promotion:
            raise RecordError(f"{where}: a promotion needs an id or a name, and both are missing")
        return promotion

    return build


def _product_impressions(specs: list, where: str, limits: Limits) -> Callable[[dict], dict]:
    """The data of a commerce event about products shown: {"product_impressions": [{list name, products}]}.
    An impression whose products are all missing is left out; a record with none at all is refused, as
    mParticle takes no commerce event without one of its three parts."""
    impressions = []
    for i, spec in enumerate(specs):
        at = f"{where}[{i}]"
        _, read_name = name_reader(
            spec["product_impression_list"], f"{at}.product_impression_list", limits, "list name"
        )
        impressions.append((read_name, _products(spec["products"], f"{at}.products", limits)))

    def build(record: dict) -> dict:
        out = []
        for read_name, read_products in impressions:
            products = read_products(record)
            if products:
                out.append({"product_impression_list": read_name(record), "products": products})
        if not out:
            raise RecordError(f"{where}: no products were shown (every impression's products are missing)")
        return {"product_impressions": out}

    return build
