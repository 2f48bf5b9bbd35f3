from __future__ import annotations

import pytest

from feeds.mapping import MappingError, RecordError, compile_mapping, parse_timestamp, validate
from feeds.mparticle import schema
from tests.helpers import MAPPING


def convert(rules: dict, record: dict, ref: str = "f.csv:2"):
    return compile_mapping(rules).convert(record, ref)


def test_the_example_mapping_is_valid():
    assert validate(MAPPING) == []


@pytest.mark.parametrize(
    "doc, message",
    [
        ([], "the mapping must be a JSON object"),
        ({}, "identities: map at least one identity key"),
        ({"identities": {"customerid": "id"}}, "identities.customerid: not an mParticle identity key"),
        ({"identities": {"customer_id": {"feild": "id"}}}, "identities.customer_id: unknown keys ['feild']"),
        ({"identities": {"customer_id": {"field": "a", "value": "b"}}}, "give exactly one of 'field' or 'value'"),
        (
            {"identities": {"email": {"field": "e", "type": "decimal"}}},
            "identities.email.type: 'decimal' is not one of",
        ),
        (
            {"identities": {"email": {"field": "e", "transform": ["shout"]}}},
            "identities.email.transform: must be one of",
        ),
        (
            {"identities": {"email": "e"}, "user_attributes": {"$favourite": "x"}},
            "user_attributes.$favourite: names starting with $ are reserved",
        ),
        (
            {"identities": {"email": "e"}, "events": [{"custom_event_type": "transaction"}]},
            "events[0].name: a custom_event needs a name",
        ),
        (
            {"identities": {"email": "e"}, "events": [{"name": "X", "custom_event_type": "buy"}]},
            "events[0].custom_event_type: 'buy' is not one of",
        ),
        (
            {"identities": {"email": "e"}, "events": [{"name": "X", "timestamp": {"field": "t", "format": "rfc"}}]},
            "events[0].timestamp.format: 'rfc' is not one of",
        ),
        (
            {"identities": {"email": "e"}, "events": [{"name": "X", "attributes": {f"a{i}": "x" for i in range(101)}}]},
            "events[0].attributes: 101 attributes, mParticle takes at most 100",
        ),
        ({"identities": {"email": "e"}, "colour": 1}, "unknown top-level keys ['colour']"),
        (
            {"identities": {"email": "e"}, "events": [{"event_type": "session_start"}]},
            "events[0].event_type: 'session_start' is not supported here",
        ),
    ],
)
def test_invalid_mappings_say_what_and_where(doc, message):
    errors = validate(doc)
    assert any(message in e for e in errors), errors
    with pytest.raises(MappingError):
        compile_mapping(doc)


def test_every_identity_key_is_accepted():
    doc = {"identities": {key: key for key in schema.IDENTITY_KEYS}}
    assert validate(doc) == []
    record = convert(doc, {key: f"v-{key}" for key in schema.IDENTITY_KEYS})
    assert record.identities == {key: f"v-{key}" for key in schema.IDENTITY_KEYS}


def test_it_converts_a_purchase_record():
    record = convert(
        MAPPING,
        {
            "id": "r1",
            "user_id": "u1",
            "email": "  Ada@Example.COM ",
            "plan": "pro",
            "first_name": "Ada",
            "ts": "2026-11-20T10:00:00Z",
            "sku": "A-1",
            "amount": "19.99",
        },
    )
    assert record.identities == {"customer_id": "u1", "email": "ada@example.com"}
    assert record.user_attributes == {"plan": "pro", "$firstname": "Ada"}
    [event] = record.events
    assert event["event_type"] == "custom_event"
    data = event["data"]
    assert data["event_name"] == "Purchase Completed"
    assert data["custom_event_type"] == "transaction"
    assert data["timestamp_unixtime_ms"] == 1795168800000
    assert data["custom_attributes"] == {"sku": "A-1", "amount": 19.99}


def test_event_ids_are_deterministic_and_follow_the_record_key():
    a = convert(MAPPING, {"id": "r1", "user_id": "u1", "ts": "2026-11-20T10:00:00Z"}, ref="a.csv:2")
    b = convert(MAPPING, {"id": "r1", "user_id": "u1", "ts": "2026-11-20T10:00:00Z"}, ref="b.csv:9")
    c = convert(MAPPING, {"id": "r2", "user_id": "u1", "ts": "2026-11-20T10:00:00Z"}, ref="a.csv:2")
    ida, idb, idc = (r.events[0]["data"]["source_message_id"] for r in (a, b, c))
    assert ida == idb != idc
    salted = compile_mapping(MAPPING, id_salt="7").convert({"id": "r1", "user_id": "u1", "ts": "2026-11-20"}, "x")
    assert salted.events[0]["data"]["source_message_id"] != ida


def test_a_record_without_identity_is_refused():
    with pytest.raises(RecordError, match="no identity"):
        convert(MAPPING, {"id": "r1", "user_id": "", "email": "", "ts": "2026-11-20T10:00:00Z"})


