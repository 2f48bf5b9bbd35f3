"""Mapping rules: identities, user attributes and deletions, events of every kind, conditions, commerce."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from feeds.mapping import MappingError, RecordError, check_samples, compile_mapping, validate
from feeds.mapping.events import id_maker
from feeds.mparticle import schema
from feeds.mparticle.batch import deterministic_id, group_by_user
from sandbox.checks import validate_batch

ID = {"customer_id": "id"}


def convert(doc: dict, record: dict, ref: str = "f.csv:2"):
    return compile_mapping(doc).convert(record, ref)


def accepted(user_record) -> dict:
    """The batch the record makes, checked by the sandbox's validation of what the Events API accepts."""
    [batch], refused = group_by_user([user_record])
    assert refused == []
    body = batch.to_dict("production", "req-1")
    assert validate_batch(body) == []
    return body


def events_of(doc: dict, record: dict) -> list[dict]:
    return [e["data"] for e in accepted(convert(doc, record))["events"]]


def test_event_ids_are_uuid5_as_before():
    make = id_maker("7:0")
    for ref in ("r1", "orders.csv:12", "é€", "x" * 500):
        assert make(ref) == deterministic_id("7:0", ref)


# ----------------------------------------------------------------------------------------------- identities


def test_all_22_identity_keys_reach_the_batch():
    doc = {"identities": {key: f"col_{key}" for key in schema.IDENTITY_KEYS}}
    body = accepted(convert(doc, {f"col_{key}": f"v-{key}" for key in schema.IDENTITY_KEYS}))
    assert len(body["user_identities"]) == 22
    assert body["user_identities"] == {key: f"v-{key}" for key in schema.IDENTITY_KEYS}


def test_identities_are_text():
    doc = {"identities": {"customer_id": "id", "other": "n", "mobile_number": "phone"}}
    record = convert(doc, {"id": 42, "n": 7.0, "phone": "+33 6 12"})
    assert record.identities == {"customer_id": "42", "other": "7", "mobile_number": "+33 6 12"}
    with pytest.raises(RecordError, match="identities.customer_id: must be text, got a boolean"):
        convert(doc, {"id": True})
    with pytest.raises(RecordError, match="identities.customer_id: must be text, got a list"):
        convert(doc, {"id": ["a"]})


def test_a_record_with_an_mpid_and_identities_carries_both():
    body = accepted(convert({"identities": ID, "mpid": "mpid"}, {"id": "u", "mpid": "9007199254740993"}))
    assert body["mpid"] == 9007199254740993 and body["user_identities"] == {"customer_id": "u"}


# ------------------------------------------------------------------------------------------ user attributes


def test_user_attributes_scalars_lists_and_reserved_names():
    doc = {
        "identities": ID,
        "user_attributes": {
            "$firstname": "first",
            "$age": {"field": "age", "type": "int"},
            "$country": {"value": "FR"},
            "vip": {"field": "vip", "type": "bool"},
            "score": {"field": "score", "type": "float"},
            "tags": "tags",
            "colours": {"field": "colours", "split": ","},
            "note": "note",
        },
    }
    body = accepted(
        convert(
            doc,
            {
                "id": "u",
                "first": "Ada",
                "age": "36",
                "vip": "1",
                "score": "9.5",
                "tags": ["a", 2],
                "colours": "red, blue,,",
                "note": None,
            },
        )
    )
    assert body["user_attributes"] == {
        "$firstname": "Ada",
        "$age": 36,
        "$country": "FR",
        "vip": True,
        "score": 9.5,
        "tags": ["a", "2"],
        "colours": ["red", "blue"],
        "note": None,
    }


