"""Batch-level fields (device_info, mp_deviceid, partner_identities, ip, context.data_plan) and the commerce
events beside product_action (promotion_action, product_impressions): conversion by both converters, the
mapping's refusals, grouping, the sandbox's checks over real HTTP, and a run through the sandbox."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import orjson
import pytest
import requests
from django.urls import reverse

from feeds import datasheet
from feeds.forms import WorkspaceForm
from feeds.mapping import MappingError, RecordError, check_samples, compile_mapping, validate
from feeds.models import RejectedRecord
from feeds.mparticle.batch import UserRecord, group_by_user, group_set_aside, serialize_batches, set_aside_form
from feeds.mparticle.schema import BULK_PATH, HISTORICAL_PATH
from feeds.pipeline import route
from sandbox.checks import validate_batch
from tests.helpers import SANDBOX_KEY, SANDBOX_SECRET, make_job, make_mapping, make_workspace, run_job

IDFA = "6f1d2c3b-0a4e-4c1e-9b7d-2f0e5a6b7c8d"
GAID = "0b7c1e6a-55d4-4d2b-9c1e-7d7f0b2a5e11"
DEVICE = "4f0b7c1e-6a55-4d2b-9c1e-7d7f0b2a5e11"

MAPPING = {
    "record_key": "id",
    "identities": {"customer_id": "user"},
    "device_info": {
        "ios_advertising_id": "idfa",
        "android_advertising_id": "gaid",
        "ios_idfv": "idfv",
        "push_token": "token",
        "roku_advertising_id": "roku",
        "android_uuid": "android_id",
    },
    "mp_deviceid": "device",
    "partner_identities": {"acme_user_id": "acme.id"},
    "ip": "ip",
    "events": [
        {
            "event_type": "commerce_event",
            "when": {"field": "promos", "exists": True},
            "promotion_action": {
                "action": {"field": "promo_action"},
                "promotions": {"from": "promos", "id": "pid", "name": "title", "creative": "img", "position": "slot"},
            },
        },
        {
            "event_type": "commerce_event",
            "when": {"field": "results", "exists": True},
            "product_impressions": [
                {"product_impression_list": "Search results", "products": {"from": "results", "id": "sku"}}
            ],
        },
    ],
}

RECORD = {
    "id": "r1",
    "user": "u1",
    "idfa": IDFA,
    "gaid": GAID.upper(),
    "token": "apns-token-1",
    "android_id": 12345,
    "device": DEVICE,
    "acme": {"id": 77},
    "ip": "203.0.113.9",
    "promo_action": "click",
    "promos": [{"pid": "P1", "title": "Summer", "img": "banner.png", "slot": 1}],
    "results": [{"sku": "A-1"}, {"sku": "B-2"}],
}


@pytest.fixture(params=[True, False], ids=["generated", "closures"])
def codegen(request):
    return request.param


def convert(record: dict, doc: dict = MAPPING, codegen: bool = True, **kwargs) -> UserRecord:
    return compile_mapping(doc, codegen=codegen, **kwargs).convert(record, "ref")


# ------------------------------------------------------------------------------------------------ conversion


def test_each_batch_field_is_converted_as_mparticle_names_it(codegen):
    record = convert(RECORD, codegen=codegen)
    assert record.batch_fields == {
        "device_info": {
            "ios_advertising_id": IDFA,
            "android_advertising_id": GAID.upper(),  # the schema's pattern takes either case
            "push_token": "apns-token-1",
            "android_uuid": "12345",
        },
        "mp_deviceid": DEVICE,
        "ip": "203.0.113.9",
        "partner_identities": {"acme_user_id": "77"},
    }


def test_promotions_and_impressions_are_converted(codegen):
    promotion, impressions = (e["data"] for e in convert(RECORD, codegen=codegen).events)
    assert promotion["promotion_action"] == {
        "action": "click",
        "promotions": [{"id": "P1", "name": "Summer", "creative": "banner.png", "position": "1"}],
    }
    assert impressions["product_impressions"] == [
        {"product_impression_list": "Search results", "products": [{"id": "A-1"}, {"id": "B-2"}]}
    ]


def test_promotions_from_columns():
    doc = {
        "identities": {"customer_id": "user"},
        "events": [
            {
                "event_type": "commerce_event",
                "promotion_action": {
                    "action": "view",
                    "promotions": [{"id": "promo_1", "name": "name_1"}, {"id": "promo_2"}],
                },
            }
        ],
    }
    [event] = convert({"user": "u", "promo_1": "A", "name_1": "First", "promo_2": ""}, doc).events
    assert event["data"]["promotion_action"] == {"action": "view", "promotions": [{"id": "A", "name": "First"}]}


def test_a_record_without_the_new_fields_has_none(codegen):
    record = convert({"id": "r2", "user": "u2"}, codegen=codegen)
    assert record.batch_fields is None
    assert record.events == []
    plain = convert({"user": "u"}, {"identities": {"customer_id": "user"}}, codegen)
    assert plain.batch_fields is None


def test_ipv6_is_taken(codegen):
    assert convert({**RECORD, "ip": "2001:db8::1"}, codegen=codegen).batch_fields["ip"] == "2001:db8::1"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"idfa": "not-a-uuid"}, "device_info.ios_advertising_id: 'not-a-uuid' is not a UUID"),
        ({"idfv": "6f1d2c3b0a4e4c1e9b7d2f0e5a6b7c8d"}, "device_info.ios_idfv:"),
        ({"roku": "{" + IDFA + "}"}, "device_info.roku_advertising_id:"),
        ({"device": "12345"}, "mp_deviceid: '12345' is not a UUID"),
        ({"ip": "999.1.1.1"}, "ip: '999.1.1.1' is not an IPv4 or IPv6 address"),
        ({"ip": "10.0.0.1/24"}, "ip: '10.0.0.1/24' is not"),
        ({"ip": "fe80::1%eth0"}, "ip: 'fe80::1%eth0' is not"),
        ({"token": {"a": 1}}, "device_info.push_token: expected text, got an object"),
        ({"acme": {"id": [1]}}, "partner_identities.acme_user_id: expected text, got a list"),
        ({"promo_action": "show"}, "'show' is not a promotion action (view, click)"),
        ({"promos": [{"img": "x.png"}]}, "a promotion needs an id or a name"),
        ({"promos": ["P1"]}, "item 1 of 'promos' is text, not an object"),
        ({"results": [{"other": 1}]}, "has none of the mapped product fields"),
        ({"results": []}, "no products were shown"),
    ],
)
def test_bad_values_refuse_the_record_with_the_reason(codegen, change, reason):
    with pytest.raises(RecordError) as caught:
        convert({**RECORD, **change}, codegen=codegen)
    assert reason in str(caught.value)


# ------------------------------------------------------------------------------------------------ data plan


def test_the_data_plan_of_the_mapping_wins_over_the_workspaces():
    doc = {"identities": {"customer_id": "user"}}
    assert compile_mapping(doc).context is None
    workspace_plan = {"plan_id": "ws_plan"}
    assert compile_mapping(doc, data_plan=workspace_plan).context == {"data_plan": {"plan_id": "ws_plan"}}
    own = {**doc, "data_plan": {"plan_id": "web_plan", "plan_version": 3}}
    assert compile_mapping(own, data_plan=workspace_plan).context == {
        "data_plan": {"plan_id": "web_plan", "plan_version": 3}
    }


def test_a_bad_workspace_data_plan_is_refused_at_compile_time():
    with pytest.raises(MappingError, match="the workspace's data plan.plan_id"):
        compile_mapping({"identities": {"customer_id": "user"}}, data_plan={"plan_id": "Web Plan"})


def test_the_context_is_in_every_serialized_batch_of_both_forms():
    records = [
        UserRecord("a", {"customer_id": "1"}, events=[{"event_type": "screen_view", "data": {"screen_name": "Home"}}]),
        UserRecord("b", {"customer_id": "2"}, mpid=5),
    ]
    batches, _ = group_by_user(records)
    context = {"data_plan": {"plan_id": "web_plan", "plan_version": 2}}
    bodies = serialize_batches(batches, "production", ["i-1", "i-2"], context)
    for body, batch in zip(bodies, batches, strict=True):
        data = orjson.loads(body)
        assert data["context"] == context
        assert data == batch.to_dict("production", data["source_request_id"], context)
        assert validate_batch(data) == []
    assert "context" not in orjson.loads(serialize_batches(batches, "production", ["i-1", "i-2"])[0])


# ------------------------------------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"consent_state": {"gdpr": {}}}, "consent_state: mpfeed does not send consent."),
        ({"device_info": {"idfa": "idfa"}}, "device_info.idfa: not a device identity mParticle takes"),
        ({"device_info": {"platform": "os"}}, "device_info.platform: not a device identity"),
        ({"device_info": "idfa"}, "device_info: must be an object"),
        ({"device_info": {"ios_idfv": {"value": "nope"}}}, "device_info.ios_idfv.value: 'nope' is not a UUID"),
        ({"device_info": {"push_token": {"field": "t", "type": "int"}}}, "device_info.push_token.type"),
        ({"mp_deviceid": {"value": "123"}}, "mp_deviceid.value: '123' is not a UUID"),
        ({"mp_deviceid": {"field": "d", "default": 7}}, "mp_deviceid.default: must be text"),
        ({"ip": {"value": "1.2.3"}}, "ip.value: '1.2.3' is not an IPv4 or IPv6 address"),
        ({"ip": ""}, "ip: the field name is empty"),
        ({"partner_identities": ["a"]}, "partner_identities: must be an object"),
        ({"partner_identities": {"": "a"}}, "partner_identities: a name must have 1 to 256 characters"),
        ({"partner_identities": {f"p{i}": "a" for i in range(21)}}, "partner_identities: 21 names, at most 20"),
        ({"data_plan": "web_plan"}, "data_plan: must be an object"),
        ({"data_plan": {"plan_id": "Web Plan"}}, "data_plan.plan_id: must be the data plan's id"),
        ({"data_plan": {"plan_version": 2}}, "data_plan.plan_id"),
        ({"data_plan": {"plan_id": "p", "plan_version": "2"}}, "data_plan.plan_version: must be a whole number"),
        ({"data_plan": {"plan_id": "p", "plan_version": 0}}, "data_plan.plan_version"),
        ({"data_plan": {"plan_id": "p", "version": 1}}, "data_plan: unknown keys ['version']"),
    ],
)
def test_the_mapping_refuses_bad_batch_fields(change, error):
    errors = validate({"identities": {"customer_id": "user"}, **change})
    assert any(error in e for e in errors), errors


def test_consent_state_is_refused_with_its_reason_alone():
    errors = validate({"identities": {"customer_id": "user"}, "consent_state": "consent"})
    assert errors == [
        "consent_state: mpfeed does not send consent. Consent state (GDPR and CCPA purposes) is the client's "
        "legal record of what each user agreed to, with the document, time and place it was given; mParticle "
        "applies it to every output, so it must come from the client's own consent management (its SDKs or its "
        "own API calls), not be copied from a partner's data. Leave it out of the mapping"
    ]


def commerce_rule(**parts) -> dict:
    return {"identities": {"customer_id": "user"}, "events": [{"event_type": "commerce_event", **parts}]}


@pytest.mark.parametrize(
    ("parts", "error"),
    [
        (
            {"product_action": {"action": "purchase"}, "promotion_action": {"action": "view", "promotions": []}},
            "exactly one of product_action, promotion_action or product_impressions (found product_action, "
            "promotion_action)",
        ),
        ({"promotion_action": {"action": "show", "promotions": [{"id": "p"}]}}, "'show' is not one of view, click"),
        ({"promotion_action": {"promotions": [{"id": "p"}]}}, "promotion_action.action: needed"),
        ({"promotion_action": {"action": "view"}}, "promotion_action.promotions: either"),
        ({"promotion_action": {"action": "view", "promotions": [{"creative": "c"}]}}, "needs an 'id' or a 'name'"),
        ({"promotion_action": {"action": "view", "promotions": [{"id": "p", "price": "x"}]}}, "unknown keys ['price']"),
        ({"promotion_action": {"action": "view", "promotions": {"id": "p"}}}, "promotions.from: name the field"),
        ({"product_impressions": []}, "product_impressions: a list of"),
        ({"product_impressions": [{"products": {"from": "r", "id": "s"}}]}, "product_impression_list: needed"),
        ({"product_impressions": [{"product_impression_list": "L"}]}, "products: needed"),
        ({"product_impressions": [{"product_impression_list": "L", "products": {"id": "s"}}]}, "products.from"),
    ],
)
def test_the_mapping_refuses_bad_commerce_parts(parts, error):
    errors = validate(commerce_rule(**parts))
    assert any(error in e for e in errors), errors


def test_promotions_belong_to_commerce_events_only():
    doc = {"identities": {"customer_id": "u"}, "events": [{"name": "A", "promotion_action": {"action": "view"}}]}
    assert any('promotion_action: only for "event_type": "commerce_event"' in e for e in validate(doc))


def test_the_full_mapping_is_valid():
    assert validate(MAPPING) == []


# -------------------------------------------------------------------------------------------------- samples


def test_samples_expect_batch_fields():
    doc = {
        **MAPPING,
        "samples": [
            {
                "record": {"user": "u", "ip": "10.0.0.1"},
                "expect": {"identities": {"customer_id": "u"}, "ip": "10.0.0.1"},
            },
            {"record": {"user": "u", "ip": "10.0.0.2"}, "expect": {"identities": {"customer_id": "u"}}},
        ],
    }
    good, bad = check_samples(doc)
    assert good.ok
    assert not bad.ok and bad.differences == ['ip: expected null, got "10.0.0.2"']


# ------------------------------------------------------------------------------------------------- grouping


def record(ref: str, ip: str | None, user: str = "u1", **kwargs) -> UserRecord:
    fields = {"ip": ip} if ip else None
    event = {"event_type": "custom_event", "data": {"event_name": ref, "custom_event_type": "other"}}
    return UserRecord(ref, {"customer_id": user}, events=[event], batch_fields=fields, **kwargs)


def test_records_of_one_user_with_other_batch_fields_go_in_other_batches():
    batches, refused = group_by_user(
        [record("a", "10.0.0.1"), record("b", "10.0.0.2"), record("c", "10.0.0.1"), record("d", None)]
    )
    assert refused == []
    assert [b.refs for b in batches] == [["a", "c"], ["b"], ["d"]]
    bodies = [orjson.loads(body) for body in serialize_batches(batches, "development", ["1", "2", "3"])]
    assert [b.get("ip") for b in bodies] == ["10.0.0.1", "10.0.0.2", None]
    assert [len(b["events"]) for b in bodies] == [2, 1, 1]
    assert all(validate_batch(b) == [] for b in bodies)


def test_set_aside_records_keep_their_batch_fields():
    records = [record("a", "10.0.0.1"), record("b", "10.0.0.2"), record("c", None, user="u2")]
    rows = []
    for seq, one in enumerate(records):
        user, data = set_aside_form(one)
        rows.append(("/v2/bulkevents", user, seq, one.ref, data, len(one.events)))
    assert rows[0][4][:1] == b"R" and rows[2][4][:1] == b"W"  # the common case keeps its fast form
    assert rows[0][1] == rows[1][1]  # one user: built together, split by the grouper
    rows.sort(key=lambda r: (r[1], r[2]))
    built = group_set_aside(rows)
    bodies = [orjson.loads(body) for body in serialize_batches(built.batches, "development", ["1", "2", "3"])]
    assert sorted((b["user_identities"]["customer_id"], b.get("ip")) for b in bodies) == [
        ("u1", "10.0.0.1"),
        ("u1", "10.0.0.2"),
        ("u2", None),
    ]


def test_the_historical_part_of_a_record_keeps_its_batch_fields():
    now = 2_000_000_000_000
    old = {"event_type": "custom_event", "data": {"event_name": "a", "custom_event_type": "other"}}
    old["data"]["timestamp_unixtime_ms"] = now - 40 * 86_400_000
    new = {"event_type": "custom_event", "data": {"event_name": "b", "custom_event_type": "other"}}
    new["data"]["timestamp_unixtime_ms"] = now
    parts = route(
        UserRecord("r", {"customer_id": "u"}, events=[old, new], batch_fields={"ip": "10.0.0.1"}), "auto", now
    )
    assert [(path, part.batch_fields) for path, part in parts] == [
        (HISTORICAL_PATH, {"ip": "10.0.0.1"}),
        (BULK_PATH, {"ip": "10.0.0.1"}),
    ]


# ---------------------------------------------------------------------------------------- the sandbox's checks


def post(sandbox, batch: dict) -> requests.Response:
    with requests.Session() as session:
        session.trust_env = False
        return session.post(
            f"{sandbox.url}/v2/events", data=orjson.dumps(batch), auth=(SANDBOX_KEY, SANDBOX_SECRET), timeout=5
        )


def batch_with(**fields) -> dict:
    return {"environment": "development", "user_identities": {"customer_id": "u-1"}, **fields}


def commerce(**data) -> dict:
    return {"event_type": "commerce_event", "data": data}


VALID = [
    {"device_info": {"ios_advertising_id": IDFA, "ios_idfv": IDFA.upper(), "push_token": "t", "android_uuid": "a"}},
    {"device_info": {"android_advertising_id": GAID, "fire_advertising_id": None, "platform": "Android"}},
    {"device_info": {"roku_advertising_id": IDFA, "roku_publisher_id": GAID, "screen_width": 1080, "is_tablet": False}},
    {"mp_deviceid": DEVICE},
    {"partner_identities": {"acme_user_id": "77", "other": 5}},
    {"ip": "203.0.113.9"},
    {"ip": "2001:db8::1"},
    {"context": {"data_plan": {"plan_id": "web_plan", "plan_version": 2}}},
    {"context": {"data_plan": {"plan_id": "web_plan"}}},
    {"events": [commerce(promotion_action={"action": "click", "promotions": [{"id": "P1", "position": "1"}]})]},
    {"events": [commerce(product_impressions=[{"product_impression_list": "L", "products": [{"id": "A"}]}])]},
]


@pytest.mark.parametrize("fields", VALID)
def test_the_sandbox_accepts_valid_batch_fields(sandbox, fields):
    response = post(sandbox, batch_with(**fields))
    assert response.status_code == 202, response.text
    assert sandbox.batches() == [batch_with(**fields)]


INVALID = [
    ({"device_info": "ios"}, "Path 'device_info': value must be an object"),
    ({"device_info": {"ios_advertising_id": "abc"}}, "Path 'device_info.ios_advertising_id': value must be a UUID"),
    ({"device_info": {"android_advertising_id": 5}}, "Path 'device_info.android_advertising_id': value must be a UUID"),
    ({"device_info": {"push_token": ["t"]}}, "Path 'device_info.push_token': value must be a string"),
    ({"device_info": {"idfa": IDFA}}, "Path 'device_info.idfa': is not a known device_info field"),
    ({"device_info": {"platform": "Linux"}}, "Path 'device_info.platform': value is not a platform"),
    ({"device_info": {"screen_width": "1080"}}, "Path 'device_info.screen_width': value must be an integer"),
    ({"device_info": {"is_tablet": 1}}, "Path 'device_info.is_tablet': value must be a boolean"),
    ({"mp_deviceid": "device-1"}, "Path 'mp_deviceid': value must be a UUID"),
    ({"mp_deviceid": 12}, "Path 'mp_deviceid': value must be a UUID"),
    ({"partner_identities": ["a"]}, "Path 'partner_identities': value must be an object"),
    ({"partner_identities": {"a": {"b": 1}}}, "Path 'partner_identities.a': value must be a string"),
    ({"ip": "256.0.0.1"}, "Path 'ip': value must be an IPv4 or IPv6 address"),
    ({"ip": 3232235777}, "Path 'ip': value must be an IPv4 or IPv6 address"),
    ({"ip": "fe80::1%eth0"}, "Path 'ip': value must be an IPv4 or IPv6 address"),
    ({"context": "web_plan"}, "Path 'context': value must be an object"),
    ({"context": {"data_plan": "web_plan"}}, "Path 'context.data_plan': value must be an object"),
    ({"context": {"data_plan": {"plan_version": 2}}}, "Path 'context.data_plan.plan_id': is required"),
    ({"context": {"data_plan": {"plan_id": ""}}}, "Path 'context.data_plan.plan_id': value must be a non-empty"),
    ({"context": {"data_plan": {"plan_id": "p", "plan_version": "2"}}}, "Path 'context.data_plan.plan_version'"),
    ({"context": {"data_plan": {"plan_id": "p", "version": 2}}}, "Path 'context.data_plan.version': is not a known"),
    ({"events": [commerce(promotion_action={"promotions": []})]}, "promotion_action.action': is required"),
    ({"events": [commerce(promotion_action={"action": "buy"})]}, "promotion_action.action': value is not a promotion"),
    ({"events": [commerce(promotion_action={"action": "view", "promotions": {}})]}, "promotions': value must be an"),
    ({"events": [commerce(promotion_action={"action": "view", "promotions": [{"id": 1}]})]}, "promotions[0].id'"),
    ({"events": [commerce(promotion_action={"action": "view", "promotions": [{"price": 1}]})]}, "is not a known promo"),
    (
        {"events": [commerce(promotion_action={"action": "view", "list": "x"})]},
        "promotion_action.list': is not a known",
    ),
    ({"events": [commerce(product_impressions={})]}, "product_impressions': value must be an array"),
    ({"events": [commerce(product_impressions=[{"products": []}])]}, "product_impression_list': is required"),
    ({"events": [commerce(product_impressions=[{"product_impression_list": "L"}])]}, "products': is required"),
    (
        {
            "events": [
                commerce(
                    product_impressions=[
                        {"product_impression_list": "L", "products": [{"custom_attributes": {"a": []}}]}
                    ]
                )
            ]
        },
        "products[0].custom_attributes.a': value must be a scalar",
    ),
]


@pytest.mark.parametrize(("fields", "expected"), INVALID)
def test_the_sandbox_refuses_invalid_batch_fields_naming_them(sandbox, fields, expected):
    response = post(sandbox, batch_with(**fields))
    assert response.status_code == 400
    messages = [e["message"] for e in response.json()["errors"]]
    assert any(expected in m for m in messages), messages
    assert sandbox.kept() == []


def test_what_the_converter_makes_passes_the_sandbox_checks():
    converted = convert(RECORD)
    batches, _ = group_by_user([converted])
    [body] = serialize_batches(batches, "production", ["id-1"], {"data_plan": {"plan_id": "web_plan"}})
    assert validate_batch(orjson.loads(body)) == []


# ----------------------------------------------------------------------------------------------- end to end


@pytest.mark.django_db
def test_a_run_delivers_every_batch_field_through_the_sandbox(sandbox, tmp_path):
    lines = [
        RECORD,
        {**RECORD, "id": "r2", "promos": None, "promo_action": None},  # same user and device: same batch
        {"id": "r3", "user": "u1", "ip": "198.51.100.7", "results": [{"sku": "C-3"}]},  # another device: another
        {"id": "r4", "user": "u2", "idfa": "bad-idfa"},  # refused, with the reason
        {"id": "r5", "user": "u3"},
    ]
    path = tmp_path / "devices.ndjson"
    path.write_bytes(b"\n".join(orjson.dumps(line) for line in lines) + b"\n")
    workspace = make_workspace(sandbox, data_plan_id="ws_plan", data_plan_version=4)
    workspace.save()
    run = run_job(make_job(workspace, path, make_mapping(workspace, MAPPING)))

    assert run.records_read == 5 and run.records_rejected == 1
    [rejected] = RejectedRecord.objects.filter(run=run)
    assert "device_info.ios_advertising_id: 'bad-idfa' is not a UUID" in rejected.reason
    assert sandbox.rejects() == []
    kept = {(b["user_identities"]["customer_id"], b.get("ip")): b for b in sandbox.batches()}
    assert set(kept) == {("u1", "203.0.113.9"), ("u1", "198.51.100.7"), ("u3", None)}
    assert all(b["context"] == {"data_plan": {"plan_id": "ws_plan", "plan_version": 4}} for b in kept.values())
    first = kept["u1", "203.0.113.9"]
    assert first["device_info"]["ios_advertising_id"] == IDFA
    assert first["mp_deviceid"] == DEVICE
    assert first["partner_identities"] == {"acme_user_id": "77"}
    assert [e["data"].get("promotion_action", {}).get("action") for e in first["events"]] == ["click", None, None]
    assert len(first["events"]) == 3  # r1's promotion and impressions, r2's impressions
    other = kept["u1", "198.51.100.7"]
    assert "device_info" not in other and "mp_deviceid" not in other
    assert other["events"][0]["data"]["product_impressions"][0]["products"] == [{"id": "C-3"}]
    assert "device_info" not in kept["u3", None] and "events" not in kept["u3", None]


@pytest.mark.django_db
def test_the_mappings_data_plan_is_sent_over_the_workspaces(sandbox, tmp_path):
    path = tmp_path / "one.ndjson"
    path.write_bytes(orjson.dumps({"user": "u1"}) + b"\n")
    workspace = make_workspace(sandbox, data_plan_id="ws_plan")
    workspace.save()
    doc = {"identities": {"customer_id": "user"}, "data_plan": {"plan_id": "mapping_plan", "plan_version": 1}}
    run_job(make_job(workspace, path, make_mapping(workspace, doc)))
    [batch] = sandbox.batches()
    assert batch["context"] == {"data_plan": {"plan_id": "mapping_plan", "plan_version": 1}}


# ------------------------------------------------------------------------------------------ sheet and settings


def test_the_data_sheet_shows_the_batch_fields_and_the_data_plan():
    doc = {**MAPPING, "samples": [{"record": RECORD, "expect": {}}]}
    sheet = datasheet.build(doc, data_plan={"plan_id": "ws_plan", "plan_version": 4})
    lines = {line.name: line for line in sheet.batch_fields}
    assert lines["device_info.ios_advertising_id"].type == "string (UUID)"
    assert IDFA in lines["device_info.ios_advertising_id"].example
    assert {"mp_deviceid", "ip", "partner_identities.acme_user_id", "device_info.push_token"} <= set(lines)
    assert sheet.data_plan == "ws_plan, version 4 (set by the workspace; sent as context.data_plan)"
    promotion = sheet.events[0]
    assert [line.name for line in promotion.fields][:2] == [
        "promotion_action.action",
        "promotion_action.promotions[].id",
    ]
    assert [line.name for line in sheet.events[1].products] == ["products[].id"]
    text = datasheet.to_markdown(sheet, title="Feed")
    assert "## Device and batch fields" in text and "Data plan: `ws_plan, version 4 (set by the workspace" in text
    own = datasheet.build({**doc, "data_plan": {"plan_id": "web_plan"}}, data_plan={"plan_id": "ws_plan"})
    assert own.data_plan == "web_plan, active version (set by the mapping; sent as context.data_plan)"


@pytest.mark.django_db
def test_the_workspace_form_takes_a_data_plan_and_refuses_a_bad_one():
    data = {"name": "Acme", "pod": "partner", "environment": "development", "rate_limit": 270}
    form = WorkspaceForm({**data, "data_plan_id": "web_plan", "data_plan_version": "2"})
    assert form.is_valid(), form.errors
    workspace = form.save()
    assert workspace.data_plan == {"plan_id": "web_plan", "plan_version": 2}
    bad = WorkspaceForm({**data, "name": "Bolt", "data_plan_id": "Web Plan", "data_plan_version": "0"})
    assert not bad.is_valid()
    assert "lowercase letters" in str(bad.errors["data_plan_id"])
    assert "data_plan_version" in bad.errors


@pytest.mark.django_db
def test_the_data_sheet_page_shows_the_workspaces_data_plan(staff):
    workspace = make_workspace(data_plan_id="ws_plan", data_plan_version=4)
    workspace.save()
    mapping = make_mapping(workspace, {**MAPPING, "samples": [{"record": RECORD, "expect": {}}]}, accept_changes=True)
    assert mapping.rules["samples"][0]["expect"]["ip"] == "203.0.113.9"  # accepted outputs hold the batch fields
    response = staff.get(reverse("feeds:datasheet", args=[workspace.slug, mapping.pk]))
    page = response.content.decode()
    assert response.status_code == 200
    assert "Device and batch fields" in page and "device_info.ios_advertising_id" in page
    assert "ws_plan, version 4 (set by the workspace" in page
    markdown = staff.get(reverse("feeds:datasheet_md", args=[workspace.slug, mapping.pk])).content.decode()
    assert "`ws_plan, version 4 (set by the workspace; sent as context.data_plan)`" in markdown


# ---------------------------------------------------------------------------------------------------- editor

EDITOR_CHECK = r"""
const m = require(process.argv[1]);
const assert = require("assert");
const doc = JSON.parse(process.argv[2]);
const state = m.stateFromDoc(doc);
// The batch fields are kept in the JSON (edited under "Advanced"), the rows give the document back as it was.
assert.strictEqual(JSON.stringify(m.docFromState(doc, state.rows, state.blocks)), JSON.stringify(doc));
// A promotion event whose block is edited stays a promotion event: no product action is added to it.
state.blocks[0].when = undefined;
const edited = m.docFromState(doc, state.rows, state.blocks, [{ when: { field: "promo", exists: true } }]);
console.log(JSON.stringify({ jsonOnly: state.jsonOnly, events: edited.events }));
"""


def test_the_editor_keeps_batch_fields_and_promotion_events():
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    script = Path(__file__).resolve().parent.parent / "static" / "feeds" / "mapping.js"
    result = subprocess.run(
        [node, "-e", EDITOR_CHECK, str(script), json.dumps(MAPPING)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert set(out["jsonOnly"]) == {"device_info", "mp_deviceid", "partner_identities", "ip"}
    promotion, impressions = out["events"]
    assert "product_action" not in promotion and "product_action" not in impressions
    assert promotion["promotion_action"] == MAPPING["events"][0]["promotion_action"]
    assert promotion["when"] == {"field": "promo", "exists": True}
    assert impressions["product_impressions"] == MAPPING["events"][1]["product_impressions"]


@pytest.mark.django_db
def test_a_preview_shows_the_batches_as_a_run_sends_them():
    from feeds.preview import preview_records

    preview = preview_records(MAPPING, [RECORD], data_plan={"plan_id": "ws_plan"})
    [batch] = preview.batches
    assert batch["context"] == {"data_plan": {"plan_id": "ws_plan"}}
    assert batch["ip"] == "203.0.113.9" and batch["device_info"]["ios_advertising_id"] == IDFA
    assert validate_batch(batch) == []


def test_the_batch_limit_leaves_room_for_the_context():
    from feeds import pipeline
    from feeds.mparticle.schema import MAX_BATCH_BYTES

    context = {"data_plan": {"plan_id": "p" * 100, "plan_version": 2**31 - 1}}
    event = {"event_type": "custom_event", "data": {"event_name": "E", "custom_event_type": "other"}}
    rows = []
    for seq in range(4000):  # one user, small events: several batches, each filled to a few bytes of the limit
        user, data = set_aside_form(UserRecord(f"r{seq}", {"customer_id": "u"}, events=[event]))
        rows.append((BULK_PATH, user, seq, f"r{seq}", data, 1))
    requests, refused = pipeline.build(rows, "production", lambda n, *_: [f"id-{i}" for i in range(n)], context=context)
    assert refused == []
    sizes = [len(orjson.dumps(b)) for r in requests for b in orjson.loads(r.body)]
    assert len(sizes) > 2 and max(sizes) <= MAX_BATCH_BYTES
    assert all(b["context"] == context for r in requests for b in orjson.loads(r.body))
