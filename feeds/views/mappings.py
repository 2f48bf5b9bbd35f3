"""The mapping editor (rows of source field → target, event blocks, the JSON document, a live preview), the
JSON export and the feed data sheet.

The document is the truth: the form posts the JSON textarea, which static/feeds/mapping.js keeps in sync with
the rows. The rows are rendered here too, so that a refused save shows each error next to the row that caused
it: every message that starts with a rule's path ("identities.email: ...", "events[0].attributes.amount: ...")
is placed under that rule's row or event block, and all of them are listed at the top.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.text import slugify

from feeds import actions
from feeds import datasheet as sheets
from feeds import mapping as mapping_rules
from feeds.forms import MappingForm
from feeds.mapping.specs import TRANSFORMS, VALUE_TYPES
from feeds.mapping.timestamps import TIMESTAMP_FORMATS
from feeds.mapping.validation import SUPPORTED_EVENT_TYPES
from feeds.models import Mapping, MappingConflict, OutputChanged, SampleFormat, changes_digest
from feeds.mparticle import schema
from feeds.preview import SAMPLE_FORMATS, Preview, Sample, preview_job, preview_sample, read_sample
from feeds.views.access import get_job, get_mapping, get_workspace, may, parse_id, staff_required

JOB_PREVIEW_LIMIT = 10
ROW_DOC_KEYS = ("record_key", "identities", "mpid", "user_attributes", "events")
BLOCK_RULE_KEYS = ("event_type", "name", "screen_name", "custom_event_type", "timestamp", "when", "attributes")


# ------------------------------------------------------------------------------------------ editor state


@dataclass
class Message:
    level: str  # "error", "warning" or "rejected"
    text: str
    anchor: str = ""  # the id of the row or event block it was placed under


@dataclass
class Row:
    """One value rule as the editor shows it: source → target, with its type and transforms."""

    path: str  # the rule's path in messages: "identities.email", "events[0].attributes.amount"
    kind: str  # identity, user_attribute, event, mpid, record_key
    target: str = ""
    event: int | None = None  # for event attributes
    source_kind: str = "field"  # "field" or "value" (a constant)
    source: str = ""
    const_json: bool = False  # a constant that is not text, shown (and read back) as JSON
    type: str = "auto"
    transforms: tuple[str, ...] = ()
    extras: list[str] = field(default_factory=list)  # keys of the spec that only the JSON shows
    spec: object = None
    dom_id: str = ""
    messages: list[Message] = field(default_factory=list)

    @property
    def spec_json(self) -> str:
        return json.dumps(self.spec, ensure_ascii=False)

    @property
    def has_errors(self) -> bool:
        return any(m.level != "warning" for m in self.messages)


@dataclass
class EventBlock:
    """One event rule: its type, name, custom event type, timestamp and condition (attributes are rows)."""

    index: int
    rule: dict
    event_type: str = "custom_event"
    name: str = ""
    name_json_only: bool = False
    custom_event_type: str = ""
    type_json_only: bool = False
    timestamp_field: str = ""
    timestamp_format: str = ""
    timestamp_extras: list[str] = field(default_factory=list)
    when: str = ""
    product_action: str = ""
    extras: list[str] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)

    @property
    def path(self) -> str:
        return f"events[{self.index}]"

    @property
    def number(self) -> int | str:
        return self.index + 1 if self.index >= 0 else ""

    @property
    def dom_id(self) -> str:
        return f"event-{self.index}" if self.index >= 0 else "event-__n__"  # (the template for new blocks)

    @property
    def rule_json(self) -> str:
        return json.dumps(self.rule, ensure_ascii=False)

    @property
    def has_errors(self) -> bool:
        return any(m.level != "warning" for m in self.messages)


@dataclass
class EditorState:
    rows: list[Row] = field(default_factory=list)
    events: list[EventBlock] = field(default_factory=list)
    json_only: list[str] = field(default_factory=list)  # top-level keys only the JSON shows
    problem: str = ""  # why the rows cannot show this document ("" when they can)
    general: list[Message] = field(default_factory=list)  # messages that belong to no row

    @property
    def ok(self) -> bool:
        return not self.problem

    def paths(self) -> dict[str, Row | EventBlock]:
        return {**{b.path: b for b in self.events}, **{r.path: r for r in self.rows}}


class _NotShown(ValueError):
    """The rows cannot show this part of the document (the JSON still can)."""


def _row(path: str, kind: str, target: str, spec: object, event: int | None = None) -> Row:
    row = Row(path=path, kind=kind, target=target, event=event, spec=spec)
    if isinstance(spec, str):
        row.source = spec
        return row
    if not isinstance(spec, dict):
        raise _NotShown(f"{path}: not a field name or a value object")
    if "value" in spec and "field" not in spec:
        row.source_kind = "value"
        value = spec["value"]
        row.const_json = not isinstance(value, str)
        row.source = json.dumps(value, ensure_ascii=False) if row.const_json else value
    else:
        if not isinstance(spec.get("field", ""), str):
            raise _NotShown(f"{path}.field: not a field name")
        row.source = spec.get("field", "")
    kind_name = spec.get("type", "auto")
    transforms = spec.get("transform", [])
    transforms = [transforms] if isinstance(transforms, str) else transforms
    if not isinstance(kind_name, str) or not isinstance(transforms, list):
        raise _NotShown(f"{path}: type or transform the rows cannot show")
    if not all(isinstance(t, str) for t in transforms):
        raise _NotShown(f"{path}.transform: not a list of names")
    row.type = kind_name
    row.transforms = tuple(transforms)
    used = {"type", "transform", "value" if row.source_kind == "value" else "field"}
    row.extras = [k for k in spec if k not in used]
    return row


def _block(index: int, rule: object) -> tuple[EventBlock, list[Row]]:
    where = f"events[{index}]"
    if not isinstance(rule, dict):
        raise _NotShown(f"{where}: not an object")
    block = EventBlock(index=index, rule=rule)
    event_type = rule.get("event_type", "custom_event")
    if event_type not in SUPPORTED_EVENT_TYPES:
        raise _NotShown(f"{where}.event_type: {event_type!r} is not one the editor knows")
    block.event_type = event_type
    name = rule.get("screen_name", rule.get("name")) if event_type == "screen_view" else rule.get("name")
    if isinstance(name, str) or name is None:
        block.name = name or ""
    else:
        block.name_json_only = True
        block.name = json.dumps(name, ensure_ascii=False)
    kind = rule.get("custom_event_type", "")
    if isinstance(kind, str):
        block.custom_event_type = kind
    else:
        block.type_json_only = True
        block.custom_event_type = json.dumps(kind, ensure_ascii=False)
    timestamp = rule.get("timestamp")
    if isinstance(timestamp, str):
        block.timestamp_field = timestamp
    elif isinstance(timestamp, dict) and isinstance(timestamp.get("field"), str):
        block.timestamp_field = timestamp["field"]
        fmt = timestamp.get("format", "")
        if not isinstance(fmt, str):
            raise _NotShown(f"{where}.timestamp.format: not text")
        block.timestamp_format = fmt
        block.timestamp_extras = [k for k in timestamp if k not in ("field", "format")]
    elif timestamp is not None:
        raise _NotShown(f"{where}.timestamp: not a field name or an object with a field")
    if "when" in rule:
        block.when = json.dumps(rule["when"], ensure_ascii=False)
    if "product_action" in rule:
        block.product_action = json.dumps(rule["product_action"], indent=2, ensure_ascii=False)
    block.extras = [k for k in rule if k not in BLOCK_RULE_KEYS and k != "product_action"]
    attributes = rule.get("attributes", {})
    if not isinstance(attributes, dict):
        raise _NotShown(f"{where}.attributes: not an object")
    rows = [_row(f"{where}.attributes.{n}", "event", n, spec, index) for n, spec in attributes.items()]
    return block, rows


def dom_id(path: str, taken: set[str]) -> str:
    """An id for a rule's row: "identities.email" → "row-identities-email" (unique on the page)."""
    text = re.sub("-+", "-", "row-" + "".join(c if c.isascii() and (c.isalnum() or c in "_$") else "-" for c in path))
    text = text.rstrip("-")
    candidate, n = text, 2
    while candidate in taken:
        candidate, n = f"{text}-{n}", n + 1
    taken.add(candidate)
    return candidate


