"""mParticle's limits, checked before sending: names cut and counted, long values refused or cut, attribute
counts and list sizes, and warnings about mappings that can make more than 1,000 event names."""

from __future__ import annotations

import pytest

from feeds.mapping import RecordError, compile_mapping, validate, warnings
from feeds.mparticle.batch import group_by_user
from sandbox.checks import validate_batch

ID = {"customer_id": "id"}
TRUNCATE = {"long_values": "truncate"}


def test_names_from_records_over_256_characters_are_cut_and_counted():
    doc = {
        "identities": ID,
        "events": [
            {"name": "{kind} happened", "attributes_from": "props"},
            {"event_type": "screen_view", "screen_name": {"field": "screen"}},
        ],
    }
    converter = compile_mapping(doc)
    record = converter.convert(
        {"id": "u", "kind": "k" * 300, "screen": "s" * 257, "props": {"p" * 400: 1, "ok": 2}}, "r"
    )
    custom, screen = (e["data"] for e in record.events)
    assert custom["event_name"] == "k" * 256
    assert screen["screen_name"] == "s" * 256
    assert custom["custom_attributes"] == {"p" * 256: 1, "ok": 2}
    assert converter.stats.names_truncated == 3
    converter.convert({"id": "u", "kind": "short", "screen": "S"}, "r")
    assert converter.stats.names_truncated == 3


def test_long_constant_names_are_cut_and_counted_per_event():
    converter = compile_mapping({"identities": ID, "events": [{"name": "n" * 300, "attributes": {"a" * 300: "x"}}]})
    for _ in range(3):
        record = converter.convert({"id": "u", "x": 1}, "r")
    assert record.events[0]["data"]["event_name"] == "n" * 256
    assert list(record.events[0]["data"]["custom_attributes"]) == ["a" * 256]
    assert converter.stats.names_truncated == 6


@pytest.mark.parametrize(
    "doc, record",
    [
        ({"identities": ID, "events": [{"name": "E", "attributes": {"a": "a"}}]}, {"a": "x" * 5000}),
        ({"identities": ID, "user_attributes": {"a": "a"}}, {"a": "x" * 5000}),
        ({"identities": ID, "events": [{"name": "E", "attributes_from": "p"}]}, {"p": {"a": "x" * 5000}}),
        (
            {
                "identities": ID,
                "events": [
                    {"event_type": "commerce_event", "product_action": {"action": "refund", "transaction_id": "a"}}
                ],
            },
            {"a": "x" * 5000},
        ),
    ],
)
def test_values_over_4096_characters_are_refused_or_cut_as_the_mapping_says(doc, record):
    with pytest.raises(RecordError, match="5000 characters, over mParticle's 4096"):
        compile_mapping(doc).convert({"id": "u", **record}, "r")
    converter = compile_mapping({**doc, "options": TRUNCATE})
    out = converter.convert({"id": "u", **record}, "r")
    assert "x" * 4096 in str(out) and "x" * 4097 not in str(out)
    assert converter.stats.values_truncated == 1


def test_more_than_100_attributes_refuse_the_record_with_the_reason():
    doc = {"identities": ID, "events": [{"name": "E", "attributes": {"mapped": "m"}, "attributes_from": "props"}]}
    converter = compile_mapping(doc)
    props = {f"p{i}": i for i in range(100)}
    with pytest.raises(RecordError, match=r"events\[0\]\.attributes: 101 attributes, mParticle takes at most 100"):
        converter.convert({"id": "u", "m": 1, "props": props}, "r")
    assert len(converter.convert({"id": "u", "props": props}, "r").events[0]["data"]["custom_attributes"]) == 100
    with pytest.raises(RecordError, match=r"events\[0\]\.attributes_from: 150 attributes, mParticle takes at most 100"):
        converter.convert({"id": "u", "props": {f"p{i}": i for i in range(150)}}, "r")

    users = compile_mapping({"identities": ID, "user_attributes": {"plan": "plan"}, "user_attributes_from": "traits"})
    with pytest.raises(RecordError, match="user_attributes: 101 attributes, mParticle takes at most 100"):
        users.convert({"id": "u", "plan": "pro", "traits": {f"t{i}": i for i in range(100)}}, "r")


