"""Values read by mapping rules: timestamps, types, transforms, defaults, mpid."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from feeds.mapping import MappingError, RecordError, compile_mapping, parse_timestamp, validate
from feeds.mapping.timestamps import parse_zone

NOV_20_10H_UTC = 1795168800000


def convert(doc: dict, record: dict):
    return compile_mapping(doc).convert(record, "f.csv:2")


def attribute(spec: object, record: dict) -> object:
    """The value a user attribute rule gives for a record (absent → KeyError)."""
    out = convert({"identities": {"customer_id": "id"}, "user_attributes": {"a": spec}}, {"id": "u", **record})
    return out.user_attributes["a"]


# ------------------------------------------------------------------------------------------------ timestamps


@pytest.mark.parametrize(
    "value, fmt, expected",
    [
        ("2026-11-20T10:00:00Z", "iso8601", NOV_20_10H_UTC),
        ("2026-11-20T10:00:00z", "iso8601", NOV_20_10H_UTC),
        (" 2026-11-20T10:00:00Z ", "iso8601", NOV_20_10H_UTC),
        ("2026-11-20T10:00:00.250Z", "iso8601", NOV_20_10H_UTC + 250),
        ("2026-11-20T10:00:00.999999+00:00", "iso8601", NOV_20_10H_UTC + 999),
        ("2026-11-20T11:00:00+01:00", "iso8601", NOV_20_10H_UTC),
        ("2026-11-20T05:30:00-04:30", "iso8601", NOV_20_10H_UTC),
        ("2026-11-20 10:00:00", "iso8601", NOV_20_10H_UTC),
        ("2026-11-20T10:00", "auto", NOV_20_10H_UTC),
        ("2026-11-20", "auto", 1795132800000),
        ("1969-07-20T20:17:40Z", "auto", -14182940000),
        (1795168800, "auto", NOV_20_10H_UTC),
        (1795168800.5, "auto", NOV_20_10H_UTC + 500),
        (1795168800000, "auto", NOV_20_10H_UTC),
        ("1795168800", "auto", NOV_20_10H_UTC),
        ("1795168800000", "auto", NOV_20_10H_UTC),
        ("1.7951688e9", "auto", NOV_20_10H_UTC),
        ("1795168800", "epoch_s", NOV_20_10H_UTC),
        (1795168800, "epoch_s", NOV_20_10H_UTC),
        ("1795168800000", "epoch_ms", NOV_20_10H_UTC),
        (1795168800000.0, "epoch_ms", NOV_20_10H_UTC),
        ("20/11/2026 10:00", "%d/%m/%Y %H:%M", NOV_20_10H_UTC),
        ("20/11/2026 11:00 +0100", "%d/%m/%Y %H:%M %z", NOV_20_10H_UTC),
        (datetime(2026, 11, 20, 10, tzinfo=UTC), "auto", NOV_20_10H_UTC),
        (datetime(2026, 11, 20, 10), "iso8601", NOV_20_10H_UTC),
        (date(2026, 11, 20), "auto", 1795132800000),
    ],
)
def test_timestamps_become_epoch_milliseconds(value, fmt, expected):
    assert parse_timestamp(value, fmt) == expected


def test_times_without_a_zone_are_read_in_the_given_zone():
    paris = parse_zone("Europe/Paris")
    assert parse_timestamp("2026-11-20T11:00:00", "iso8601", paris) == NOV_20_10H_UTC
    assert parse_timestamp("2026-07-20T12:00:00", "iso8601", paris) == 1784541600000  # summer time: UTC+2
    assert parse_timestamp("2026-11-20T10:00:00Z", "iso8601", paris) == NOV_20_10H_UTC  # a zone in the text wins
    assert parse_timestamp("20/11/2026 13:00", "%d/%m/%Y %H:%M", parse_zone("+03:00")) == NOV_20_10H_UTC
    assert parse_zone("UTC") is UTC
    assert parse_zone("-05:30") == timezone(-timedelta(hours=5, minutes=30))


@pytest.mark.parametrize(
    "value, fmt",
    [
        ("yesterday", "auto"),
        ("2026-13-01", "iso8601"),
        ("2026-11-20T10:00:00Z", "%d/%m/%Y"),
        ("1795168800", "iso8601"),
        (True, "auto"),
        (float("nan"), "auto"),
        (float("inf"), "epoch_ms"),
        ("1e400", "auto"),
        (10**30, "auto"),
        ("9" * 5000, "epoch_ms"),
        ("2026-11-20T10:00:00Z" + " " * 200 + "x", "iso8601"),
        ({"at": 1}, "auto"),
        ([1795168800], "epoch_s"),
    ],
)
def test_what_is_not_a_time_raises_value_error(value, fmt):
    with pytest.raises(ValueError):
        parse_timestamp(value, fmt)


def test_an_event_timestamp_is_read_with_its_format_and_zone():
    doc = {
        "identities": {"customer_id": "id"},
        "events": [{"name": "E", "timestamp": {"field": "at", "format": "%d/%m/%Y %H:%M", "timezone": "Europe/Paris"}}],
    }
    record = convert(doc, {"id": "u", "at": "20/11/2026 11:00"})
    assert record.events[0]["data"]["timestamp_unixtime_ms"] == NOV_20_10H_UTC
    with pytest.raises(RecordError, match=r"events\[0\]\.timestamp: '2026-11-20' is not a time in format %d/%m/%Y"):
        convert(doc, {"id": "u", "at": "2026-11-20"})


def test_an_optional_timestamp_may_be_missing():
    doc = {
        "identities": {"customer_id": "id"},
        "events": [{"name": "E", "timestamp": {"field": "at", "required": False}}],
    }
    assert "timestamp_unixtime_ms" not in convert(doc, {"id": "u", "at": ""}).events[0]["data"]
    assert convert(doc, {"id": "u", "at": 1795168800}).events[0]["data"]["timestamp_unixtime_ms"] == NOV_20_10H_UTC


def test_a_value_can_be_a_timestamp():
    spec = {"field": "signed_up", "type": "timestamp", "format": "%Y%m%d"}
    assert attribute(spec, {"signed_up": "20261120"}) == 1795132800000
    with pytest.raises(RecordError, match=r"user_attributes\.a: 'soon' is not a time in format %Y%m%d"):
        attribute(spec, {"signed_up": "soon"})


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"field": "t", "format": "%Y", "type": "string"}, "'format' and 'timezone' go with \"type\": \"timestamp\""),
        ({"field": "t", "type": "timestamp", "timezone": "Mars/Olympus"}, "'Mars/Olympus' is not a known time zone"),
        ({"field": "t", "type": "timestamp", "format": "dd/mm/yyyy"}, "is not one of auto, iso8601"),
        ({"field": "t", "type": "timestamp", "format": "%d/%m/%Q"}, "is not a usable strptime pattern ('Q' is a bad"),
    ],
)
def test_bad_time_specs_are_named(spec, message):
    errors = validate({"identities": {"customer_id": "id"}, "user_attributes": {"a": spec}})
    assert any(message in e and e.startswith("user_attributes.a") for e in errors), errors


def test_a_bad_event_time_zone_is_named():
    doc = {"identities": {"customer_id": "id"}, "events": [{"name": "E", "timestamp": {"field": "t", "timezone": 2}}]}
    assert any(e.startswith("events[0].timestamp.timezone: must be a time zone name") for e in validate(doc))


# ------------------------------------------------------------------------------------------------- coercion


@pytest.mark.parametrize(
    "kind, value, expected",
    [
        ("int", "41", 41),
        ("int", " 41 ", 41),
        ("int", "4.0", 4),
        ("int", 41.0, 41),
        ("int", "-7", -7),
        ("int", Decimal("12"), 12),
        ("float", "19.99", 19.99),
        ("float", "1e3", 1000.0),
        ("float", 3, 3.0),
        ("number", "3", 3),
        ("number", "3.5", 3.5),
        ("number", 3.0, 3.0),
        ("bool", "yes", True),
        ("bool", "N", False),
        ("bool", "off", False),
        ("bool", 1, True),
        ("bool", False, False),
        ("string", 42, "42"),
        ("string", 42.0, "42"),
        ("string", 1.5, "1.5"),
        ("string", True, "true"),
        ("string", "x", "x"),
    ],
)
def test_values_are_coerced_to_the_type_asked(kind, value, expected):
    got = attribute({"field": "v", "type": kind}, {"v": value})
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize(
    "kind, value, message",
    [
        ("int", "4.5", "'4.5' is not a whole number"),
        ("int", "ten", "'ten' is not a whole number"),
        ("int", True, "True is not a whole number"),
        ("int", "1e400", "'1e400' is not a whole number"),
        ("int", str(2**63), "too large a number"),
        ("int", [1], "a list of 1 items is not a whole number"),
        ("float", "NaN", "'NaN' is not a finite number"),
        ("float", "Infinity", "'Infinity' is not a finite number"),
        ("float", "abc", "'abc' is not a number"),
        ("float", 10**400, "is not a number"),
        ("float", {"a": 1}, "an object with 1 keys is not a number"),
        ("number", "1,5", "'1,5' is not a number"),
        ("bool", "maybe", "'maybe' is not a boolean (true/false, yes/no, 1/0)"),
        ("bool", 2, "2 is not a boolean"),
        ("string", {"a": 1}, "expected text, got an object"),
        ("string", float("nan"), "nan is not a number mParticle accepts"),
    ],
)
def test_a_value_that_cannot_be_coerced_refuses_the_record_with_the_rule_named(kind, value, message):
    with pytest.raises(RecordError) as e:
        attribute({"field": "v", "type": kind}, {"v": value})
    assert str(e.value).startswith("user_attributes.a: ") and message in str(e.value), str(e.value)


def test_email_is_trimmed_and_lower_cased_when_asked():
    doc = {"identities": {"email": {"field": "email", "transform": ["trim", "lower"]}}}
    assert convert(doc, {"email": "  Ada.Lovelace@Example.COM\t"}).identities == {"email": "ada.lovelace@example.com"}
    assert attribute({"field": "v", "transform": "upper"}, {"v": "fr"}) == "FR"
    assert attribute({"field": "v", "transform": ["trim", "upper", "lower"]}, {"v": " Fr "}) == "fr"


def test_text_that_is_empty_after_trimming_counts_as_missing():
    doc = {"identities": {"customer_id": "id", "email": {"field": "email", "transform": "trim"}}}
    assert convert(doc, {"id": "u", "email": "   "}).identities == {"customer_id": "u"}


def test_defaults_fill_missing_empty_and_null_values():
    spec = {"field": "plan", "default": "free"}
    assert attribute(spec, {}) == "free"
    assert attribute(spec, {"plan": ""}) == "free"
    assert attribute(spec, {"plan": None}) == "free"
    assert attribute(spec, {"plan": "pro"}) == "pro"
    assert attribute({"field": "n", "type": "int", "default": "0"}, {}) == 0


def test_a_required_value_refuses_the_record_when_missing_or_null():
    doc = {"identities": {"customer_id": "id"}, "user_attributes": {"plan": {"field": "plan", "required": True}}}
    for record in ({"id": "u"}, {"id": "u", "plan": ""}, {"id": "u", "plan": None}):
        with pytest.raises(RecordError, match="user_attributes.plan: field 'plan' is missing or empty"):
            convert(doc, record)


def test_constants_and_defaults_are_checked_against_their_type_when_validating():
    doc = {"identities": {"customer_id": "id"}, "user_attributes": {"n": {"value": "ten", "type": "int"}}}
    assert validate(doc) == ["user_attributes.n.value: 'ten' is not a whole number"]
    doc = {"identities": {"customer_id": "id"}, "user_attributes": {"n": {"field": "n", "type": "int", "default": "x"}}}
    assert validate(doc) == ["user_attributes.n.default: 'x' is not a whole number"]
    doc = {"identities": {"customer_id": "id"}, "events": [{"name": "E", "attributes": {"c": {"value": {"a": 1}}}}]}
    assert validate(doc) == ["events[0].attributes.c.value: must be text, a number, true/false or null"]
    with pytest.raises(MappingError):
        compile_mapping(doc)


def test_nested_fields_and_list_positions_are_read_with_dots():
    doc = {"identities": {"customer_id": "user.id"}, "user_attributes": {"first_tag": "user.tags.0", "dotted": "a.b"}}
    record = convert(doc, {"user": {"id": "u9", "tags": ["x", "y"]}, "a.b": "literal"})
    assert record.identities == {"customer_id": "u9"}
    assert record.user_attributes == {"first_tag": "x", "dotted": "literal"}
    assert convert(doc, {"user": {"id": "u9", "tags": []}, "a": "not an object"}).user_attributes == {}


def test_values_from_database_sources_are_made_json():
    doc = {"identities": {"customer_id": "id"}, "user_attributes": {"joined": "joined", "credit": "credit"}}
    record = convert(doc, {"id": 7, "joined": date(2026, 11, 20), "credit": Decimal("12.50")})
    assert record.identities == {"customer_id": "7"}
    assert record.user_attributes == {"joined": "2026-11-20", "credit": 12.5}


# ----------------------------------------------------------------------------------------------------- mpid


@pytest.mark.parametrize("value, expected", [("123456789", 123456789), (-8234, -8234), ("-9", -9), (42.0, 42)])
def test_mpid_is_read_as_a_64_bit_integer(value, expected):
    doc = {"identities": {"customer_id": "id"}, "mpid": "mpid"}
    assert convert(doc, {"id": "u", "mpid": value}).mpid == expected
    assert convert(doc, {"id": "u", "mpid": ""}).mpid is None


@pytest.mark.parametrize(
    "value, message",
    [
        ("12.5", "mpid: '12.5' is not an integer"),
        ("abc", "mpid: 'abc' is not an integer"),
        (True, "mpid: True is not an integer"),
        (1.5, "mpid: 1.5 is not an integer"),
        (str(2**63), "is outside the 64-bit range"),
        (-(2**63) - 1, "is outside the 64-bit range"),
        ({"id": 1}, "mpid: an object with 1 keys is not an integer"),
    ],
)
def test_an_mpid_that_is_not_a_64_bit_integer_is_refused(value, message):
    with pytest.raises(RecordError, match=message):
        convert({"identities": {"customer_id": "id"}, "mpid": "mpid"}, {"id": "u", "mpid": value})


def test_mpid_alone_identifies_the_user():
    doc = {"mpid": {"field": "mpid"}}
    assert validate(doc) == []
    record = convert(doc, {"mpid": "77"})
    assert (record.mpid, record.identities) == (77, {})
    with pytest.raises(RecordError, match="no identity: every mapped identity field and mpid is missing or empty"):
        convert(doc, {"mpid": ""})
    assert validate({"mpid": {"value": 2**64}}) == ["mpid.value: too large a number (64-bit integers)"]
    assert validate({"mpid": {"value": str(2**64)}}) == ["mpid.value: too large a number (64-bit integers)"]
    assert validate({"mpid": {"value": "abc"}}) == ["mpid.value: 'abc' is not an integer"]
    assert validate({"mpid": {"field": "m", "type": "float"}}) == [
        "mpid.type: an mpid is a 64-bit integer; use auto, int or string"
    ]
    assert convert({"mpid": {"value": "-42"}}, {}).mpid == -42


@pytest.mark.parametrize("codegen", [True, False])
def test_numbers_with_a_decimal_comma(codegen):
    doc = {
        "identities": {"customer_id": "id"},
        "user_attributes": {
            "ltv": {"field": "ltv", "type": "float", "transform": ["trim", "decimal_comma"]},
            "orders": {"field": "orders", "type": "int", "transform": "decimal_comma"},
        },
    }
    convert_one = compile_mapping(doc, codegen=codegen).convert
    for ltv, orders, expected in [
        ("12,50", "3", {"ltv": 12.5, "orders": 3}),
        (" 1.234,56 ", "1.000", {"ltv": 1234.56, "orders": 1000}),  # dots group thousands
        ("1\u202f234,5", "2,0", {"ltv": 1234.5, "orders": 2}),  # so do (thin) spaces
    ]:
        assert convert_one({"id": "u", "ltv": ltv, "orders": orders}, "x").user_attributes == expected
    with pytest.raises(RecordError, match=r"user_attributes.ltv: '12,5,0' is not a number"):
        convert_one({"id": "u", "ltv": "12,5,0", "orders": "1"}, "x")