def editor_state(doc: object) -> EditorState:
    """The rows and event blocks that show a mapping document, or why they cannot."""
    state = EditorState()
    if not isinstance(doc, dict):
        state.problem = "the document is not a JSON object"
        return state
    try:
        if "record_key" in doc:
            if not isinstance(doc["record_key"], str):
                raise _NotShown("record_key: not a field name")
            state.rows.append(Row(path="record_key", kind="record_key", source=doc["record_key"]))
        identities = doc.get("identities", {})
        if not isinstance(identities, dict):
            raise _NotShown("identities: not an object")
        state.rows += [_row(f"identities.{key}", "identity", key, spec) for key, spec in identities.items()]
        if "mpid" in doc:
            state.rows.append(_row("mpid", "mpid", "", doc["mpid"]))
        attributes = doc.get("user_attributes", {})
        if not isinstance(attributes, dict):
            raise _NotShown("user_attributes: not an object")
        state.rows += [_row(f"user_attributes.{n}", "user_attribute", n, spec) for n, spec in attributes.items()]
        events = doc.get("events", [])
        if not isinstance(events, list):
            raise _NotShown("events: not a list")
        for i, rule in enumerate(events):
            block, rows = _block(i, rule)
            state.events.append(block)
            state.rows += rows
    except _NotShown as e:
        return EditorState(problem=str(e))
    taken: set[str] = set()
    for row in state.rows:
        row.dom_id = dom_id(row.path, taken)
    state.json_only = [k for k in doc if k not in ROW_DOC_KEYS]
    return state


