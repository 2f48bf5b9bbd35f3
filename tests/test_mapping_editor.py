"""The mapping editor: rows and JSON, saving (errors next to their rows, changed sample outputs), the live
preview endpoint, the JSON export, who may use them — and mapping.js itself, in Node and in a real browser."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from django.test import Client
from django.urls import reverse

from feeds.models import Mapping
from tests.browser import wait_js
from tests.helpers import (
    MAPPING,
    SANDBOX_SECRET,
    make_job,
    make_mapping,
    make_staff,
    make_workspace,
    purchase_rows,
    write_csv,
)

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parent.parent
DEMO = json.loads((ROOT / "demo" / "mapping.json").read_text())


# ------------------------------------------------------------------------------------------------ the cast


@pytest.fixture
def staff(client, django_user_model):
    client.force_login(make_staff("sam"))
    return client


@pytest.fixture
def workspace():
    return make_workspace(name="Acme")


@pytest.fixture
def mapping(workspace) -> Mapping:
    return make_mapping(workspace, copy.deepcopy(DEMO))


def edit_url(mapping: Mapping) -> str:
    return reverse("feeds:mapping_edit", args=[mapping.workspace.slug, mapping.pk])


def preview_url(workspace) -> str:
    return reverse("feeds:mapping_preview", args=[workspace.slug])


def save(client, url: str, doc: object, name: str = "default", **fields):
    text = doc if isinstance(doc, str) else json.dumps(doc)
    return client.post(url, {"name": name, "document": text, **fields})


def preview(client, workspace, doc: object, **body):
    return client.post(preview_url(workspace), json.dumps({"document": doc, **body}), content_type="application/json")


class _ById(HTMLParser):
    """The text inside the element with a given id (what a person would read there)."""

    def __init__(self, wanted: str):
        super().__init__()
        self.wanted, self.depth, self.found = wanted, 0, False
        self.parts: list[str] = []

    def handle_starttag(self, tag, attrs):
        if self.depth:
            if tag not in ("input", "br", "option", "meta", "link", "img"):
                self.depth += 1
        elif dict(attrs).get("id") == self.wanted:
            self.depth, self.found = 1, True

    def handle_endtag(self, tag):
        if self.depth:
            self.depth -= 1

    def handle_data(self, data):
        if self.depth:
            self.parts.append(data)


def text_of(response, element_id: str) -> str:
    parser = _ById(element_id)
    parser.feed(response.content.decode())
    assert parser.found, f"no element with id {element_id!r}"
    return " ".join(" ".join(parser.parts).split())


# ---------------------------------------------------------------------------------------------- the pages


def test_the_new_mapping_page_shows_an_empty_editor(staff, workspace):
    response = staff.get(reverse("feeds:mapping_new", args=[workspace.slug]))
    assert response.status_code == 200
    page = response.content.decode()
    assert "New mapping" in page
    assert 'id="rows"></div>' in page and 'id="events"></div>' in page
    # The choices: the 22 identity keys, the reserved attributes, the event types.
    assert page.count('<option value="other_id_10"') >= 1 and '<option value="$firstname">' in page
    assert '<option value="commerce_event"' in page
    assert json.loads(response.context["form"]["document"].value()) == {
        "identities": {},
        "user_attributes": {},
        "events": [],
    }


def test_the_edit_page_shows_a_row_per_rule_and_the_json(staff, mapping):
    response = staff.get(edit_url(mapping))
    assert response.status_code == 200
    page = response.content.decode()
    for element_id in (
        "row-record_key",
        "row-identities-customer_id",
        "row-identities-email",
        "row-user_attributes-$firstname",
        "row-user_attributes-lifetime_orders",
        "row-events-0-attributes-amount",
        "event-0",
    ):
        assert f'id="{element_id}"' in page, element_id
    assert 'data-path="identities.email"' in page and 'data-path="events[0]"' in page
    # The row shows the spec's transforms and type; the event block its name, type and timestamp.
    email = page[page.index('id="row-identities-email"') : page.index('id="row-user_attributes-$firstname"')]
    assert 'value="trim" checked' in email and 'value="lower" checked' in email and 'value="upper">' in email
    assert 'value="Purchase Completed"' in page and 'value="ordered_at"' in page and 'value="iso8601"' in page
    assert '<option value="transaction" selected>' in page
    # What the rows cannot show is named, and the JSON holds the whole document.
    assert "Kept in the JSON only" in text_of(response, "json-only-note") and "samples" in text_of(
        response, "json-only-note"
    )
    assert json.loads(response.context["form"]["document"].value()) == DEMO
    assert f'href="{reverse("feeds:mapping_export", args=[mapping.workspace.slug, mapping.pk])}"' in page


def test_a_document_the_rows_cannot_show_is_edited_as_json(staff, workspace):
    mapping = make_mapping(
        workspace,
        {
            "identities": {"customer_id": "id"},
            "events": [{"event_type": "commerce_event", "product_action": {"action": "purchase"}}],
        },
    )
    mapping.rules = {"identities": "not an object"}  # as if stored before validation existed
    mapping.save()
    response = staff.get(edit_url(mapping))
    assert response.status_code == 200
    assert "The rows cannot show this document (identities: not an object)" in text_of(response, "rows-problem")
    assert 'id="rows-fieldset" disabled' in response.content.decode()


# ------------------------------------------------------------------------------------------------ saving


def test_saving_a_new_mapping_creates_version_1(staff, workspace):
    doc = {"identities": {"customer_id": "user_id"}, "events": [{"name": "Signed Up"}]}
    response = save(staff, reverse("feeds:mapping_new", args=[workspace.slug]), doc, name="signups")
    mapping = workspace.mappings.get(name="signups")
    assert response.status_code == 302 and response["Location"] == edit_url(mapping)
    assert mapping.rules == doc and mapping.version == 1
    assert "Mapping saved (version 1)." in [str(m) for m in staff.get(response["Location"]).context["messages"]]


def test_saving_a_valid_edit_bumps_the_version(staff, mapping):
    doc = copy.deepcopy(DEMO)
    doc["user_attributes"]["tier"] = {"field": "tier", "transform": ["lower"]}
    response = save(staff, edit_url(mapping), doc, version=1)
    assert response.status_code == 302
    mapping.refresh_from_db()
    assert mapping.version == 2 and mapping.rules["user_attributes"]["tier"] == {
        "field": "tier",
        "transform": ["lower"],
    }
    page = staff.get(response["Location"])
    assert "Mapping saved (version 2)." in [str(m) for m in page.context["messages"]]
    assert 'id="row-user_attributes-tier"' in page.content.decode()


def test_saving_the_same_document_keeps_the_version(staff, mapping):
    response = save(staff, edit_url(mapping), DEMO, version=1)
    mapping.refresh_from_db()
    assert mapping.version == 1
    assert "No changes (version 1)." in [str(m) for m in staff.get(response["Location"]).context["messages"]]


def test_renaming_keeps_the_rules_and_refuses_a_taken_name(staff, workspace, mapping):
    make_mapping(workspace, name="other")
    response = save(staff, edit_url(mapping), DEMO, name="other", version=1)
    assert response.status_code == 200
    assert "already has a mapping named 'other'" in text_of(response, "mapping-form")
    response = save(staff, edit_url(mapping), DEMO, name="orders", version=1)
    assert response.status_code == 302
    mapping.refresh_from_db()
    assert mapping.name == "orders" and mapping.version == 1


def test_invalid_rules_are_refused_with_each_error_next_to_its_row(staff, mapping):
    doc = copy.deepcopy(DEMO)
    doc["identities"]["email"]["type"] = "integer"
    doc["user_attributes"]["plan"] = {"field": "plan", "type": "text"}
    doc["user_attributes"]["$favourite"] = "colour"
    doc["events"][0]["attributes"]["amount"] = {"field": "amount", "type": "float", "format": "%Y"}
    doc["events"][0]["name"] = " "
    doc["colour"] = "blue"
    response = save(staff, edit_url(mapping), doc, version=1)
    assert response.status_code == 200
    mapping.refresh_from_db()
    assert mapping.version == 1 and mapping.rules == DEMO
    assert "The mapping was not saved: 6 problems" in text_of(response, "save-failed")
    assert "identities.email.type: 'integer' is not one of" in text_of(response, "row-identities-email-errors")
    assert "user_attributes.plan.type: 'text' is not one of" in text_of(response, "row-user_attributes-plan-errors")
    assert "names starting with $ are reserved" in text_of(response, "row-user_attributes-$favourite-errors")
    assert "'format' and 'timezone' go with" in text_of(response, "row-events-0-attributes-amount-errors")
    assert "events[0].name: must not be empty" in text_of(response, "event-0-errors")
    # Each message only under its own row; all of them at the top, the ones with a row linked to it.
    assert text_of(response, "row-identities-customer_id-errors") == ""
    assert "identities.email" not in text_of(response, "row-user_attributes-plan-errors")
    top = text_of(response, "problem-list")
    assert "unknown top-level keys ['colour']" in top and "identities.email.type" in top
    assert '<a href="#row-identities-email">identities.email.type' in response.content.decode()
    # The rows and the JSON show what was posted, to fix it.
    assert json.loads(response.context["form"]["document"].value()) == doc
    page = response.content.decode()
    assert 'class="map-row has-errors" id="row-identities-email"' in page
    assert 'aria-describedby="row-identities-email-errors"' in page


def test_json_that_does_not_parse_is_refused_with_where(staff, mapping):
    response = save(staff, edit_url(mapping), '{"identities": {"customer_id": "id",}}', version=1)
    assert response.status_code == 200
    assert "Not valid JSON: Expecting property name enclosed in double quotes (line 1, column 37)." in (
        text_of(response, "json-details")
    )
    assert "the JSON does not parse" in text_of(response, "rows-problem")
    assert Mapping.objects.get(pk=mapping.pk).version == 1


def test_a_stale_version_is_refused(staff, mapping):
    assert save(staff, edit_url(mapping), {**DEMO, "description": "first"}, version=1).status_code == 302
    response = save(staff, edit_url(mapping), {**DEMO, "description": "second"}, version=1)
    assert response.status_code == 200
    assert "Someone saved this mapping since you opened it (now version 2)" in text_of(response, "save-failed")
    assert Mapping.objects.get(pk=mapping.pk).rules["description"] == "first"


def test_changed_sample_outputs_are_shown_and_saved_only_once_accepted(staff, mapping):
    doc = copy.deepcopy(DEMO)
    doc["events"][0]["name"] = "Order Completed"
    response = save(staff, edit_url(mapping), doc, version=1)
    assert response.status_code == 200
    changes = text_of(response, "changes")
    assert 'events[0].data.event_name: expected "Purchase Completed", got "Order Completed"' in changes
    assert "Accept changed sample outputs" in changes
    assert Mapping.objects.get(pk=mapping.pk).version == 1
    digest = response.context["changes_digest"]

    # Accepting other changes than those shown asks again.
    other = copy.deepcopy(doc)
    other["events"][0]["name"] = "Order Placed"
    response = save(staff, edit_url(mapping), other, version=1, accept_changes="on", changes_digest=digest)
    assert response.status_code == 200 and "Order Placed" in text_of(response, "changes")
    assert Mapping.objects.get(pk=mapping.pk).version == 1

    response = save(staff, edit_url(mapping), doc, version=1, accept_changes="on", changes_digest=digest)
    assert response.status_code == 302
    mapping.refresh_from_db()
    assert mapping.version == 2
    assert mapping.rules["samples"][0]["expect"]["events"][0]["data"]["event_name"] == "Order Completed"
    assert "Mapping saved (version 2)." in [str(m) for m in staff.get(response["Location"]).context["messages"]]


# ----------------------------------------------------------------------------------------------- preview


def test_the_preview_converts_pasted_records_into_batches_per_user(staff, workspace):
    records = purchase_rows(3, users=2)
    response = preview(staff, workspace, MAPPING, records=json.dumps(records))
    assert response.status_code == 200
    result = response.json()
    assert result["errors"] == [] and result["rejected"] == [] and result["records"] == 3
    assert [b["user_identities"] for b in result["batches"]] == [
        {"customer_id": "u0", "email": "user0@example.com"},
        {"customer_id": "u1", "email": "user1@example.com"},
    ]
    assert [len(b["events"]) for b in result["batches"]] == [2, 1]
    assert result["by_path"] == {}


def test_the_preview_shows_batches_and_keys_refusals_by_rule_path(staff, workspace):
    records = [sample["record"] for sample in DEMO["samples"]]
    result = preview(staff, workspace, DEMO, records="\n".join(json.dumps(r) for r in records)).json()
    assert result["records"] == 2 and result["errors"] == []
    [batch] = result["batches"]
    assert batch["user_identities"] == {"customer_id": "c-00042", "email": "ada.lovelace42@example.com"}
    assert batch["events"][0]["data"]["event_name"] == "Purchase Completed"
    assert '"event_name": "Purchase Completed"' in result["batches_text"]
    [refused] = result["rejected"]
    assert refused["ref"] == "line 2" and refused["path"] == "events[0].attributes.amount"
    assert result["by_path"] == {
        "events[0].attributes.amount": [
            {"level": "rejected", "text": "line 2: events[0].attributes.amount: 'n/a' is not a number"}
        ]
    }
    assert [s["ok"] for s in result["samples"]] == [True, True]


def test_the_preview_keys_validation_errors_and_warnings_by_rule_path(staff, workspace):
    doc = copy.deepcopy(DEMO)
    doc["identities"]["email"]["transform"] = ["squash"]
    doc["events"][0]["attributes"]["amount"]["type"] = "decimal"
    result = preview(staff, workspace, doc, records="[]").json()
    assert result["batches"] == [] and result["records"] == 0
    assert result["by_path"]["identities.email"][0]["text"].startswith("identities.email.transform: must be one of")
    assert result["by_path"]["events[0].attributes.amount"][0]["level"] == "error"
    assert len(result["errors"]) == 2

    doc = {"identities": {"customer_id": "id"}, "events": [{"name": "{kind} Viewed"}, {"name": "Seen"}]}
    result = preview(staff, workspace, doc, records='[{"id": 1, "kind": "Page"}, {"id": 2}]').json()
    [warning] = result["by_path"]["events[0]"][:1]
    assert warning["level"] == "warning" and "every distinct value makes a new event name" in warning["text"]
    assert result["by_path"]["events[0]"][1] == {
        "level": "rejected",
        "text": "record 2: events[0].name: field 'kind' is missing or empty (needed for '{kind} Viewed')",
    }
    assert "events[1]" not in result["by_path"]


def test_the_preview_says_which_pasted_lines_are_not_json(staff, workspace):
    # NDJSON is read by the runs' own reader: a bad line is an error of the sample, the others are previewed.
    result = preview(staff, workspace, DEMO, records='{"customer_id": "a"}\nnot json\n\n{"x": 1').json()
    assert [e.split(" (")[0] for e in result["input_errors"]] == [
        "sample, line 2: the line is not valid JSON",
        "sample, line 4: the line is not valid JSON",
    ]
    assert result["records"] == 1 and result["sample"]["format"] == "ndjson"
    result = preview(staff, workspace, DEMO, records='[{"a": 1},]').json()
    assert result["input_errors"][0].startswith("sample: not valid JSON: Expecting value")
    result = preview(staff, workspace, DEMO, records="[1, 2]").json()
    assert result["input_errors"] == [
        "sample, record 1: expected an object, got a number",
        "sample, record 2: expected an object, got a number",
    ]
    assert result["records"] == 0 and result["rejected"] == []


def test_the_preview_reads_a_csv_sample_as_a_run_reads_a_csv_file(staff, workspace):
    doc = {
        "identities": {"email": "email"},
        "user_attributes": {"plan": "plan", "orders": {"field": "n", "type": "int"}},
    }
    text = "email;plan;n\nann@example.com;pro;3\nbob@example.com;free\n\ncat@example.com;pro;x\n"
    result = preview(staff, workspace, doc, records=text).json()
    # Its columns, to pick from; the delimiter sniffed as a run sniffs it.
    assert result["sample"]["format"] == "csv" and result["sample"]["columns"] == ["email", "plan", "n"]
    # A row that cannot be read is an error of the sample (beside it), a record the mapping refuses is refused.
    assert result["input_errors"] == ["sample, line 3: the row has 2 fields, the header has 3"]
    assert [(r["ref"], r["path"]) for r in result["rejected"]] == [("line 5", "user_attributes.orders")]
    assert [b["user_attributes"] for b in result["batches"]] == [{"plan": "pro", "orders": 3}]
    # Warnings are kept apart from errors.
    assert any("CSV values are all text" in w for w in result["input_warnings"])
    assert not any("CSV" in e for e in result["errors"] + result["input_errors"])
    # Read as what staff chose; a header a run refuses is refused here too, and the document still checked.
    result = preview(staff, workspace, doc, records="a,b\n1,2", format="ndjson").json()
    assert result["sample"]["format"] == "ndjson" and len(result["input_errors"]) == 2
    result = preview(staff, workspace, {"identities": []}, records="a,a\n1,2").json()
    assert result["input_errors"] == ["sample: the header names a column more than once: 'a' (columns 1, 2)"]
    assert result["errors"]
    result = preview(staff, workspace, doc, records="a\n1", format="xml").json()
    assert result["input_errors"][0].startswith("sample: unknown format 'xml'")
    # Nested JSON offers dotted field names, as the mapping reads them.
    result = preview(staff, workspace, doc, records='[{"id": 1, "address": {"city": "Oslo", "geo": {"lat": 1}}}]')
    assert result.json()["sample"]["columns"] == ["id", "address.city", "address.geo.lat"]


def test_the_sample_is_kept_with_the_mapping(staff, workspace, mapping):
    url = edit_url(mapping)
    # Where none is kept, the golden samples' records are offered; saving them unchanged changes nothing.
    from feeds.views.mappings import sample_records_text

    assert "Ada.Lovelace42@Example.com" in text_of(staff.get(url), "preview-records")
    offered = sample_records_text(mapping.rules).replace("\n", "\r\n")  # as a browser posts a textarea
    response = staff.post(
        url, {"name": "default", "document": json.dumps(mapping.rules), "sample": offered}, follow=True
    )
    assert "No changes (version 1)." in response.content.decode()
    mapping.refresh_from_db()
    assert mapping.sample == ""
    text = "email,plan\nann@example.com,pro\n"
    response = save(staff, url, mapping.rules, sample=text, sample_format="csv", version=mapping.version)
    assert response.status_code == 302
    mapping.refresh_from_db()
    # The rules did not change: the version neither; the sample is kept.
    assert (mapping.sample, mapping.sample_format, mapping.version) == (text, "csv", 1)
    page = staff.get(url)
    assert "ann@example.com,pro" in text_of(page, "preview-records")
    assert json.loads(text_of(page, "sample-columns-data")) == ["email", "plan"]
    assert 'data-saved="true"' in page.content.decode()
    # A new mapping keeps its sample from its first version; a sample that is not text is refused.
    new = reverse("feeds:mapping_new", args=[workspace.slug])
    assert save(staff, new, MAPPING, name="second", sample='{"a": 1}', sample_format="json").status_code == 302
    assert Mapping.objects.get(name="second").sample == '{"a": 1}'
    response = save(staff, new, MAPPING, name="third", sample="a\x00b")
    assert response.status_code == 200 and "Null characters are not allowed" in text_of(response, "save-failed")
    assert 'data-saved="false"' in response.content.decode()
    assert not Mapping.objects.filter(name="third").exists()


def test_the_preview_reads_the_first_10_records_of_a_job(staff, workspace, tmp_path):
    path = write_csv(tmp_path / "orders.csv", purchase_rows(25))
    job = make_job(workspace, path, name="orders")
    doc = copy.deepcopy(job.mapping.rules)
    doc["events"][0]["name"] = "Order Completed"
    result = preview(staff, workspace, doc, job=job.pk).json()
    assert result["errors"] == [] and result["records"] == 10 and result["rejected"] == []
    assert {b["events"][0]["data"]["event_name"] for b in result["batches"]} == {"Order Completed"}
    assert result["batches"][0]["environment"] == workspace.environment

    # A broken document never reads the source; another workspace's job is not found.
    assert preview(staff, workspace, {"identities": {}}, job=job.pk).json()["records"] == 0
    other = make_job(make_workspace(name="Other"), path, name="theirs")
    assert preview(staff, workspace, doc, job=other.pk).status_code == 404


def test_the_preview_refuses_what_is_not_json_and_needs_the_csrf_token(staff, workspace, django_user_model):
    response = staff.post(preview_url(workspace), "nope", content_type="application/json")
    assert response.status_code == 400 and response.json() == {"error": "send a JSON object"}
    assert staff.get(preview_url(workspace)).status_code == 405

    browser = Client(enforce_csrf_checks=True)
    browser.force_login(make_staff("tess"))
    body = json.dumps({"document": DEMO, "records": "[]"})
    assert browser.post(preview_url(workspace), body, content_type="application/json").status_code == 403
    page = browser.get(reverse("feeds:mapping_new", args=[workspace.slug]))
    token = page.cookies["csrftoken"].value
    response = browser.post(
        preview_url(workspace), body, content_type="application/json", headers={"X-CSRFToken": token}
    )
    assert response.status_code == 200 and response.json()["errors"] == []


# ------------------------------------------------------------------------------------------------ export


def test_export_downloads_the_document(staff, mapping):
    response = staff.get(reverse("feeds:mapping_export", args=[mapping.workspace.slug, mapping.pk]))
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json; charset=utf-8"
    assert response["Content-Disposition"] == 'attachment; filename="acme-default-v1.json"'
    assert json.loads(response.content) == DEMO
    # What is exported loads again as it is.
    assert save(staff, edit_url(mapping), response.content.decode(), version=1).status_code == 302
    assert Mapping.objects.get(pk=mapping.pk).version == 1


def test_another_workspaces_mapping_is_not_found(staff, mapping):
    other = make_workspace(name="Other")
    for name in ("mapping_edit", "mapping_export", "datasheet", "datasheet_md"):
        assert staff.get(reverse(f"feeds:{name}", args=[other.slug, mapping.pk])).status_code == 404, name


# ------------------------------------------------------------------------------------------------ access


def all_urls(mapping):
    slug = mapping.workspace.slug
    return [
        ("get", reverse("feeds:mapping_new", args=[slug])),
        ("post", reverse("feeds:mapping_new", args=[slug])),
        ("get", reverse("feeds:mapping_edit", args=[slug, mapping.pk])),
        ("post", reverse("feeds:mapping_edit", args=[slug, mapping.pk])),
        ("post", reverse("feeds:mapping_preview", args=[slug])),
        ("post", reverse("feeds:mapping_test_record", args=[slug])),
        ("get", reverse("feeds:mapping_export", args=[slug, mapping.pk])),
        ("get", reverse("feeds:datasheet", args=[slug, mapping.pk])),
        ("get", reverse("feeds:datasheet_md", args=[slug, mapping.pk])),
    ]


def test_every_url_sends_anonymous_users_to_login_and_refuses_non_staff(client, django_user_model, mapping):
    body = {"name": "x", "document": json.dumps({"identities": {"customer_id": "id"}})}
    for method, url in all_urls(mapping):
        response = getattr(client, method)(url, body) if method == "post" else client.get(url)
        assert response.status_code == 302 and "/admin/login/" in response["Location"], url
    client.force_login(django_user_model.objects.create_user("nina"))
    for method, url in all_urls(mapping):
        response = getattr(client, method)(url, body) if method == "post" else client.get(url)
        assert response.status_code == 403, url
    assert Mapping.objects.count() == 1 and Mapping.objects.get().version == 1


# ------------------------------------------------------------------------------------------ mapping.js


NODE = shutil.which("node")
NODE_CHECK = r"""
const m = require(process.argv[1]);
const assert = require("assert");
const docs = JSON.parse(process.argv[2]);
for (const doc of docs) {
  const state = m.stateFromDoc(doc);
  const back = m.docFromState(doc, state.rows, state.blocks);
  // Unchanged rows give back the document exactly, key order included.
  assert.strictEqual(JSON.stringify(back), JSON.stringify(doc));
}
const doc = docs[0];
const state = m.stateFromDoc(doc);
const row = (path) => state.rows.find((r) => r.path === path);
row("identities.email").transforms = ["trim"];
row("user_attributes.lifetime_orders").type = "auto";
row("user_attributes.plan").type = "string";
row("user_attributes.plan").transforms = ["upper"];
Object.assign(row("events[0].attributes.currency"), { sourceKind: "value", source: "EUR" });
state.rows.push({ kind: "user_attribute", target: "tier", sourceKind: "field", source: "tier", type: "auto", transforms: [], event: null });
state.blocks[0].eventType = "screen_view";
state.blocks[0].name = "{page} Viewed";
const edited = m.docFromState(doc, state.rows, state.blocks, [{ when: { field: "page", in: ["Home"] } }]);
console.log(JSON.stringify({
  email: edited.identities.email,
  orders: edited.user_attributes.lifetime_orders,
  plan: edited.user_attributes.plan,
  tier: edited.user_attributes.tier,
  currency: edited.events[0].attributes.currency,
  event: Object.fromEntries(Object.entries(edited.events[0]).filter(([k]) => k !== "attributes")),
  samples: edited.samples.length,
  ids: [m.domId("identities.email", new Set()), m.domId("events[0].attributes.a b", new Set())],
}));
for (const bad of [{ identities: { email: 5 } }, { events: [{ event_type: "opt_out" }] }, { mpid: { value: 12345678901234567890 } }]) {
  assert.throws(() => m.stateFromDoc(bad), m.NotShown);
}
"""


@pytest.mark.skipif(NODE is None, reason="node is not installed")
def test_mapping_js_turns_documents_into_rows_and_back():
    docs = [
        DEMO,
        {
            "identities": {"customer_id": "user_id"},
            "mpid": {"field": "mp", "type": "int"},
            "user_attributes": {
                "plan": {"field": "plan", "on_null": "delete"},
                "tags": {"field": "tags", "split": "|"},
                "n": {"value": 5},
            },
            "user_attributes_from": {"field": "traits", "on_null": "delete"},
            "events": [
                {"name": "{type} Done", "when": {"field": "type", "in": ["a", "b"]}, "attributes_from": "props"},
                {"name": {"field": "event", "transform": "trim"}, "custom_event_type": {"field": "event_kind"}},
                {"event_type": "screen_view", "screen_name": "{app.screen}", "attributes": {"referrer": "ref"}},
                {"name": "Login", "timestamp": {"field": "at", "format": "%d/%m/%Y %H:%M", "timezone": "Europe/Paris"}},
                {
                    "event_type": "commerce_event",
                    "timestamp": "paid_at",
                    "product_action": {"action": "purchase", "products": {"from": "items", "id": "sku"}},
                },
            ],
            "options": {"long_values": "truncate"},
        },
    ]
    script = ROOT / "static" / "feeds" / "mapping.js"
    result = subprocess.run(
        [NODE, "-e", NODE_CHECK, str(script), json.dumps(docs)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["email"] == {"field": "email", "transform": ["trim"]}
    assert out["orders"] == {"field": "lifetime_orders"}
    assert out["plan"] == {"field": "plan", "type": "string", "transform": ["upper"]}
    assert out["tier"] == "tier"
    assert out["currency"] == {"value": "EUR"}
    assert out["event"] == {
        "event_type": "screen_view",
        "timestamp": {"field": "ordered_at", "format": "iso8601"},
        "screen_name": "{page} Viewed",
        "when": {"field": "page", "in": ["Home"]},
    }
    assert out["samples"] == 2
    assert out["ids"] == ["row-identities-email", "row-events-0-attributes-a-b"]


# ---------------------------------------------------------------------------------------------- browser


@pytest.fixture
def browser_page(chromium, live_server, django_user_model):
    """A staff member's page in Debian's chromium, logged in through the session cookie."""
    client = Client()
    client.force_login(make_staff("bella"))
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    context.add_cookies([{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": live_server.url}])
    page = context.new_page()
    page.set_default_timeout(10_000)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    yield page
    context.close()
    assert errors == []


def document_in(page) -> dict:
    return json.loads(page.input_value("#id_document"))


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_editing_in_a_browser_keeps_rows_json_and_preview_in_step(browser_page, live_server, tmp_path):
    from tests.browser import Shots

    page, shots = browser_page, Shots("mapping-editor")
    workspace = make_workspace(name="Acme")
    mapping = make_mapping(workspace, copy.deepcopy(DEMO))
    page.goto(live_server.url + edit_url(mapping))
    status = page.locator("#preview-status")
    # The golden samples' records are the first sample records: one batch, one refused record, placed.
    wait_js(page, "document.getElementById('preview-status').textContent.includes('batch')")
    assert "2 records → 1 batch, 1 refused record" in status.inner_text()
    assert '"event_name": "Purchase Completed"' in page.inner_text("#preview-batches")
    amount_errors = page.locator("[data-path='events[0].attributes.amount'] .row-msgs")
    assert "record 2: events[0].attributes.amount: 'n/a' is not a number" in amount_errors.inner_text()
    shots.take(page, "loaded")
    # Every control is labelled.
    unlabelled = page.evaluate(
        """[...document.querySelectorAll('main input, main select, main textarea, main button')]
             .filter((c) => c.type !== 'hidden' && !c.closest('template'))
             .filter((c) => !(c.labels && c.labels.length) && !c.getAttribute('aria-label')
                            && !c.getAttribute('aria-labelledby') && !c.textContent.trim())
             .map((c) => c.outerHTML.slice(0, 80))"""
    )
    assert unlabelled == []

    # A row edit rewrites the JSON, and the preview shows the refusal under that row.
    orders = page.locator("#row-user_attributes-lifetime_orders")
    orders.get_by_label("Type").select_option("bool")
    assert document_in(page)["user_attributes"]["lifetime_orders"] == {"field": "lifetime_orders", "type": "bool"}
    wait_js(
        page, "document.querySelector('#row-user_attributes-lifetime_orders .row-msgs').textContent.includes('boolean')"
    )
    assert "has-errors" in orders.get_attribute("class")
    assert orders.locator(".f-source").get_attribute("aria-invalid") == "true"
    assert "user_attributes.lifetime_orders" in page.inner_text("#problem-list")
    orders.get_by_label("Type").select_option("int")

    # A new row, by keyboard: the source gets the focus.
    page.get_by_role("button", name="Add a user attribute").click()
    row = page.locator("#rows .map-row").last
    assert page.evaluate("document.activeElement.classList.contains('f-source')")
    page.keyboard.type("plan")
    row.locator(".f-target-name").fill("tier")
    row.get_by_label("upper").check()
    assert document_in(page)["user_attributes"]["tier"] == {"field": "plan", "transform": ["upper"]}
    wait_js(page, "document.getElementById('preview-batches').textContent.includes('\"tier\": \"PRO\"')")

    # Editing the JSON rebuilds the rows.
    page.get_by_text("Advanced: edit as JSON").click()
    doc = document_in(page)
    doc["events"][0]["name"] = "Order Completed"
    doc["identities"]["other_id_2"] = {"field": "crm_id", "transform": "trim", "default": "none"}
    page.fill("#id_document", json.dumps(doc, indent=2))
    wait_js(page, "document.querySelector('#event-0 .f-name').value === 'Order Completed'")
    crm = page.locator("[data-path='identities.other_id_2']")
    assert crm.locator(".f-target-identity").input_value() == "other_id_2"
    assert "Also in the JSON: default" in crm.inner_text()
    shots.take(page, "edited")

    # JSON that does not parse: the rows wait, and say why.
    page.fill("#id_document", '{"identities": ')
    wait_js(page, "!document.getElementById('rows-problem').hidden")
    assert page.locator("#rows .f-source").first.is_disabled()
    page.fill("#id_document", json.dumps(doc, indent=2))
    wait_js(page, "document.getElementById('rows-problem').hidden")

    # Save: the samples' outputs change, so they must be accepted.
    page.get_by_role("button", name="Save mapping").click()
    assert "golden samples" in page.inner_text("#changes")
    assert 'expected "Purchase Completed", got "Order Completed"' in page.inner_text("#changes")
    shots.take(page, "changes")
    page.get_by_label("Accept changed sample outputs").check()
    page.get_by_role("button", name="Save mapping").click()
    assert "Mapping saved (version 2)." in page.inner_text(".messages")
    mapping.refresh_from_db()
    assert mapping.version == 2 and mapping.rules["events"][0]["name"] == "Order Completed"
    assert mapping.rules["identities"]["other_id_2"] == {"field": "crm_id", "transform": "trim", "default": "none"}
    assert mapping.rules["user_attributes"]["tier"] == {"field": "plan", "transform": ["upper"]}

    # Import a file: the rows follow it.
    imported = tmp_path / "signups.json"
    imported.write_text(json.dumps({"identities": {"email": "mail"}, "events": [{"name": "Signed Up"}]}))
    page.locator("#import-file").set_input_files(str(imported))
    wait_js(page, "document.querySelectorAll('#rows .map-row').length === 1")
    assert "Imported signups.json" in page.inner_text("#json-status")
    assert page.locator("#event-0 .f-name").input_value() == "Signed Up"


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_a_new_mapping_built_from_rows_on_a_phone(browser_page, live_server):
    from tests.browser import Shots

    page, shots = browser_page, Shots("mapping-editor-phone")
    page.set_viewport_size({"width": 390, "height": 844})
    workspace = make_workspace(name="Acme")
    page.goto(live_server.url + reverse("feeds:mapping_new", args=[workspace.slug]))
    page.get_by_label("Name", exact=True).fill("signups")
    page.get_by_role("button", name="Add an identity").click()
    page.keyboard.type("user_id")
    page.get_by_role("button", name="Add an event").click()
    page.keyboard.type("{plan} Signed Up")
    event = page.locator("#event-0")
    event.get_by_label("Custom event type").select_option("user_preference")
    event.get_by_label("Timestamp field").fill("at")
    event.get_by_label("Only when").fill('{"field": "plan", "in": ["free", "pro"]}')
    page.get_by_role("button", name="Add an attribute to event 1").click()
    page.keyboard.type("source")
    row = page.locator("#rows .map-row").last
    row.get_by_label("Source kind").select_option("value")
    row.locator(".f-target-name").fill("channel")
    page.fill(
        "#preview-records",
        '{"user_id": 7, "plan": "pro", "at": "2026-11-20T10:00:00Z"}\n{"user_id": 8, "plan": "gold", "at": 1}',
    )
    wait_js(page, "document.getElementById('preview-status').textContent.includes('2 records')")
    assert '"event_name": "pro Signed Up"' in page.inner_text("#preview-batches")
    assert '"channel": "source"' in page.inner_text("#preview-batches")
    shots.take(page, "built")
    expected = {
        "identities": {"customer_id": "user_id"},
        "user_attributes": {},
        "events": [
            {
                "name": "{plan} Signed Up",
                "custom_event_type": "user_preference",
                "timestamp": "at",
                "when": {"field": "plan", "in": ["free", "pro"]},
                "attributes": {"channel": {"value": "source"}},
            }
        ],
    }
    assert document_in(page) == expected
    # A second event with an attribute; removing the first renumbers it and keeps its attribute.
    page.get_by_role("button", name="Add an event").click()
    page.keyboard.type("Ping")
    page.get_by_role("button", name="Add an attribute to event 2").click()
    page.keyboard.type("at")
    page.locator("#rows .map-row").last.locator(".f-target-name").fill("seen_at")
    assert document_in(page)["events"][1] == {"name": "Ping", "attributes": {"seen_at": "at"}}
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Remove event 1").click()
    assert document_in(page)["events"] == [{"name": "Ping", "attributes": {"seen_at": "at"}}]
    assert page.locator("#rows .map-row").last.locator(".f-kind").input_value() == "event:0"
    assert page.locator("#event-0 legend").inner_text() == "Event 1"
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.get_by_role("button", name="Remove event 1").click()  # dismissed: nothing happens
    assert len(document_in(page)["events"]) == 1
    page.get_by_role("button", name="Add an event").click()
    page.keyboard.type("{plan} Signed Up")
    page.locator("#event-1").get_by_label("Custom event type").select_option("user_preference")
    page.locator("#event-1").get_by_label("Timestamp field").fill("at")
    page.locator("#event-1").get_by_label("Only when").fill('{"field": "plan", "in": ["free", "pro"]}')
    page.locator("[data-path='events[0].attributes.seen_at']").get_by_role("button", name="Remove").click()
    page.get_by_role("button", name="Remove event 1").click()  # no attribute rows left: no question
    page.get_by_role("button", name="Add an attribute to event 1").click()
    page.keyboard.type("source")
    row = page.locator("#rows .map-row").last
    row.get_by_label("Source kind").select_option("value")
    row.locator(".f-target-name").fill("channel")
    assert document_in(page) == expected
    # Nothing is wider than the phone's screen.
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.get_by_role("button", name="Save mapping").click()
    assert "Mapping saved (version 1)." in page.inner_text(".messages")
    assert Mapping.objects.get(name="signups").rules == document_in(page)


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_64_bit_numbers_survive_the_browser(browser_page, live_server):
    big = 2**60 + 1  # beyond what a JavaScript number keeps exactly
    doc = {
        "mpid": "mp",
        "events": [{"name": "Seen"}],
        "samples": [
            {
                "record": {"mp": big},
                "expect": {
                    "mpid": big,
                    "events": [
                        {"event_type": "custom_event", "data": {"event_name": "Seen", "custom_event_type": "other"}}
                    ],
                },
            }
        ],
    }
    mapping = make_mapping(make_workspace(name="Acme"), doc)
    page = browser_page
    page.goto(live_server.url + edit_url(mapping))
    wait_js(page, "document.getElementById('preview-status').textContent.includes('batch')")
    # The rows step aside rather than round the number, and the preview shows it exactly.
    assert "integers too large for the browser" in page.inner_text("#rows-problem")
    assert page.locator("#rows .f-source").first.is_disabled()
    assert f'"mpid": {big}' in page.inner_text("#preview-batches")
    page.get_by_role("button", name="Save mapping").click()
    assert "No changes (version 1)." in page.inner_text(".messages")
    mapping.refresh_from_db()
    assert mapping.rules == doc


# ------------------------------------------------------------------------------------------ one test record


def send_test(client, workspace, doc: object, records: str, **body):
    url = reverse("feeds:mapping_test_record", args=[workspace.slug])
    return client.post(url, json.dumps({"document": doc, "records": records, **body}), content_type="application/json")


CSV_SAMPLE = "email,plan,order\nann@example.com,pro,o-1\nbob@example.com,free,o-2\n"
TEST_DOC = {
    "identities": {"email": "email"},
    "user_attributes": {"plan": "plan"},
    "events": [{"name": "Order Placed", "attributes": {"order": "order"}}],
}


def test_one_test_record_goes_to_the_sandbox_in_development(staff, sandbox):
    workspace = make_workspace(sandbox, name="Dev Co")
    assert workspace.environment == "development"
    response = send_test(staff, workspace, TEST_DOC, CSV_SAMPLE)
    assert response.status_code == 200
    result = response.json()
    assert result["sent"] and result["delivered"] and result["ref"] == "line 2"
    assert "mParticle accepted it" in result["text"]
    [answer] = result["answers"]
    assert answer["status"] == 202 and answer["outcome"] == "accepted"
    # Exactly the first record, converted by the mapping, over HTTP with the workspace's credentials.
    [batch] = sandbox.batches()
    assert batch["environment"] == "development"
    assert batch["user_identities"] == {"email": "ann@example.com"}
    assert batch["user_attributes"] == {"plan": "pro"}
    [event] = sandbox.events()
    assert event["data"]["event_name"] == "Order Placed" and event["data"]["custom_attributes"] == {"order": "o-1"}
    assert '"event_name": "Order Placed"' in result["batches_text"]
    assert SANDBOX_SECRET not in response.content.decode()


def test_a_test_record_is_refused_outside_development_and_for_bad_input(staff, sandbox):
    workspace = make_workspace(sandbox, name="Prod Co", environment="production")
    result = send_test(staff, workspace, TEST_DOC, CSV_SAMPLE).json()
    assert (
        not result["sent"] and "production" in result["text"] and "only to a workspace in development" in result["text"]
    )
    dev = make_workspace(sandbox, name="Dev Co")
    cases = [
        ({"identities": []}, CSV_SAMPLE, "the mapping is not valid"),
        (TEST_DOC, "", "the sample has no record to send (it is empty)"),
        (TEST_DOC, "email,plan\nann,pro,extra\n", "the sample's first record cannot be read (the row has 3 fields"),
        ({"identities": {"email": "missing"}, "events": [{"name": "X"}]}, CSV_SAMPLE, "the mapping refuses"),
    ]
    for doc, records, reason in cases:
        result = send_test(staff, dev, doc, records).json()
        assert not result["sent"] and reason in result["text"], (reason, result["text"])
    assert sandbox.batches() == []
    assert "unknown format 'xml'" in send_test(staff, dev, TEST_DOC, "a\n1", format="xml").json()["text"]


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_mapping_from_a_pasted_csv_sample_in_a_browser(browser_page, live_server, sandbox, tmp_path):
    """The editor's sample paste and column pick: paste a CSV sample, pick its columns for the rows, watch the
    preview, send one test record to the sandbox, save, reload and find the sample kept."""
    from tests.browser import Shots

    page, shots = browser_page, Shots("mapping-from-sample")
    workspace = make_workspace(sandbox, name="Acme")
    page.goto(live_server.url + reverse("feeds:mapping_new", args=[workspace.slug]))
    page.get_by_label("Name", exact=True).fill("orders")
    assert page.inner_text("#save-state") == "Not saved yet."  # a new mapping
    page.fill("#preview-records", CSV_SAMPLE)
    # The sample's columns are offered in each row.
    wait_js(page, "document.getElementById('sample-columns-note').textContent.includes('email, plan, order')")
    assert page.get_by_label("Read as").input_value() == "auto"
    page.get_by_role("button", name="Add an identity").click()
    row = page.locator("#rows .map-row").last
    pick = row.get_by_label("Pick a column of the sample")
    assert pick.is_visible()
    assert pick.locator("option").all_inner_texts() == ["pick a column…", "email", "plan", "order"]
    pick.select_option("email")
    row.locator(".f-target-identity").select_option("email")
    assert row.locator(".f-source").input_value() == "email"
    page.get_by_role("button", name="Add a user attribute").click()
    row = page.locator("#rows .map-row").last
    row.get_by_label("Pick a column of the sample").select_option("plan")
    row.locator(".f-target-name").fill("plan")
    assert document_in(page)["identities"] == {"email": "email"}
    assert document_in(page)["user_attributes"] == {"plan": "plan"}
    # The preview follows: one batch per row of the sample.
    wait_js(page, "document.getElementById('preview-batches').textContent.includes('bob@example.com')")
    assert '"plan": "pro"' in page.inner_text("#preview-batches")
    assert "2 records → 2 batches" in page.inner_text("#preview-status")
    # Warnings beside the sample, apart from errors (there are none).
    assert "CSV values are all text" in page.inner_text("#sample-warnings")
    assert page.locator("#sample-errors-wrap").is_hidden()
    assert "CSV values are all text" in page.inner_text("#warning-list")
    assert "CSV values" not in page.inner_text("#problem-list")
    shots.take(page, "picked")

    # A row that cannot be read is an error beside the sample; the good rows are still previewed.
    page.fill("#preview-records", CSV_SAMPLE + "cat@example.com\n")
    wait_js(page, "!document.getElementById('sample-errors-wrap').hidden")
    assert "sample, line 4: the row has 1 fields, the header has 3" in page.inner_text("#sample-errors")
    assert "line 4" not in page.inner_text("#sample-warnings")
    shots.take(page, "sample-error")
    page.fill("#preview-records", CSV_SAMPLE)
    wait_js(page, "document.getElementById('sample-errors-wrap').hidden")

    # One test record to the workspace's development environment: the sandbox gets the first row.
    page.get_by_role("button", name="Send one test record").click()
    wait_js(page, "document.getElementById('test-record-status').textContent.includes('accepted')")
    assert "HTTP 202" in page.inner_text("#test-record-answer")
    [batch] = sandbox.batches()
    assert batch["user_identities"] == {"email": "ann@example.com"} and batch["environment"] == "development"
    assert SANDBOX_SECRET not in page.content()
    shots.take(page, "test-record")

    # Save, reload: the sample is kept with the mapping, its columns offered again; nothing is unsaved.
    page.get_by_role("button", name="Save mapping").click()
    assert "Mapping saved (version 1)." in page.inner_text(".messages")
    mapping = Mapping.objects.get(name="orders")
    assert mapping.sample == CSV_SAMPLE and mapping.rules["identities"] == {"email": "email"}
    page.reload()
    assert page.input_value("#preview-records") == CSV_SAMPLE
    wait_js(page, "document.getElementById('preview-status').textContent.includes('batch')")
    assert page.inner_text("#save-state") == ""
    assert "not saved yet" not in page.inner_text("body")
    pick = page.locator("#row-identities-email").get_by_label("Pick a column of the sample")
    assert pick.input_value() == "email"
    # "not saved yet" only while something differs from what is stored.
    page.locator("#row-user_attributes-plan").get_by_label("upper").check()
    wait_js(page, "document.getElementById('save-state').textContent === 'Not saved yet.'")
    wait_js(page, "document.getElementById('problems-source').textContent.includes('not saved yet')")
    page.locator("#row-user_attributes-plan").get_by_label("upper").uncheck()
    wait_js(page, "document.getElementById('save-state').textContent === ''")
    shots.take(page, "kept")

    # An uploaded sample file (NDJSON): read into the box, its format from its name.
    upload = tmp_path / "more.ndjson"
    upload.write_text('{"email": "dan@example.com", "plan": "pro", "address": {"city": "Oslo"}}\n')
    page.locator("#sample-file").set_input_files(str(upload))
    wait_js(page, "document.getElementById('sample-columns-note').textContent.includes('address.city')")
    assert page.get_by_label("Read as").input_value() == "ndjson"
    wait_js(page, "document.getElementById('preview-batches').textContent.includes('dan@example.com')")

    # A production workspace never takes a test record: refused, with the reason, nothing sent.
    prod = make_workspace(sandbox, name="Prod", environment="production")
    page.goto(live_server.url + reverse("feeds:mapping_new", args=[prod.slug]))
    page.fill("#preview-records", CSV_SAMPLE)
    page.get_by_role("button", name="Add an identity").click()
    page.locator("#rows .map-row").last.get_by_label("Pick a column of the sample").select_option("email")
    page.get_by_role("button", name="Send one test record").click()
    wait_js(page, "document.getElementById('test-record-status').textContent.startsWith('Not sent')")
    assert "production" in page.inner_text("#test-record-status")
    assert len(sandbox.batches()) == 1
    shots.take(page, "refused-in-production")