def test_on_null_says_what_a_null_or_empty_value_does():
    doc = {
        "identities": ID,
        "user_attributes": {
            "sent": "a",
            "omitted": {"field": "b", "on_null": "omit"},
            "deleted": {"field": "c", "on_null": "delete"},
            "deleted_too": {"field": "d", "on_null": "delete"},
            "untouched": {"field": "absent", "on_null": "delete"},
        },
    }
    body = accepted(convert(doc, {"id": "u", "a": None, "b": None, "c": None, "d": ""}))
    assert body["user_attributes"] == {"sent": None}
    assert body["deleted_user_attributes"] == ["deleted", "deleted_too"]
    record = convert(doc, {"id": "u", "c": "kept"})
    assert record.user_attributes == {"deleted": "kept"} and record.deleted_user_attributes == []


def test_on_null_delete_after_trimming_deletes_blank_text():
    doc = {"identities": ID, "user_attributes": {"plan": {"field": "plan", "transform": "trim", "on_null": "delete"}}}
    assert convert(doc, {"id": "u", "plan": "  "}).deleted_user_attributes == ["plan"]


def test_user_attributes_from_an_object_in_the_record():
    doc = {
        "identities": ID,
        "user_attributes": {"plan": "plan"},
        "user_attributes_from": {"field": "traits", "on_null": "delete"},
    }
    body = accepted(
        convert(
            doc, {"id": "u", "plan": "pro", "traits": {"plan": "free", "city": "Lyon", "old": None, "$zip": "69001"}}
        )
    )
    assert body["user_attributes"] == {"plan": "pro", "city": "Lyon", "$zip": "69001"}  # mapped names win
    assert body["deleted_user_attributes"] == ["old"]
    # A CSV column holding JSON works too.
    assert convert(doc, {"id": "u", "traits": '{"city": "Nice"}'}).user_attributes == {"city": "Nice"}
    with pytest.raises(RecordError, match="user_attributes_from: '\\$favourite': names starting with \\$ are reserved"):
        convert(doc, {"id": "u", "traits": {"$favourite": "x"}})
    with pytest.raises(RecordError, match="user_attributes_from: expected an object, got a list"):
        convert(doc, {"id": "u", "traits": [1]})
    with pytest.raises(RecordError, match="user_attributes_from: '{not json' is not JSON"):
        convert(doc, {"id": "u", "traits": "{not json"})


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"field": "p", "on_null": "drop"}, "user_attributes.p.on_null: must be one of send, omit, delete"),
        ({"field": "p", "on_null": "delete", "required": True}, "never deleted"),
        ({"field": "p", "on_null": "delete", "default": "x"}, "never deleted"),
        ({"field": "p", "split": ""}, "user_attributes.p.split: must be the separator"),
        ({"field": "p", "split": ",", "type": "int"}, "gives a list of texts, so it takes no 'type'"),
    ],
)
def test_bad_user_attribute_options_are_named(spec, message):
    errors = validate({"identities": ID, "user_attributes": {"p": spec}})
    assert any(message in e for e in errors), errors


def test_on_null_is_only_for_user_attributes():
    errors = validate(
        {"identities": ID, "events": [{"name": "E", "attributes": {"a": {"field": "a", "on_null": "omit"}}}]}
    )
    assert any("unknown keys ['on_null']" in e and "for user attributes" in e for e in errors), errors


# ------------------------------------------------------------------------------------------- custom events


@pytest.mark.parametrize("event_type", schema.CUSTOM_EVENT_TYPES)
def test_custom_events_of_every_type(event_type):
    doc = {"identities": ID, "events": [{"name": "Something", "custom_event_type": event_type}]}
    [data] = events_of(doc, {"id": "u"})
    assert (data["event_name"], data["custom_event_type"]) == ("Something", event_type)