def rule_path(text: str, paths) -> str | None:
    """The longest rule path that `text` starts with ("events[0].attributes.amount: ..." → that attribute's
    path rather than "events[0]"), or None."""
    matches = [p for p in paths if text.startswith(p) and (len(text) == len(p) or text[len(p)] in ":.[ ")]
    return max(matches, key=len, default=None)


def place_messages(state: EditorState, found: list[tuple[Message, str]]) -> None:
    """Put each message under the row or event block whose rule path its text (the second of each pair: a
    refused record's reason, without the record's ref) starts with; the rest go to state.general."""
    targets = state.paths()
    for message, text in found:
        where = rule_path(text, targets)
        if where is None:
            state.general.append(message)
        else:
            targets[where].messages.append(message)
            message.anchor = targets[where].dom_id


def preview_messages(preview: Preview) -> list[tuple[Message, str]]:
    """The preview's errors, warnings and refused records as (message, the text that names the rule)."""
    out = [(Message("error", e), e) for e in preview.errors]
    out += [(Message("warning", w), w) for w in preview.warnings]
    out += [(Message("rejected", f"{r['ref']}: {r['reason']}"), r["reason"] or "") for r in preview.rejected]
    return out


def pretty(doc: object) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False)


def batches_text(preview: Preview) -> str:
    """The preview's batches as text; headed by their endpoint when any goes elsewhere than /bulkevents (a
    historical or auto job)."""
    sections = preview.by_endpoint()
    if not sections:
        return ""
    if [path for path, _ in sections] == [schema.BULK_PATH]:
        return pretty(preview.batches)
    return "\n\n".join(f"// to {path} ({len(batches)} batch(es))\n{pretty(batches)}" for path, batches in sections)


