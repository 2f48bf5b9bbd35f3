"""The feed data sheet: what a mapping sends (identities, user attributes, events and their attributes), with
types and example values from the golden samples; the page and its Markdown download."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from django.test import Client
from django.urls import reverse

from feeds import datasheet
from tests.helpers import make_mapping, make_staff, make_workspace

ROOT = Path(__file__).resolve().parent.parent
DEMO = json.loads((ROOT / "demo" / "mapping.json").read_text())

COMMERCE = {
    "identities": {"customer_id": "uid"},
    "mpid": "mp",
    "user_attributes": {
        "plan": {"field": "plan", "on_null": "delete"},
        "tags": {"field": "tags", "split": "|"},
        "score": "score",
        "tier": {"value": "gold"},
    },
    "user_attributes_from": {"field": "traits", "on_null": "delete"},
    "events": [
        {"name": "{type} Done", "when": {"field": "type", "in": ["signup", "upgrade"]}, "attributes_from": "props"},
        {"event_type": "screen_view", "screen_name": "Home", "attributes": {"ref": "ref"}},
        {
            "event_type": "commerce_event",
            "when": {"all": [{"field": "status", "equals": "paid"}, {"not": {"field": "total", "lt": 5}}]},
            "timestamp": {"field": "at", "required": False},
            "product_action": {
                "action": {"field": "action"},
                "transaction_id": "oid",
                "total_amount": "total",
                "currency_code": {"value": "EUR"},
                "products": {
                    "from": "items",
                    "id": "sku",
                    "price": "p",
                    "quantity": {"field": "q", "type": "int"},
                    "attributes": {"gift": {"field": "gift", "type": "bool"}},
                },
            },
        },
    ],
    "samples": [
        {"name": "refused", "record": {"uid": ""}, "expect": {"rejected": "no identity"}},
        {
            "name": "an order",
            "record": {
                "uid": "u1",
                "mp": "42",
                "plan": "",
                "tags": "a|b",
                "score": 9.5,
                "type": "signup",
                "ref": "ad",
                "status": "paid",
                "action": "purchase",
                "total": "12.5",
                "oid": "o1",
                "at": "2026-11-20T10:00:00Z",
                "items": [{"sku": "s1", "p": "3.5", "q": "2", "gift": "yes"}],
            },
            "expect": {},
        },
    ],
}


def line(lines, name):
    [found] = [x for x in lines if x.name == name]
    return found


# ------------------------------------------------------------------------------------------------- build


def ticks(text: str) -> str:
    """Names marked as code in the sheet (datasheet.code) written with backticks, as Markdown shows them."""
    return text.replace(datasheet.CODE_OPEN, "`").replace(datasheet.CODE_CLOSE, "`")


def test_the_demo_sheet_lists_what_is_sent_with_examples_from_the_samples():
    sheet = datasheet.build(DEMO)
    assert sheet.errors == [] and sheet.samples == 2 and sheet.record_key == "order_id"
    assert [(x.name, ticks(x.source), x.type, x.example) for x in sheet.identities] == [
        ("customer_id", "`customer_id`", "string", '"c-00042"'),
        ("email", "`email` (trim, lower)", "string", '"ada.lovelace42@example.com"'),
    ]
    assert [(x.name, x.type, x.example) for x in sheet.user_attributes] == [
        ("$firstname", "string", '"Ada"'),
        ("$lastname", "string", '"Lovelace"'),
        ("plan", "string", '"pro"'),
        ("lifetime_orders", "integer", "7"),  # from the rule's "type": "int"
    ]
    assert line(sheet.user_attributes, "$firstname").note == "reserved mParticle attribute"
    [event] = sheet.events
    assert (event.event_type, event.name, event.name_source, event.custom_event_type, event.condition) == (
        "custom_event",
        "Purchase Completed",
        "constant",
        "transaction",
        "",
    )
    assert event.example_name == '"Purchase Completed"'
    assert ticks(event.timestamp.source) == "`ordered_at` (format iso8601)"
    assert event.timestamp.example == "1795168800000 (2026-11-20T10:00:00Z)"
    assert [(x.name, ticks(x.source), x.type, x.example) for x in event.attributes] == [
        ("order_id", "`order_id`", "string", '"o-0000001"'),
        ("sku", "`sku`", "string", '"SKU-0042"'),
        ("amount", "`amount`", "number", "129.9"),
        ("currency", 'constant "USD"', "string", '"USD"'),
    ]
    assert sheet.warnings == [] and sheet.refused_samples == []


def test_without_samples_examples_are_dashes_and_types_come_from_the_rules():
    doc = {k: v for k, v in DEMO.items() if k != "samples"}
    sheet = datasheet.build(doc)
    assert sheet.samples == 0
    assert {x.example for x in sheet.identities + sheet.user_attributes + sheet.events[0].attributes} == {"—"}
    assert line(sheet.user_attributes, "plan").type == "as in the source"
    assert line(sheet.user_attributes, "lifetime_orders").type == "integer"
    assert line(sheet.events[0].attributes, "currency").type == "string"
    assert "The mapping keeps no sample records, so no example values (—)." in datasheet.to_markdown(sheet, title="T")


def test_examples_can_come_from_given_records_and_types_from_what_they_produce():
    doc = {"identities": {"customer_id": "id"}, "user_attributes": {"score": "score", "ok": "ok"}}
    sheet = datasheet.build(doc, records=[{"id": 1, "score": 3}, {"id": 2, "score": 2.5, "ok": True}, {"id": ""}])
    assert line(sheet.identities, "customer_id").example == '"1"'  # identities are sent as text
    assert line(sheet.user_attributes, "score").type == "integer or number"
    assert line(sheet.user_attributes, "ok").type == "boolean" and line(sheet.user_attributes, "ok").example == "true"
    assert sheet.refused_samples == [
        "record 3: no identity: every mapped identity field is missing or empty (id); the record's fields are id"
    ]


def test_deletions_mpid_commerce_events_products_and_conditions():
    sheet = datasheet.build(COMMERCE)
    assert sheet.mpid.example == "42" and sheet.mpid.type == "integer (64-bit)"
    plan = line(sheet.user_attributes, "plan")
    assert sheet.deleted_user_attributes == ["plan"]
    assert plan.note == "deleted (deleted_user_attributes) when the value is empty or null" and plan.example == "—"
    tags = line(sheet.user_attributes, "tags")
    assert (ticks(tags.source), tags.type, tags.example) == ('`tags` (split on "|")', "list of strings", '["a","b"]')
    assert line(sheet.user_attributes, "score").type == "number"
    assert ticks(line(sheet.user_attributes, "tier").source) == 'constant "gold"'
    assert line(sheet.user_attributes, "tier").example == '"gold"'
    assert (
        ticks(sheet.user_attributes_from)
        == "every key of the object in `traits` (keys with an empty or null value are deleted)"
    )

    done, home, order = sheet.events
    assert done.title == "Event 1: custom event “{type} Done”"
    assert ticks(done.name_source) == "template of field `type`"
    assert done.possible_names == ["signup Done", "upgrade Done"]
    assert done.example_name == '"signup Done"'
    assert ticks(done.condition) == '`type` is one of "signup", "upgrade"'
    assert ticks(done.attributes_from) == "every key of the object in `props`"
    assert (home.event_type, home.name, home.custom_event_type) == ("screen_view", "Home", "")
    assert line(home.attributes, "ref").example == '"ad"'

    assert order.title == "Event 3: commerce event"
    assert ticks(order.condition) == '`status` = "paid" and not (`total` < 5)'
    assert "optional" in order.timestamp.note
    assert [(x.name, x.type, x.example) for x in order.product_action] == [
        ("product_action.action", "one of " + ", ".join(datasheet.schema.PRODUCT_ACTIONS), '"purchase"'),
        ("product_action.transaction_id", "string", '"o1"'),
        ("product_action.total_amount", "number", "12.5"),
        ("currency_code", "string", '"EUR"'),
    ]
    assert ticks(order.products_source) == "one product per item of the list in `items`"
    assert [(x.name, x.type, x.example) for x in order.products] == [
        ("products[].id", "string", '"s1"'),
        ("products[].price", "number", "3.5"),
        ("products[].quantity", "integer", "2"),
        ("products[].custom_attributes.gift", "boolean", "true"),
    ]


def test_more_than_1000_possible_event_names_is_a_warning():
    kinds = [f"kind-{i}" for i in range(1001)]
    doc = {"identities": {"customer_id": "id"}, "events": [{"name": "{kind}", "when": {"field": "kind", "in": kinds}}]}
    sheet = datasheet.build(doc)
    assert any("up to 1,001 distinct event names" in w for w in sheet.warnings)
    assert sheet.events[0].possible_names == []  # too many to list
    text = datasheet.to_markdown(sheet, title="T")
    assert "## Warnings\n\n- events: the rules can produce up to 1,001 distinct event names" in text


def test_an_invalid_document_gives_its_errors_only():
    sheet = datasheet.build({"identities": {"emial": "email"}})
    assert sheet.errors and sheet.errors[0].startswith("identities.emial: not an mParticle identity key")
    assert sheet.identities == [] and sheet.events == []
    text = datasheet.to_markdown(sheet, title="T")
    assert "## This mapping is not valid" in text and "## Identities" not in text


# ---------------------------------------------------------------------------------------------- Markdown


def test_the_markdown_has_a_header_and_a_section_per_kind():
    text = datasheet.to_markdown(datasheet.build(DEMO), title="Feed data sheet: Acme", details=["Mapping: v3"])
    assert text.startswith(
        "# Feed data sheet: Acme\n\n- Mapping: v3\n\nDemo: purchases from a partner's orders export\n"
    )
    sections = [line for line in text.splitlines() if line.startswith("## ")]
    assert sections == ["## Identities", "## User attributes", "## Events"]
    assert '| `email` | `email` (trim, lower) | string | `"ada.lovelace42@example.com"` |' in text
    assert "| `lifetime_orders` | `lifetime_orders` | integer | `7` |   |" in text
    assert "### Event 1: custom event “Purchase Completed”" in text
    assert "- Custom event type: `transaction`" in text
    assert "| `amount` | `amount` | number | `129.9` |" in text
    assert "Records are identified by the field `order_id`." in text


def test_markdown_cells_survive_pipes_and_backticks():
    doc = {
        "identities": {"customer_id": "id"},
        "user_attributes": {"odd|name": {"field": "x", "split": "|"}, "tick": "t"},
        "samples": [{"record": {"id": "1", "x": "a|b", "t": "`x`"}, "expect": {}}],
    }
    text = datasheet.to_markdown(datasheet.build(doc), title="T")
    assert '| `odd\\|name` | `x` (split on "\\|") | list of strings | `["a","b"]` |' in text
    assert '| `tick` | `t` | string | ``"`x`"`` |' in text
    for row in [r for r in text.splitlines() if r.startswith("| `")]:
        assert row.replace("\\|", "").count("|") == 5, row


# -------------------------------------------------------------------------------------------------- views


@pytest.fixture
def staff(client, django_user_model):
    client.force_login(make_staff("sam"))
    return client


@pytest.fixture
def mapping(db):
    workspace = make_workspace(name="Acme Shoes")
    mapping = make_mapping(workspace, copy.deepcopy(DEMO), name="orders")
    doc = copy.deepcopy(DEMO)
    doc["description"] = "Orders, version two"
    mapping.update_rules(doc)
    return mapping


def test_the_page_shows_the_tables_with_examples(staff, mapping):
    response = staff.get(reverse("feeds:datasheet", args=[mapping.workspace.slug, mapping.pk]))
    assert response.status_code == 200
    page = response.content.decode()
    assert "<h1>Feed data sheet: Acme Shoes</h1>" in page
    assert "Mapping: orders, version 2" in page and "Workspace: Acme Shoes (environment development)" in page
    identities = page[page.index('id="sheet-identities"') : page.index('id="sheet-user-attributes"')]
    assert "<code>email</code>" in identities and "<code>&quot;ada.lovelace42@example.com&quot;</code>" in identities
    attributes = page[page.index('id="sheet-user-attributes"') : page.index('id="sheet-events"')]
    assert (
        "<code>lifetime_orders</code></th><td><code>lifetime_orders</code></td><td>integer</td><td><code>7</code>"
        in attributes
    )
    assert "`" not in page
    events = page[page.index('id="sheet-events"') :]
    assert "Event 1: custom event “Purchase Completed”" in events and "<code>transaction</code>" in events
    assert "<code>129.9</code>" in events and "1795168800000 (2026-11-20T10:00:00Z)" in events
    assert reverse("feeds:datasheet_md", args=[mapping.workspace.slug, mapping.pk]) in page


def test_the_markdown_download(staff, mapping):
    response = staff.get(reverse("feeds:datasheet_md", args=[mapping.workspace.slug, mapping.pk]))
    assert response.status_code == 200
    assert response["Content-Type"] == "text/markdown; charset=utf-8"
    assert response["Content-Disposition"] == 'attachment; filename="acme-shoes-orders-v2-datasheet.md"'
    text = response.content.decode("utf-8")
    assert text.startswith("# Feed data sheet: Acme Shoes\n\n- Workspace: Acme Shoes (environment development)\n")
    assert "- Mapping: orders, version 2\n" in text and "Orders, version two" in text
    for section in ("## Identities", "## User attributes", "## Events"):
        assert f"\n{section}\n" in text
    assert '| `customer_id` | `customer_id` | string | `"c-00042"` |' in text


def test_the_data_sheet_is_for_staff_only(client, django_user_model, mapping):
    urls = [
        reverse(f"feeds:{name}", args=[mapping.workspace.slug, mapping.pk]) for name in ("datasheet", "datasheet_md")
    ]
    for url in urls:
        response = client.get(url)
        assert response.status_code == 302 and "/admin/login/" in response["Location"]
    client.force_login(django_user_model.objects.create_user("nina"))
    assert [client.get(url).status_code for url in urls] == [403, 403]


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_the_data_sheet_fits_a_phone(chromium, live_server, django_user_model):
    from tests.browser import Shots

    workspace = make_workspace(name="Acme Shoes")
    mapping = make_mapping(workspace, copy.deepcopy(COMMERCE), name="orders", accept_changes=True)
    client = Client()
    client.force_login(make_staff("bella"))
    context = chromium.new_context(viewport={"width": 390, "height": 844})
    context.add_cookies([{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": live_server.url}])
    page = context.new_page()
    page.goto(live_server.url + reverse("feeds:datasheet", args=[workspace.slug, mapping.pk]))
    assert page.get_by_role("heading", name="Event 3: commerce event").is_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    Shots("datasheet-phone").take(page, "sheet")
    context.close()