def test_the_custom_event_type_can_come_from_a_field():
    doc = {"identities": ID, "events": [{"name": "E", "custom_event_type": {"field": "kind", "transform": "lower"}}]}
    assert events_of(doc, {"id": "u", "kind": "Search"})[0]["custom_event_type"] == "search"
    with pytest.raises(RecordError, match=r"events\[0\]\.custom_event_type: 'shopping' is not a custom event type"):
        convert(doc, {"id": "u", "kind": "shopping"})
    with pytest.raises(RecordError, match=r"events\[0\]\.custom_event_type: the custom event type is missing"):
        convert(doc, {"id": "u"})
    errors = validate({"identities": ID, "events": [{"name": "E", "custom_event_type": {"value": "shopping"}}]})
    assert errors == [
        "events[0].custom_event_type.value: 'shopping' is not one of navigation, location, search, "
        "transaction, user_content, user_preference, social, media, attribution, other"
    ]


def test_event_names_built_from_fields():
    doc = {
        "identities": ID,
        "events": [
            {"name": "{category} Viewed"},
            {"name": "{user.plan}: {{level {level}}}"},
            {"name": {"field": "action", "transform": "trim"}},
        ],
    }
    data = events_of(
        doc, {"id": "u", "category": "Shoes", "user": {"plan": "pro"}, "level": 3.0, "action": " Signed Up "}
    )
    assert [d["event_name"] for d in data] == ["Shoes Viewed", "pro: {level 3}", "Signed Up"]
    with pytest.raises(
        RecordError,
        match=r"events\[0\]\.name: field 'category' is missing or empty \(needed for '\{category\} Viewed'\)",
    ):
        convert(doc, {"id": "u", "user": {"plan": "pro"}, "level": 1, "action": "x"})
    with pytest.raises(RecordError, match=r"events\[0\]\.name: field 'category': expected text, got an object"):
        convert(doc, {"id": "u", "category": {"a": 1}})


def test_a_blank_event_name_is_refused():
    doc = {"identities": ID, "events": [{"name": "{a}{b}"}]}
    with pytest.raises(RecordError, match=r"events\[0\]\.name: the name is empty"):
        convert(doc, {"id": "u", "a": " ", "b": "  "})


@pytest.mark.parametrize(
    "name, message",
    [
        ("{category", "expected '}' before end of string"),
        ("{} Viewed", "a placeholder {} needs a field name"),
        ("{category!r} Viewed", "only plain {field} placeholders"),
        ("{price:.2f}", "only plain {field} placeholders"),
        ("  ", "events[0].name: must not be empty"),
    ],
)
def test_bad_name_templates_are_named(name, message):
    errors = validate({"identities": ID, "events": [{"name": name}]})
    assert any(e.startswith("events[0].name") and message in e for e in errors), errors


def test_screen_views():
    doc = {
        "identities": ID,
        "events": [
            {"event_type": "screen_view", "screen_name": "Home", "attributes": {"from": "ref"}},
            {"event_type": "screen_view", "screen_name": "{page} page", "timestamp": "ts"},
        ],
    }
    home, page = events_of(doc, {"id": "u", "ref": "mail", "page": "Cart", "ts": 1795168800})
    assert home["screen_name"] == "Home" and home["custom_attributes"] == {"from": "mail"}
    assert page["screen_name"] == "Cart page" and page["timestamp_unixtime_ms"] == 1795168800000
    errors = validate({"identities": ID, "events": [{"event_type": "screen_view"}]})
    assert any("events[0].screen_name: a screen_name is needed" in e for e in errors), errors


def test_event_attributes_from_an_object_in_the_record():
    doc = {"identities": ID, "events": [{"name": "E", "attributes": {"a": "x"}, "attributes_from": "props"}]}
    [data] = events_of(doc, {"id": "u", "x": "mapped", "props": {"a": "dynamic", "b": 2, "c": None, "d": ""}})
    assert data["custom_attributes"] == {"a": "mapped", "b": 2, "c": None}
    with pytest.raises(RecordError, match=r"events\[0\]\.attributes_from: 'b': must be a single value, got a list"):
        convert(doc, {"id": "u", "props": {"b": [1, 2]}})


# ------------------------------------------------------------------------------------------------ conditions


