"""Text nobody cleaned — names, descriptions, constants, records, servers' answers — written into Markdown, CSV,
e-mail headers, webhook bodies and logs comes out as text: escaped, or refused where it is typed in."""

from __future__ import annotations

import copy
import csv
import io
import json
import logging

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse
from markdown_it import MarkdownIt

from feeds import alerts, datasheet
from feeds.logfilters import EscapeControlCharacters
from feeds.models import AlertEvent, Mapping, RejectedRecord, SyncJob, Workspace
from tests.helpers import make_job, make_mapping, make_staff, make_workspace, purchase_rows, run_job, write_csv

pytestmark = pytest.mark.django_db

HOSTILE = "<img src=x onerror=alert(1)> *bold* [link](https://evil.example) `code | pipe ``` ![i](x) <b>&amp;"


def render(text: str) -> str:
    """The Markdown as GitHub renders it (CommonMark with tables, raw HTML passed through)."""
    return MarkdownIt("commonmark", {"html": True}).enable("table").render(text)


def hostile_document() -> dict:
    return {
        "description": f"{HOSTILE}\n# Injected heading\n- injected item\n1. injected\n---",
        "identities": {"customer_id": "id"},
        "user_attributes": {
            f"name{HOSTILE}": {"value": HOSTILE},
            "tick`s": {"field": f"f`ie|ld{HOSTILE}"},
        },
        "events": [
            {
                "name": {"value": f"Ordered {HOSTILE}"},
                "custom_event_type": "other",
                "attributes": {"a": {"value": "<script>alert(2)</script>"}},
            }
        ],
    }


def test_the_markdown_data_sheet_turns_nothing_untrusted_into_markup():
    sheet = datasheet.build(hostile_document())
    assert sheet.errors == []
    text = datasheet.to_markdown(sheet, title=f"Feed data sheet: {HOSTILE}\n# Title injection",
                                 details=[f"Workspace: Acme\n## {HOSTILE}"])  # fmt: skip
    html = render(text)
    # No tag, link, image or emphasis came from the text: only the sheet's own structure.
    for tag in ("<img", "<b>", "<script", "<a ", "<em>", "<strong>", "<hr", "<ol", "<h1>Injected"):
        assert tag not in html, tag
    assert html.count("<h1>") == 1 and "<h2>Identities</h2>" in html
    assert "<h1>Feed data sheet: &lt;img src=x onerror=alert(1)&gt;" in html  # shown, as text
    assert "Injected heading" in html and "<h1>Injected heading" not in html
    # Every table row still has its cells (no pipe from a name or a value split one).
    for table in html.split("<table>")[1:]:
        rows = table.split("</table>")[0].split("<tr>")[1:]
        widths = {row.count("<td") + row.count("<th") for row in rows}
        assert len(widths) == 1, widths


def test_names_refuse_line_breaks_and_control_characters():
    for name in ("Acme\nInjected", "Acme\r", "Acme\x1b[31m", "Acme\u202egnp.exe", "Acme\u2028x", " Acme", "Acme\t"):
        with pytest.raises(ValidationError):
            Workspace(name=name, pod="partner").full_clean(exclude=["slug"])
        with pytest.raises(ValidationError):
            Mapping(name=name, rules={}).clean_fields(exclude=["workspace", "rules"])
        with pytest.raises(ValidationError):
            SyncJob(name=name).clean_fields(exclude=["workspace", "mapping", "source_config"])
    Workspace(name="Café Zürich – 東京 👩‍💻", pod="partner").full_clean(exclude=["slug"])


def test_the_staff_page_refuses_a_name_with_a_line_break(client):
    client.force_login(make_staff("otto"))
    response = client.post(
        reverse("feeds:workspace_new"),
        {"name": "Acme\n# Injected", "pod": "partner", "environment": "development", "rate_limit": "270"},
    )
    assert response.status_code == 200 and not Workspace.objects.exists()
    assert "line breaks" in response.content.decode()