def sample_records_text(doc: object) -> str:
    """The golden samples' records, as the preview's first sample records."""
    if not isinstance(doc, dict) or not isinstance(doc.get("samples"), list):
        return ""
    records = [s["record"] for s in doc["samples"] if isinstance(s, dict) and isinstance(s.get("record"), dict)]
    return pretty(records) if records else ""


# ------------------------------------------------------------------------------------------------ editor


def _editor(request, workspace, mapping: Mapping | None):
    initial_doc = mapping.rules if mapping else {"identities": {}, "user_attributes": {}, "events": []}
    kept = bool(mapping and mapping.sample)
    form = MappingForm(
        request.POST or None,
        workspace=workspace,
        mapping=mapping,
        initial={
            "name": mapping.name if mapping else "default",
            "document": pretty(initial_doc),
            "version": mapping.version if mapping else None,
            # The sample kept with the mapping; else the golden samples' records (kept once saved).
            "sample": mapping.sample if mapping and kept else sample_records_text(initial_doc),
            "sample_format": mapping.sample_format if mapping and kept else SampleFormat.AUTO,
        },
    )
    found: list[Message] = []
    changes: list[str] = []
    doc: object = initial_doc
    if request.method == "POST":
        if form.is_valid():
            doc = form.cleaned_data["document"]
            try:
                saved, changed = _save(workspace, mapping, form)
            except mapping_rules.MappingError as e:
                found = [Message("error", text) for text in e.errors]
            except OutputChanged as e:
                changes = e.changes
            except MappingConflict as e:
                form.add_error(None, str(e))
            else:
                text = (
                    f"Mapping saved (version {saved.version})." if changed else f"No changes (version {saved.version})."
                )
                messages.success(request, text)
                return redirect("feeds:mapping_edit", slug=workspace.slug, mapping_id=saved.pk)
        else:
            try:
                doc = json.loads(request.POST.get("document", ""))
            except (json.JSONDecodeError, RecursionError):
                doc = None
    else:
        found = [Message("warning", w) for w in mapping_rules.warnings(mapping.rules)] if mapping else []

    state = editor_state(doc)
    if not state.ok and request.method == "POST" and "document" in form.errors:
        state.problem = "the JSON does not parse"
    place_messages(state, [(m, m.text) for m in found])
    jobs = list(workspace.jobs.all())
    for job in jobs:
        job.remote_source = job.source_is_remote
    sample_text = form["sample"].value() or ""
    sample_fmt = form["sample_format"].value() or SampleFormat.AUTO
    sample = read_sample(sample_text, sample_fmt if sample_fmt in SAMPLE_FORMATS else "auto")
    context = {
        "workspace": workspace,
        "mapping": mapping,
        "form": form,
        "state": state,
        "found": found,
        "found_warnings": [m for m in found if m.level == "warning"],
        "changes": changes,
        # The checkbox accepts these changes only: a later edit that changes other outputs asks again.
        "changes_digest": changes_digest(changes) if changes else "",
        "jobs": jobs,
        "job_limit": JOB_PREVIEW_LIMIT,
        "sample": sample,
        "sample_kept": kept,
        "sample_formats": SampleFormat.choices,
        # What the page holds is what is stored: the browser says "not saved yet" once it differs.
        "saved": request.method != "POST" and mapping is not None,
        "choices": _choices(),
        "blank_row": Row(path="", kind="user_attribute", dom_id="row-__n__"),
        "blank_block": EventBlock(index=-1, rule={}),
    }
    return render(request, "feeds/mapping_edit.html", context)


def _choices() -> dict:
    return {
        "identity_keys": schema.IDENTITY_KEYS,
        "reserved": schema.RESERVED_USER_ATTRIBUTES,
        "value_types": VALUE_TYPES,
        "transforms": TRANSFORMS,
        "event_types": SUPPORTED_EVENT_TYPES,
        "custom_event_types": schema.CUSTOM_EVENT_TYPES,
        "timestamp_formats": TIMESTAMP_FORMATS,
        "product_actions": schema.PRODUCT_ACTIONS,
    }