def test_rules_emit_events_only_when_their_condition_holds():
    doc = {
        "identities": ID,
        "events": [
            {"name": "Purchase", "when": {"field": "type", "equals": "purchase"}},
            {"name": "Browse", "when": {"field": "type", "in": ["view", "click"]}},
            {"name": "Coupon", "when": {"field": "coupon", "exists": True}},
            {"name": "No coupon", "when": {"not": {"field": "coupon", "exists": True}}},
            {
                "name": "Big",
                "when": {"all": [{"field": "type", "equals": "purchase"}, {"field": "amount", "gte": 100}]},
            },
            {"name": "Odd", "when": {"any": [{"field": "amount", "lt": 0}, {"field": "amount", "gt": 1000}]}},
            {"name": "Flagged", "when": {"field": "flag", "equals": True}},
            {"name": "Three", "when": {"field": "n", "equals": 3}},
            {"name": "Band", "when": {"field": "amount", "gt": 10, "lte": 100}},
        ],
    }

    def names(record):
        return [e["event_name"] for e in events_of(doc, {"id": "u", **record})]

    assert names({"type": "purchase", "amount": "150"}) == ["Purchase", "No coupon", "Big"]
    assert names({"type": "view", "coupon": "X1", "amount": "50"}) == ["Browse", "Coupon", "Band"]
    assert names({"type": "click", "coupon": "", "amount": 5000}) == ["Browse", "No coupon", "Odd"]
    assert names({"amount": "lots", "flag": "yes", "n": "3.0"}) == ["No coupon", "Flagged", "Three"]
    assert names({"flag": False, "n": 3, "amount": 100}) == ["No coupon", "Three", "Band"]


def test_several_events_from_one_record_have_distinct_stable_ids():
    doc = {
        "record_key": "id",
        "identities": ID,
        "events": [{"name": "A"}, {"name": "B"}, {"event_type": "screen_view", "screen_name": "S"}],
    }
    first = [e["source_message_id"] for e in events_of(doc, {"id": "r1"})]
    again = [e["source_message_id"] for e in events_of(doc, {"id": "r1"})]
    assert first == again and len(set(first)) == 3


@pytest.mark.parametrize(
    "when, message",
    [
        ({"field": "t", "equal": "x"}, "events[0].when: unknown keys ['equal']"),
        ({"field": "t"}, "events[0].when: give a test: equals, in, exists, gt, gte, lt, lte"),
        ({"equals": "x"}, "events[0].when.field: name the field the condition reads"),
        ({"field": "t", "equals": None}, "events[0].when.equals: must be text, a number or true/false"),
        ({"field": "t", "in": []}, "events[0].when.in: must be a non-empty list"),
        ({"field": "t", "in": [["x"]]}, "events[0].when.in: must be a non-empty list"),
        ({"field": "t", "exists": "yes"}, "events[0].when.exists: must be true or false"),
        ({"field": "t", "gt": "5"}, "events[0].when.gt: must be a number"),
        ({"all": {"field": "t", "exists": True}}, "events[0].when.all: must be a non-empty list of conditions"),
        ({"any": [{"field": "t", "exists": True}, "x"]}, "events[0].when.any[1]: a condition is an object"),
        ({"not": {"field": "t", "lt": True}}, "events[0].when.not.lt: must be a number"),
        ({"not": {"field": "t", "exists": True}, "field": "t"}, "'not' must be alone in its object"),
        ("type == 'x'", "events[0].when: a condition is an object"),
    ],
)
def test_bad_conditions_are_named(when, message):
    errors = validate({"identities": ID, "events": [{"name": "E", "when": when}]})
    assert any(message in e for e in errors), errors


def test_conditions_nested_too_deep_are_refused():
    when: dict = {"field": "t", "exists": True}
    for _ in range(40):
        when = {"not": when}
    errors = validate({"identities": ID, "events": [{"name": "E", "when": when}]})
    assert any("conditions nested more than 16 deep" in e for e in errors), errors


