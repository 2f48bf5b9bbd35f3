"""Generated junk against the mapper: whatever a record holds (NaN, infinities, huge numbers and texts, broken
Unicode, deep nesting, objects where text is expected), convert() returns data the Events API accepts or
raises RecordError with a reason, never anything else. And whatever a mapping document holds, validate()
answers, and a document it accepts compiles."""

from __future__ import annotations

import copy
import json
import math
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feeds.mapping import RecordError, compile_mapping, validate, warnings
from feeds.mapping.timestamps import MAX_TIMESTAMP_MS, MIN_TIMESTAMP_MS
from feeds.mparticle import schema
from feeds.mparticle.batch import group_by_user
from sandbox.checks import validate_batch
from tests.helpers import MAPPING

checked = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=300,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

KITCHEN_SINK = {
    "record_key": "key",
    "identities": {
        "customer_id": "id",
        "email": {"field": "email", "transform": ["trim", "lower"]},
        "other": {"field": "nested.id", "type": "string"},
    },
    "mpid": "mpid",
    "user_attributes": {
        "plan": {"field": "plan", "on_null": "delete"},
        "$age": {"field": "age", "type": "int"},
        "score": {"field": "score", "type": "float"},
        "vip": {"field": "vip", "type": "bool"},
        "tags": "tags",
        "colours": {"field": "colours", "split": ","},
        "seen": {"field": "seen", "type": "timestamp"},
        "n": {"field": "n", "type": "number", "default": 0},
    },
    "user_attributes_from": {"field": "traits", "on_null": "omit"},
    "events": [
        {
            "name": "{category} Viewed",
            "custom_event_type": "navigation",
            "when": {"field": "type", "in": ["view", 1, True]},
            "timestamp": {"field": "ts", "required": False},
            "attributes_from": "props",
        },
        {
            "name": {"field": "action"},
            "custom_event_type": {"field": "kind"},
            "when": {"any": [{"field": "amount", "gt": 10}, {"not": {"field": "x", "exists": True}}]},
            "timestamp": {
                "field": "local_ts",
                "format": "%d/%m/%Y %H:%M",
                "timezone": "Europe/Paris",
                "required": False,
            },
            "attributes": {"amount": {"field": "amount", "type": "float"}, "x": "x", "deep": "a.b.c.0"},
        },
        {"event_type": "screen_view", "screen_name": "{page}", "when": {"field": "page", "exists": True}},
        {
            "event_type": "commerce_event",
            "when": {"all": [{"field": "type", "equals": "purchase"}, {"field": "total", "gte": 0}]},
            "timestamp": {"field": "ms", "format": "epoch_ms", "required": False},
            "product_action": {
                "action": "purchase",
                "transaction_id": "key",
                "total_amount": "total",
                "tax_amount": {"field": "tax", "type": "float"},
                "currency_code": "currency",
                "products": {
                    "from": "items",
                    "id": "sku",
                    "name": "title",
                    "price": "price",
                    "quantity": {"field": "qty", "type": "int"},
                    "attributes": {"colour": "colour"},
                },
            },
        },
        {
            "event_type": "commerce_event",
            "when": {"field": "type", "equals": "cart"},
            "product_action": {
                "action": {"field": "action"},
                "products": [{"id": "sku", "price": "price"}, {"name": "title", "quantity": "qty"}],
            },
        },
    ],
}
MAPPINGS = [
    MAPPING,
    KITCHEN_SINK,
    {**KITCHEN_SINK, "options": {"long_values": "truncate"}},
    json.loads((Path(__file__).resolve().parent.parent / "demo" / "mapping.json").read_text()),
]
FIELDS = [
    "id", "email", "nested", "mpid", "plan", "age", "score", "vip", "tags", "colours", "seen", "n", "traits",
    "type", "category", "ts", "local_ts", "ms", "props", "action", "kind", "amount", "x", "a", "page", "total", "tax", "currency",
    "items", "key", "user_id", "first_name", "sku", "title", "price", "qty", "colour", "customer_id",
    "ordered_at", "order_id", "lifetime_orders",
]  # fmt: skip

TRICKY_TEXT = [
    "", " ", "NaN", "nan", "Infinity", "-inf", "1e400", "-0", "0", "1", "yes", "true", "2026-11-20T10:00:00Z",
    "20/11/2026 10:00", "1795168800", "1795168800000", "99999999999999999999999", "{}", "[]", '{"a": [1, 2]}',
    '[{"sku": "A", "price": 1}]', "[" * 2000, '{"a":' * 600, "view", "purchase", "cart", "refund", "add_to_cart",
    "navigation", "$firstname", "{x}", "\x00", "\ud800", "e\u0301", "日本語", "\U0001f600", "a,b,,c",
]  # fmt: skip


def deep(n: int, inner: object = "x") -> object:
    value = inner
    for i in range(n):
        value = [value] if i % 2 else {"a": value}
    return value


leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),  # NaN and infinities included
    st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -0.0, 2.0**53 + 1]),
    st.text(max_size=20),
    st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=3),
    st.sampled_from(TRICKY_TEXT),
    st.integers(min_value=250, max_value=20_000).map(lambda n: "é" * n),
    st.sampled_from(
        [Decimal("NaN"), Decimal("1e400"), Decimal("12.5"), datetime(2026, 11, 20, tzinfo=UTC), date(2026, 1, 1), b"x"]
    ),
)
junk = st.recursive(
    leaves,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=4), children, max_size=4)
    ),
    max_leaves=20,
)
junk = (
    junk
    | st.integers(min_value=1, max_value=3000).map(deep)
    | st.integers(min_value=0, max_value=2000).map(lambda n: [{"sku": f"s{i}", "price": i, "qty": 1} for i in range(n)])
)
fields = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=6), junk, max_size=14)
# Half of them with identities, so that the rules after the identities are reached.
records = fields | st.builds(lambda extra: {"id": "u", "user_id": "u", "customer_id": "c", **extra}, fields)
# Mostly plausible records, with junk in some fields: reaches the rules' deeper branches.
PLAUSIBLE = {
    "id": "u1", "user_id": "u1", "customer_id": "c1", "key": "k1", "order_id": "o1", "type": "purchase",
    "category": "Shoes", "ts": "2026-11-20T10:00:00Z", "ordered_at": "2026-11-20T10:00:00Z", "action": "refund",
    "local_ts": "20/11/2026 11:00", "ms": 1795168800000, "email": "A@B.C", "plan": "pro", "tags": ["a"],
    "kind": "search", "amount": "12.5", "total": "10", "page": "Home", "items": [{"sku": "A", "price": "1"}],
    "sku": "A", "title": "Boots", "price": "2", "qty": "1", "traits": {"city": "Lyon"}, "props": {"p": 1},
}  # fmt: skip
mixed = st.builds(
    lambda extra: {**PLAUSIBLE, **extra},
    st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=6), junk, max_size=3),
)


def check_accepted(user_record) -> None:
    """What a converted record must satisfy: mParticle's limits, and the sandbox's validation."""
    for event in user_record.events:
        data = event["data"]
        for key in ("event_name", "screen_name"):
            if key in data:
                assert isinstance(data[key], str) and data[key].strip() and len(data[key]) <= schema.MAX_NAME_LENGTH
        if "timestamp_unixtime_ms" in data:
            assert MIN_TIMESTAMP_MS <= data["timestamp_unixtime_ms"] <= MAX_TIMESTAMP_MS
        custom = data.get("custom_attributes", {})
        assert len(custom) <= schema.MAX_ATTRIBUTES_PER_EVENT
        for name, value in custom.items():
            assert len(name) <= schema.MAX_NAME_LENGTH
            assert not isinstance(value, str) or len(value) <= schema.MAX_VALUE_LENGTH
    assert len(user_record.user_attributes) <= schema.MAX_USER_ATTRIBUTES
    batches, refused = group_by_user([user_record])
    for batch in batches:
        body = batch.to_dict("production", "req")
        assert validate_batch(body) == []
        orjson.dumps(body)


def convert_or_refuse(converter, record: dict) -> None:
    try:
        user_record = converter.convert(record, "junk.ndjson:1")
    except RecordError as e:
        # A reason for people, found by the rules themselves (not the converter's safety net for bugs).
        assert str(e) and e.__cause__ is None, repr(e.__cause__)
        return
    check_accepted(user_record)


CONVERTERS = [compile_mapping(doc, id_salt="w1") for doc in MAPPINGS]


def test_a_plausible_record_goes_through_every_rule_of_the_kitchen_sink():
    for record in (PLAUSIBLE, {**PLAUSIBLE, "type": "view", "x": "1", "amount": "5"}, {**PLAUSIBLE, "type": "cart"}):
        user_record = CONVERTERS[1].convert(record, "x")
        check_accepted(user_record)
    assert [e["event_type"] for e in CONVERTERS[1].convert(PLAUSIBLE, "x").events] == [
        "custom_event",
        "screen_view",
        "commerce_event",
    ]
    assert len(CONVERTERS[1].convert({**PLAUSIBLE, "type": "view", "x": "1", "amount": "5"}, "x").events) == 2


@checked
@given(record=records, which=st.integers(min_value=0, max_value=len(MAPPINGS) - 1))
def test_junk_records_are_converted_or_refused_with_a_reason(record, which):
    convert_or_refuse(CONVERTERS[which], record)


@checked
@given(record=mixed, which=st.sampled_from([1, 2]))
def test_plausible_records_with_junk_fields_are_converted_or_refused_with_a_reason(record, which):
    convert_or_refuse(CONVERTERS[which], record)


@settings(checked, max_examples=30)
@given(value=junk)
def test_anything_that_is_not_an_object_is_refused(value):
    if isinstance(value, dict):
        return
    for converter in CONVERTERS:
        try:
            converter.convert(value, "x")
        except RecordError as e:
            assert e.__cause__ is None
        else:
            raise AssertionError("a non-object record was converted")


# ---------------------------------------------------------------------------------------------- documents


def paths(value: object, prefix: tuple = ()) -> list[tuple]:
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += paths(child, (*prefix, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            found += paths(child, (*prefix, i))
    return found


DOC_PATHS = paths(KITCHEN_SINK)[1:]
doc_junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8) | st.sampled_from(TRICKY_TEXT),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=10,
)


@checked
@given(where=st.sampled_from(DOC_PATHS), value=doc_junk, record=mixed)
def test_a_mapping_with_junk_in_it_is_refused_by_validation_or_works(where, value, record):
    doc = copy.deepcopy(KITCHEN_SINK)
    target = doc
    for part in where[:-1]:
        target = target[part]
    target[where[-1]] = value
    errors = validate(doc)
    assert isinstance(errors, list) and all(isinstance(e, str) for e in errors)
    assert isinstance(warnings(doc), list)
    if not errors:
        convert_or_refuse(compile_mapping(doc), record)


@settings(checked, max_examples=150)
@given(doc=doc_junk | st.dictionaries(st.sampled_from(sorted(KITCHEN_SINK)), doc_junk, max_size=5))
def test_validate_answers_any_document(doc):
    errors = validate(doc)
    assert isinstance(errors, list)
    if not errors:
        compile_mapping(doc)