def _save(workspace, mapping: Mapping | None, form: MappingForm) -> tuple[Mapping, bool]:
    """Store the posted document (and name): Mapping.update_rules, with the version the editor was opened at and
    the changes staff accepted. Raises MappingError, OutputChanged or MappingConflict."""
    data = form.cleaned_data
    target = Mapping(workspace=workspace) if mapping is None else Mapping.objects.get(pk=mapping.pk)
    target.name = data["name"]
    accepted: bool | str = (data.get("changes_digest") or "") if data.get("accept_changes") else False
    sample, fmt = data.get("sample") or "", data.get("sample_format") or SampleFormat.AUTO
    if mapping is None:
        target.sample, target.sample_format = sample, fmt  # stored with the new mapping's first version
    changed = target.update_rules(data["document"], version=data.get("version") or None, accept_changes=accepted)
    # The golden samples' records, shown where no sample is kept, are not a sample staff gave: not kept.
    offered = not mapping.sample and sample == sample_records_text(mapping.rules) if mapping else False
    if mapping is not None and not offered:
        changed = target.keep_sample(sample, fmt) or changed
    return target, changed


@staff_required(read="add_mapping", write="add_mapping")
def mapping_new(request, slug):
    return _editor(request, get_workspace(slug), None)


@staff_required(read="view_mapping", write="change_mapping")
def mapping_edit(request, slug, mapping_id):
    workspace = get_workspace(slug)
    return _editor(request, workspace, get_mapping(workspace, mapping_id))


# ----------------------------------------------------------------------------------------------- preview


def _json_body(request) -> dict | None:
    try:
        body = json.loads(request.body)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        return None
    return body if isinstance(body, dict) else None


def _sample_of(body: dict) -> Sample:
    """The sample a preview request carries: "records" (the pasted text) read as "format"."""
    text = body.get("records", "")
    if not isinstance(text, str):
        text = json.dumps(text)
    fmt = body.get("format") or "auto"
    return read_sample(text, fmt if isinstance(fmt, str) else repr(fmt))


@staff_required(write="view_mapping")
def mapping_preview(request, slug):
    """JSON in: {"document": {...}, "records": "<pasted text>"} or {"document": {...}, "job": id}.
    JSON out: the preview, and the messages keyed by the rule path of the row they belong to."""
    workspace = get_workspace(slug)
    body = _json_body(request)
    if body is None:
        return JsonResponse({"error": "send a JSON object"}, status=400)
    doc = body.get("document")
    from_job = body.get("job") not in (None, "")
    sample = Sample() if from_job else _sample_of(body)  # read (its columns, its problems) even for a bad document
    errors = mapping_rules.validate(doc)
    if errors or not isinstance(doc, dict):  # (validate refuses anything but an object)
        preview = Preview(errors=errors)  # never read a source for a document that cannot be used
    elif from_job:
        # Reading a job's source is the job page's preview: it needs the permission to view jobs too.
        if not may(request, "view_syncjob"):
            raise PermissionDenied("Previewing a job's records needs the permission to view sync jobs.")
        given = body["job"]
        job_id = parse_id(str(given)) if isinstance(given, (str, int)) and not isinstance(given, bool) else None
        if job_id is None:
            return JsonResponse({"error": "job: not a job id"}, status=400)
        preview = preview_job(get_job(workspace, job_id), doc, limit=JOB_PREVIEW_LIMIT)
    else:
        preview = preview_sample(
            doc, sample, environment=workspace.environment, id_salt=str(workspace.pk), data_plan=workspace.data_plan
        )

    state = editor_state(doc)
    place_messages(state, preview_messages(preview))
    by_path: dict[str, list[dict]] = {}
    targets: list[Row | EventBlock] = [*state.rows, *state.events]
    for target in targets:
        if target.messages:
            by_path[target.path] = [{"level": m.level, "text": m.text} for m in target.messages]
    samples = []
    if not preview.errors and isinstance(doc, dict) and doc.get("samples"):
        samples = [{"ok": r.ok, "text": str(r)} for r in mapping_rules.check_samples(doc)]
    result = preview.as_dict()
    result.update(
        input_errors=sample.errors,
        input_warnings=sample.warnings,
        sample=sample.as_dict(),
        rejected=[{**r, "path": rule_path(r["reason"] or "", by_path)} for r in preview.rejected],
        by_path=by_path,
        samples=samples,
        # Pretty text made here: the browser's JSON numbers would round a 64-bit mpid.
        batches_text=batches_text(preview),
    )
    return JsonResponse(result)