# --------------------------------------------------------------------------------------------------- commerce

PURCHASE = {
    "event_type": "commerce_event",
    "timestamp": "ts",
    "product_action": {
        "action": "purchase",
        "transaction_id": "order_id",
        "total_amount": "total",
        "tax_amount": {"field": "tax", "type": "float"},
        "shipping_amount": "shipping",
        "coupon_code": "coupon",
        "currency_code": {"value": "EUR"},
        "products": {
            "from": "items",
            "id": "sku",
            "name": "title",
            "brand": "brand",
            "category": "cat",
            "variant": "size",
            "position": "pos",
            "coupon_code": "code",
            "price": "price",
            "quantity": "qty",
            "attributes": {"gift": {"field": "gift", "type": "bool"}},
        },
    },
    "attributes": {"channel": "channel"},
}


def test_a_purchase_with_products_from_a_nested_list():
    record = {
        "id": "u",
        "order_id": 1001,
        "ts": "2026-11-20T10:00:00Z",
        "total": "59.90",
        "tax": "9.98",
        "shipping": 0,
        "coupon": "",
        "channel": "web",
        "items": [
            {
                "sku": "A-1",
                "title": "Boots",
                "brand": "Acme",
                "cat": "Shoes",
                "size": "42",
                "pos": "1",
                "code": "X",
                "price": "49.90",
                "qty": "1",
                "gift": "no",
            },
            {"sku": 7, "price": 10, "qty": 1.0},
        ],
    }
    [data] = events_of({"identities": ID, "events": [PURCHASE]}, record)
    assert data == {
        "product_action": {
            "action": "purchase",
            "transaction_id": "1001",
            "total_amount": 59.9,
            "tax_amount": 9.98,
            "shipping_amount": 0,
            "products": [
                {
                    "id": "A-1",
                    "name": "Boots",
                    "brand": "Acme",
                    "category": "Shoes",
                    "variant": "42",
                    "position": 1,
                    "price": 49.9,
                    "quantity": 1,
                    "coupon_code": "X",
                    "custom_attributes": {"gift": False},
                },
                {"id": "7", "price": 10, "quantity": 1.0},
            ],
        },
        "currency_code": "EUR",
        "timestamp_unixtime_ms": 1795168800000,
        "source_message_id": data["source_message_id"],
        "custom_attributes": {"channel": "web"},
    }


def test_products_from_json_text_in_a_csv_column():
    record = {"id": "u", "ts": "2026-11-20", "items": '[{"sku": "A", "price": 5}]'}
    [data] = events_of({"identities": ID, "events": [PURCHASE]}, record)
    assert data["product_action"]["products"] == [{"id": "A", "price": 5}]


@pytest.mark.parametrize(
    "items, message",
    [
        ({"sku": "A"}, "products.from: field 'items': expected a list, got an object"),
        ("[oops", "products.from: field 'items': '[oops' is not JSON"),
        (["A"], "products: item 1 of 'items' is text, not an object"),
        (
            [{"sku": "A"}, {"price": 1}],
            "products: a product needs an id or a name, and both are missing (item 2 of 'items')",
        ),
        ([{"sku": "A", "price": "cheap"}], "products.price: 'cheap' is not a number (item 1 of 'items')"),
        ([{}], "item 1 of 'items' has none of the mapped product fields"),
    ],
)
def test_bad_products_refuse_the_record_and_say_which(items, message):
    with pytest.raises(RecordError) as e:
        convert({"identities": ID, "events": [PURCHASE]}, {"id": "u", "ts": "2026-11-20", "items": items})
    assert message in str(e.value) and str(e.value).startswith("events[0].product_action"), str(e.value)