def test_more_than_100_mapped_attributes_is_a_validation_error():
    doc = {"identities": ID, "user_attributes": {f"a{i}": "x" for i in range(101)}}
    assert "user_attributes: 101 attributes, mParticle takes at most 100" in validate(doc)


def test_user_attribute_lists_are_limited():
    doc = {"identities": ID, "user_attributes": {"tags": "tags"}}
    converter = compile_mapping(doc)
    assert converter.convert({"id": "u", "tags": ["t"] * 1000}, "r").user_attributes["tags"] == ["t"] * 1000
    with pytest.raises(RecordError, match="user_attributes.tags: 1001 entries, over mParticle's 1000"):
        converter.convert({"id": "u", "tags": ["t"] * 1001}, "r")
    with pytest.raises(RecordError, match="user_attributes.tags: a list entry has 513 characters, over 512"):
        converter.convert({"id": "u", "tags": ["t" * 513]}, "r")
    with pytest.raises(RecordError, match="user_attributes.tags: list entries must be text, found an object"):
        converter.convert({"id": "u", "tags": [{"a": 1}]}, "r")
    cutting = compile_mapping({**doc, "options": TRUNCATE})
    assert cutting.convert({"id": "u", "tags": ["t" * 600]}, "r").user_attributes["tags"] == ["t" * 512]
    assert cutting.stats.values_truncated == 1


def test_what_is_refused_or_cut_would_otherwise_be_accepted_by_the_api():
    doc = {"identities": ID, "user_attributes": {"tags": "tags", "bio": "bio"}, "options": TRUNCATE}
    record = compile_mapping(doc).convert({"id": "u", "tags": ["x" * 700] * 200, "bio": "y" * 9000}, "r")
    [batch], _ = group_by_user([record])
    assert validate_batch(batch.to_dict("production", "r")) == []


# ------------------------------------------------------------------------------------------------- warnings


def test_names_built_from_fields_warn_about_the_1000_name_limit_and_say_which_rule():
    doc = {
        "identities": ID,
        "events": [
            {"name": "Purchase"},
            {"name": "{category} Viewed"},
            {"event_type": "screen_view", "screen_name": {"field": "page"}},
        ],
    }
    found = warnings(doc)
    assert len(found) == 2
    assert found[0].startswith(
        "events[1].name: built from field 'category': every distinct value makes a new event name"
    )
    assert "at most 1,000 per workspace" in found[0]
    assert found[1].startswith("events[2].screen_name: built from field 'page'")


def test_names_limited_by_a_condition_do_not_warn_until_they_can_pass_1000():
    few = {"name": "{type} done", "when": {"field": "type", "in": ["buy", "sell"]}}
    assert warnings({"identities": ID, "events": [few]}) == []
    one = {
        "name": {"field": "type"},
        "when": {"all": [{"field": "x", "exists": True}, {"field": "type", "equals": "a"}]},
    }
    assert warnings({"identities": ID, "events": [one]}) == []
    many = {"name": "{type}", "when": {"field": "type", "in": [f"t{i}" for i in range(999)]}}
    found = warnings({"identities": ID, "events": [many, {"name": "A"}, {"name": "B"}]})
    assert found == [
        "events: the rules can produce up to 1,001 distinct event names, over mParticle's 1,000 per workspace "
        "(events with other names are dropped)"
    ]


def test_other_warnings():
    doc = {
        "identities": ID,
        "user_attributes": {"plan": "plan"},
        "user_attributes_from": "traits",
        "events": [
            {"name": "x" * 300, "attributes": {"y" * 300: "y"}, "attributes_from": "props"},
            {"event_type": "commerce_event", "product_action": {"action": "purchase", "currency_code": "USD"}},
        ],
    }
    found = warnings(doc)
    assert any(w.startswith("events[0].name: longer than 256 characters; it will be cut") for w in found)
    assert any(w.startswith("events[0].attributes.yyy") and "it will be cut" in w for w in found)
    assert any(
        w.startswith("events[0].attributes_from: the number of attributes depends on each record") for w in found
    )
    assert any(w.startswith("events[1].product_action.currency_code: 'USD' is read as a field name") for w in found)
    assert any(w.startswith("user_attributes_from:") and "more than 99 from this field" in w for w in found)
    assert warnings({"identities": "bad"}) == []