def test_an_alert_about_a_workspace_named_badly_still_goes_out_on_one_line(tmp_path, settings, mailoutbox):
    # A name stored before names were checked (or written to the database by hand).
    settings.MPFEED_ALERT_EMAILS = ["ops@partner.example"]
    workspace = make_workspace(name="Acme")
    Workspace.objects.filter(pk=workspace.pk).update(name="Acme\nBcc: victim@example.com\r\n<b>x</b>")
    workspace.refresh_from_db()
    run_job(make_job(workspace, tmp_path / "missing.csv"))
    [mail] = mailoutbox
    assert "\n" not in mail.subject and "\r" not in mail.subject
    assert mail.subject.startswith("[mpfeed] Acme Bcc: victim@example.com <b>x</b>: ")
    assert mail.to == ["ops@partner.example"] and mail.bcc == []
    event = AlertEvent.objects.get()
    body = json.loads(alerts.webhook_body(event, workspace))
    assert body["workspace"]["name"] == workspace.name  # JSON keeps the text exactly, escaped by the encoder


def test_log_lines_cannot_be_forged_by_a_name_or_a_record():
    record = logging.LogRecord(
        "feeds", logging.INFO, __file__, 1, "run of %s: %s", ("Acme\n2026 ERROR x", "\x1b[2J"), None
    )
    EscapeControlCharacters().filter(record)
    assert record.getMessage() == "run of Acme\\n2026 ERROR x: \\x1b[2J"


def test_the_site_logs_escape_control_characters(caplog, settings):
    # The handler of the site's LOGGING has the filter (and the token redaction).
    filters = settings.LOGGING["handlers"]["console"]["filters"]
    assert filters == ["redact_link_tokens", "escape_controls"]


def test_csv_exports_defuse_formulas_after_spaces_and_full_width_signs(client, sandbox, tmp_path):
    workspace = make_workspace(sandbox)
    run = run_job(make_job(workspace, write_csv(tmp_path / "a.csv", purchase_rows(1)), mapping=make_mapping(workspace)))
    for ref in ("  =1+1", "＝HYPERLINK(1)", "\n=1", "-2", "ok"):
        RejectedRecord.objects.create(run=run, stage=RejectedRecord.Stage.SOURCE, ref=ref, reason="r", excerpt="")
    client.force_login(make_staff("otto"))
    body = b"".join(client.get(reverse("feeds:run_rejects_csv", args=[run.pk])).streaming_content).decode()
    refs = [row["ref"] for row in csv.DictReader(io.StringIO(body))]
    assert refs == ["'  =1+1", "'＝HYPERLINK(1)", "'\n=1", "'-2", "ok"]


def test_the_markdown_download_of_a_hostile_mapping(client):
    workspace = make_workspace(name="Acme")
    mapping = make_mapping(workspace, copy.deepcopy(hostile_document()), name="orders")
    client.force_login(make_staff("otto"))
    text = client.get(reverse("feeds:datasheet_md", args=[workspace.slug, mapping.pk])).content.decode()
    html = render(text)
    assert "<img" not in html and "<script" not in html and "<a " not in html


def test_the_mapping_editor_and_load_mapping_refuse_a_name_with_control_characters(client, tmp_path):
    from django.core.management import CommandError, call_command

    workspace = make_workspace(name="Acme")
    client.force_login(make_staff("otto"))
    document = json.dumps({"identities": {"customer_id": "id"}})
    for name in ("orders\n# injected", "orders\u202egnp"):
        response = client.post(
            reverse("feeds:mapping_new", args=[workspace.slug]), {"name": name, "document": document}
        )
        assert response.status_code == 200 and not Mapping.objects.exists(), name
    path = tmp_path / "m.json"
    path.write_text(document)
    with pytest.raises(CommandError, match="--name"):
        call_command("load_mapping", "--workspace", "Acme", "--name", "a\nb", str(path), stdout=io.StringIO())
    assert not Mapping.objects.exists()


def test_urls_and_addresses_in_the_markdown_are_code_not_links():
    # GitHub's Markdown links bare URLs, www. names and e-mail addresses by itself (its autolink extension).
    doc = hostile_document()
    doc["description"] = "Sign in at https://evil.example/login or www.evil.example, write to boss@evil.example"
    doc["user_attributes"]["site"] = {"value": "http://10.0.0.1/admin"}
    text = datasheet.to_markdown(datasheet.build(doc), title="T")
    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    plain = " ".join(
        child.content
        for token in tokens
        if token.type == "inline"
        for child in token.children or []
        if child.type == "text"
    )
    for link in ("https://", "http://", "www.", "@evil.example"):
        assert link not in plain, link
    assert "`https://evil.example/login`" in text and "`boss@evil.example`" in text