def test_products_from_flat_columns_skip_empty_slots():
    doc = {
        "identities": ID,
        "events": [
            {
                "event_type": "commerce_event",
                "product_action": {
                    "action": {"field": "action", "transform": "lower"},
                    "products": [
                        {"id": "sku_1", "price": "price_1", "quantity": "qty_1"},
                        {"id": "sku_2", "price": "price_2", "quantity": "qty_2"},
                    ],
                },
            }
        ],
    }
    [data] = events_of(
        doc,
        {
            "id": "u",
            "action": "Add_To_Cart",
            "sku_1": "A",
            "price_1": "2.50",
            "qty_1": "3",
            "sku_2": "",
            "price_2": "",
            "qty_2": "",
        },
    )
    assert data["product_action"] == {"action": "add_to_cart", "products": [{"id": "A", "price": 2.5, "quantity": 3}]}
    with pytest.raises(RecordError, match=r"products\[1\]: a product needs an id or a name"):
        convert(doc, {"id": "u", "action": "refund", "sku_1": "A", "price_2": "3"})
    with pytest.raises(
        RecordError, match=r"events\[0\]\.product_action\.action: 'buy' is not a product action \(add_to_cart,"
    ):
        convert(doc, {"id": "u", "action": "buy"})


@pytest.mark.parametrize("action", schema.PRODUCT_ACTIONS)
def test_every_product_action_is_accepted(action):
    doc = {"identities": ID, "events": [{"event_type": "commerce_event", "product_action": {"action": action}}]}
    assert events_of(doc, {"id": "u"})[0]["product_action"] == {"action": action}


@pytest.mark.parametrize(
    "rule, message",
    [
        ({"event_type": "commerce_event"}, "events[0].product_action: a commerce_event needs a product_action object"),
        (
            {"event_type": "commerce_event", "product_action": {}},
            "events[0].product_action.action: needed, one of add_to_cart",
        ),
        (
            {"event_type": "commerce_event", "product_action": {"action": "buy"}},
            "events[0].product_action.action: 'buy' is not one of add_to_cart",
        ),
        (
            {"event_type": "commerce_event", "product_action": {"action": "refund", "total": "t"}},
            "events[0].product_action: unknown keys ['total']",
        ),
        (
            {"event_type": "commerce_event", "product_action": {"action": "refund", "products": {"id": "sku"}}},
            "events[0].product_action.products.from: name the field holding the list of products",
        ),
        (
            {"event_type": "commerce_event", "product_action": {"action": "refund", "products": [{"price": "p"}]}},
            "events[0].product_action.products[0]: a product needs an 'id' or a 'name'",
        ),
        (
            {
                "event_type": "commerce_event",
                "product_action": {"action": "refund", "products": [{"id": "s", "sku": "s"}]},
            },
            "events[0].product_action.products[0]: unknown keys ['sku']",
        ),
        (
            {"event_type": "commerce_event", "name": "Bought", "product_action": {"action": "purchase"}},
            "events[0].name: not used by a commerce_event",
        ),
        ({"name": "E", "product_action": {"action": "purchase"}}, "events[0].product_action: only for"),
    ],
)
def test_bad_commerce_rules_are_named(rule, message):
    errors = validate({"identities": ID, "events": [rule]})
    assert any(message in e for e in errors), errors
    with pytest.raises(MappingError):
        compile_mapping({"identities": ID, "events": [rule]})


def test_the_readme_examples_are_valid_and_their_samples_pass():
    """Every JSON example in the README's Mappings section is valid (fragments with an identity added)."""
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = text.split("## Mappings", 1)[1].split("\n## ", 1)[0]
    documents = [json.loads(block) for block in re.findall(r"```json\n(.*?)```", section, re.S)]
    assert len(documents) >= 10
    for doc in documents:
        if "identities" not in doc and "mpid" not in doc:
            doc = {"identities": {"customer_id": "id"}, **doc}
        assert validate(doc) == [], doc
        assert all(result.ok for result in check_samples(doc)), [str(r) for r in check_samples(doc)]