@staff_required(write="change_mapping")
def mapping_test_record(request, slug):
    """JSON in: {"document": {...}, "records": "<pasted text>", "format": "auto"}. Sends the sample's first record,
    converted by the document, to the workspace's Events API — in development only (actions.send_test_record).
    JSON out: what happened, the batches sent and mParticle's answer to each."""
    workspace = get_workspace(slug)
    body = _json_body(request)
    if body is None:
        return JsonResponse({"error": "send a JSON object"}, status=400)
    done = actions.send_test_record(workspace, body.get("document"), _sample_of(body))
    return JsonResponse(
        {
            "sent": bool(done.sent),
            "delivered": done.delivered,
            "text": done.text,
            "ref": done.ref,
            "answers": [
                {
                    "path": s.path,
                    "status": s.answer.status,
                    "outcome": s.answer.outcome.value,
                    "describe": s.answer.describe(),
                    "body": s.answer.excerpt,
                }
                for s in done.sent
            ],
            "batches_text": "\n\n".join(f"// to {s.path}\n{pretty(s.batches)}" for s in done.sent),
        }
    )


# ------------------------------------------------------------------------------------- export, data sheet


def _filename(mapping: Mapping, what: str, ext: str) -> str:
    return f"{mapping.workspace.slug}-{slugify(mapping.name) or 'mapping'}-v{mapping.version}{what}.{ext}"


@staff_required(read="view_mapping")
def mapping_export(request, slug, mapping_id):
    mapping = get_mapping(get_workspace(slug), mapping_id)
    response = HttpResponse(pretty(mapping.rules) + "\n", content_type="application/json; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{_filename(mapping, "", "json")}"'
    return response


def _sheet_details(mapping: Mapping) -> list[str]:
    workspace = mapping.workspace
    return [
        f"Workspace: {workspace.name} (environment {workspace.environment})",
        f"Mapping: {mapping.name}, version {mapping.version}",
        f"Updated: {timezone.localtime(mapping.updated_at):%Y-%m-%d %H:%M %Z}",
    ]


def _sheet_title(mapping: Mapping) -> str:
    return f"Feed data sheet: {mapping.workspace.name}"


@staff_required(read="view_mapping")
def datasheet(request, slug, mapping_id):
    mapping = get_mapping(get_workspace(slug), mapping_id)
    context = {
        "workspace": mapping.workspace,
        "mapping": mapping,
        "sheet": sheets.build(mapping.rules, data_plan=mapping.workspace.data_plan),
        "title": _sheet_title(mapping),
        "details": _sheet_details(mapping),
    }
    return render(request, "feeds/datasheet.html", context)


@staff_required(read="view_mapping")
def datasheet_markdown(request, slug, mapping_id):
    mapping = get_mapping(get_workspace(slug), mapping_id)
    sheet = sheets.build(mapping.rules, data_plan=mapping.workspace.data_plan)
    text = sheets.to_markdown(sheet, title=_sheet_title(mapping), details=_sheet_details(mapping))
    response = HttpResponse(text, content_type="text/markdown; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{_filename(mapping, "-datasheet", "md")}"'
    return response