def test_a_bad_number_is_refused_with_the_field_named():
    with pytest.raises(RecordError, match=r"events\[0\]\.attributes\.amount: 'lots' is not a number"):
        convert(MAPPING, {"id": "r1", "user_id": "u1", "ts": "2026-11-20T10:00:00Z", "amount": "lots"})


def test_a_missing_timestamp_is_refused():
    with pytest.raises(RecordError, match=r"events\[0\]\.timestamp: field 'ts' is missing"):
        convert(MAPPING, {"id": "r1", "user_id": "u1"})


def test_a_bad_timestamp_is_refused():
    with pytest.raises(RecordError, match=r"events\[0\]\.timestamp: 'yesterday' is not a time"):
        convert(MAPPING, {"id": "r1", "user_id": "u1", "ts": "yesterday"})


@pytest.mark.parametrize(
    "value, fmt, expected",
    [
        ("2026-11-20T10:00:00Z", "iso8601", 1795168800000),
        ("2026-11-20T10:00:00+01:00", "iso8601", 1795165200000),
        ("2026-11-20T10:00:00", "iso8601", 1795168800000),
        ("2026-11-20", "auto", 1795132800000),
        (1795168800, "auto", 1795168800000),
        (1795168800000, "auto", 1795168800000),
        ("1795168800", "epoch_s", 1795168800000),
        ("1795168800000", "epoch_ms", 1795168800000),
        ("20/11/2026 10:00", "%d/%m/%Y %H:%M", 1795168800000),
    ],
)
def test_timestamps(value, fmt, expected):
    assert parse_timestamp(value, fmt) == expected


def test_coercion_of_types():
    doc = {
        "identities": {"customer_id": {"field": "id", "type": "string"}},
        "user_attributes": {
            "age": {"field": "age", "type": "int"},
            "vip": {"field": "vip", "type": "bool"},
            "score": {"field": "score", "type": "float"},
            "tags": "tags",
            "country": {"value": "FR"},
        },
    }
    record = convert(doc, {"id": 42, "age": "41", "vip": "yes", "score": "1e3", "tags": ["a", "b"]})
    assert record.identities == {"customer_id": "42"}
    assert record.user_attributes == {"age": 41, "vip": True, "score": 1000.0, "tags": ["a", "b"], "country": "FR"}
    with pytest.raises(RecordError, match="user_attributes.age: '4.5' is not a whole number"):
        convert(doc, {"id": 1, "age": "4.5"})
    with pytest.raises(RecordError, match="user_attributes.vip: 'maybe' is not a boolean"):
        convert(doc, {"id": 1, "vip": "maybe"})


def test_nested_fields_are_read_with_dots():
    doc = {"identities": {"customer_id": "user.id"}, "user_attributes": {"city": "user.address.city"}}
    record = convert(doc, {"user": {"id": "u9", "address": {"city": "Lyon"}}})
    assert record.identities == {"customer_id": "u9"}
    assert record.user_attributes == {"city": "Lyon"}


def test_custom_attributes_must_be_scalars():
    doc = {"identities": {"customer_id": "id"}, "events": [{"name": "E", "attributes": {"items": "items"}}]}
    with pytest.raises(RecordError, match=r"events\[0\]\.attributes\.items: must be a single value, got a list"):
        convert(doc, {"id": "u", "items": [1, 2]})


def test_long_values_are_refused_or_truncated_as_the_mapping_says():
    doc = {"identities": {"customer_id": "id"}, "user_attributes": {"bio": "bio"}}
    with pytest.raises(RecordError, match="4097 characters, over mParticle's 4096"):
        convert(doc, {"id": "u", "bio": "x" * 4097})
    converter = compile_mapping({**doc, "options": {"long_values": "truncate"}})
    record = converter.convert({"id": "u", "bio": "x" * 5000}, "r")
    assert len(record.user_attributes["bio"]) == 4096
    assert converter.stats.values_truncated == 1


def test_long_names_are_cut_to_256_and_counted():
    name = "n" * 300
    converter = compile_mapping({"identities": {"customer_id": "id"}, "events": [{"name": name}]})
    record = converter.convert({"id": "u"}, "r")
    assert record.events[0]["data"]["event_name"] == "n" * 256
    assert converter.stats.names_truncated == 1


def test_event_name_from_a_field():
    doc = {
        "identities": {"customer_id": "id"},
        "events": [{"name": {"field": "action"}, "custom_event_type": "navigation"}],
    }
    record = convert(doc, {"id": "u", "action": "Signed Up"})
    assert record.events[0]["data"]["event_name"] == "Signed Up"
    with pytest.raises(RecordError, match="the event name field is missing"):
        convert(doc, {"id": "u"})


def test_nan_is_refused():
    doc = {"identities": {"customer_id": "id"}, "user_attributes": {"score": "score"}}
    with pytest.raises(RecordError, match="is not a number mParticle accepts"):
        convert(doc, {"id": "u", "score": float("nan")})
