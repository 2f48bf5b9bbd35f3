"""Golden samples: records kept in the mapping with the output they must produce; edits show what changes."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from feeds.mapping import MappingError, check_samples, compare_outputs, compile_mapping, sample_output, validate

ROOT = Path(__file__).resolve().parent.parent

DOC = {
    "record_key": "order_id",
    "identities": {"customer_id": "customer_id", "email": {"field": "email", "transform": ["trim", "lower"]}},
    "user_attributes": {"plan": {"field": "plan", "on_null": "delete"}},
    "events": [
        {
            "name": "Purchase Completed",
            "custom_event_type": "transaction",
            "timestamp": "ordered_at",
            "attributes": {"amount": {"field": "amount", "type": "float"}},
        }
    ],
    "samples": [
        {
            "name": "a purchase",
            "record": {
                "order_id": "o-1",
                "customer_id": "c-1",
                "email": " A@B.COM ",
                "plan": "pro",
                "amount": "19.90",
                "ordered_at": "2026-11-20T10:00:00Z",
            },
            "expect": {
                "identities": {"customer_id": "c-1", "email": "a@b.com"},
                "user_attributes": {"plan": "pro"},
                "events": [
                    {
                        "event_type": "custom_event",
                        "data": {
                            "event_name": "Purchase Completed",
                            "custom_event_type": "transaction",
                            "timestamp_unixtime_ms": 1795168800000,
                            "custom_attributes": {"amount": 19.9},
                        },
                    }
                ],
            },
        },
        {
            "name": "no customer",
            "record": {"order_id": "o-2", "customer_id": "", "email": "", "ordered_at": "2026-11-20"},
            "expect": {"rejected": "no identity"},
        },
    ],
}

FULL_NO_IDENTITY = (
    "no identity: every mapped identity field is missing or empty (customer_id, email); "
    "the record's fields are order_id, customer_id, email, ordered_at"
)


def edited(**changes) -> dict:
    doc = copy.deepcopy(DOC)
    for path, value in changes.items():
        target: Any = doc
        *parents, last = path.split("__")
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        target[last] = value
    return doc


def test_samples_that_match_pass():
    results = check_samples(DOC)
    assert [(r.index, r.name, r.ok) for r in results] == [(0, "a purchase", True), (1, "no customer", True)]
    assert str(results[0]) == "samples[0] (a purchase): as expected"
    assert results[1].rejected.startswith("no identity")


def test_a_change_in_output_is_shown_field_by_field():
    doc = edited(events__0__name="Order Completed")
    doc["events"][0]["attributes"]["currency"] = {"value": "EUR"}
    doc["user_attributes"]["plan"] = {"field": "plan", "transform": "upper"}
    [first, second] = check_samples(doc)
    assert not first.ok and second.ok
    assert first.differences == [
        'user_attributes.plan: expected "pro", got "PRO"',
        'events[0].data.event_name: expected "Purchase Completed", got "Order Completed"',
        'events[0].data.custom_attributes.currency: not expected, got "EUR"',
    ]
    assert first.output["events"][0]["data"]["event_name"] == "Order Completed"
    assert "source_message_id" not in first.output["events"][0]["data"]


def test_missing_events_and_types_count_as_differences():
    doc = edited(events__0__attributes={"amount": "amount"})
    [first, _] = check_samples(doc)
    assert first.differences == ['events[0].data.custom_attributes.amount: expected 19.9, got "19.90"']
    doc = edited(events=[])
    [first, _] = check_samples(doc)
    assert first.differences[0].startswith('events[0]: missing (expected {"event_type":"custom_event"')


def test_numbers_compare_as_json_numbers():
    doc = copy.deepcopy(DOC)
    doc["samples"][0]["expect"]["events"][0]["data"]["timestamp_unixtime_ms"] = 1795168800000.0
    assert check_samples(doc)[0].ok
    doc["samples"][0]["expect"]["user_attributes"] = {"plan": True}
    assert check_samples(doc)[0].differences == ['user_attributes.plan: expected true, got "pro"']


def test_refusals_are_expected_by_part_of_their_reason():
    doc = edited(samples__1__expect={"rejected": "NO IDENTITY"})
    assert check_samples(doc)[1].ok
    doc = edited(samples__1__expect={"rejected": "bad date"})
    assert check_samples(doc)[1].differences == [
        f"refused for another reason: expected 'bad date', got {FULL_NO_IDENTITY!r}"
    ]
    doc = edited(samples__0__expect={"rejected": "something"})
    assert check_samples(doc)[0].differences == [
        "expected the record to be refused ('something'), but it was converted"
    ]
    doc = edited(samples__1__expect={"identities": {"customer_id": ""}})
    assert check_samples(doc)[1].differences == [f"refused: {FULL_NO_IDENTITY}"]


def test_a_sample_mismatch_is_not_a_validation_error_but_a_malformed_sample_is():
    assert validate(edited(events__0__name="Other")) == []
    assert validate(edited(samples={"record": {}})) == ['samples: must be a list of {"record": {...}, "expect": {...}}']
    errors = validate(edited(samples=[{"record": [], "expect": {"identity": {}, "rejected": 1}}]))
    assert errors == [
        "samples[0].record: must be the source record, an object",
        "samples[0].expect: unknown keys ['identity'] (allowed: ['deleted_user_attributes', 'device_info', 'events', "
        "'identities', 'ip', 'mp_deviceid', 'mpid', 'partner_identities', 'rejected', 'user_attributes'])",
        "samples[0].expect.rejected: must be (part of) the reason, as text",
        "samples[0].expect: a rejected sample expects nothing else",
    ]
    with pytest.raises(MappingError):
        check_samples({"identities": {}})


def test_the_current_output_can_be_recorded_as_expected():
    record = compile_mapping(DOC).convert({"customer_id": "c-9", "plan": None, "ordered_at": 1795168800}, "x")
    expect = sample_output(record)
    assert expect == {
        "identities": {"customer_id": "c-9"},
        "deleted_user_attributes": ["plan"],
        "events": [
            {
                "event_type": "custom_event",
                "data": {
                    "event_name": "Purchase Completed",
                    "custom_event_type": "transaction",
                    "timestamp_unixtime_ms": 1795168800000,
                },
            }
        ],
    }
    doc = copy.deepcopy(DOC)
    doc["samples"].append({"record": {"customer_id": "c-9", "plan": None, "ordered_at": 1795168800}, "expect": expect})
    assert validate(doc) == []
    assert all(r.ok for r in check_samples(doc))
    assert json.loads(json.dumps(expect)) == expect


def test_an_edit_shows_what_it_changes_on_the_old_samples():
    assert compare_outputs(DOC, copy.deepcopy(DOC)) == []
    new = copy.deepcopy(DOC)
    new["identities"]["email"] = "email"
    new["events"][0]["custom_event_type"] = "other"
    [change] = compare_outputs(DOC, new)
    assert (change.index, change.name) == (0, "a purchase")
    assert change.differences == [
        'identities.email: "a@b.com" → " A@B.COM "',
        'events[0].data.custom_event_type: "transaction" → "other"',
    ]
    assert str(change) == (
        'samples[0] (a purchase): identities.email: "a@b.com" → " A@B.COM "; '
        'events[0].data.custom_event_type: "transaction" → "other"'
    )
    assert change.before["identities"]["email"] == "a@b.com" and change.after["identities"]["email"] == " A@B.COM "


def test_an_edit_that_refuses_or_accepts_a_record_says_so():
    new = edited(events__0__attributes={"amount": {"field": "amount", "type": "int"}})
    [change] = compare_outputs(DOC, new)
    assert change.differences == ["now refused: events[0].attributes.amount: '19.90' is not a whole number"]
    assert change.after == {"rejected": "events[0].attributes.amount: '19.90' is not a whole number"}
    new = edited(identities={"customer_id": "customer_id", "other": {"value": "partner"}})
    changes = compare_outputs(DOC, new)
    assert [c.index for c in changes] == [0, 1]
    assert changes[0].differences == ['identities.email: "a@b.com" → absent', 'identities.other: absent → "partner"']
    assert changes[1].differences[0] == f"no longer refused (was: {FULL_NO_IDENTITY})"


def test_the_demo_mapping_is_valid_and_its_samples_pass():
    doc = json.loads((ROOT / "demo" / "mapping.json").read_text())
    assert validate(doc) == []
    results = check_samples(doc)
    assert results and all(r.ok for r in results), [str(r) for r in results]
