"""Preview: what a run would make of a few records — the batches on each endpoint and every refusal — without
sending anything. It is the run's own pipeline (feeds.pipeline), kept in memory: a record the run would refuse
(e.g. too recent for the historical endpoint) is shown refused with the run's reason."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from itertools import islice

import orjson

from feeds import mapping as mapping_rules
from feeds import pipeline
from feeds.models import SyncJob
from feeds.sources import Item, SourceError
from feeds.sources.build import build_source
from feeds.sources.files import read_text
from feeds.words import json_excerpt, kind

DEFAULT_LIMIT = 20
SAMPLE_FORMATS = ("auto", "csv", "ndjson", "json")  # the formats a pasted sample may be read as
MAX_SAMPLE_RECORDS = 100  # previewed of a sample; the rest are left out, with a warning
MAX_COLUMNS = 300  # offered to pick from
COLUMN_DEPTH = 4  # nested objects walked for their dotted field names


@dataclass
class Preview:
    errors: list[str] = field(default_factory=list)  # the mapping itself is not valid
    warnings: list[str] = field(default_factory=list)
    batches: list[dict] = field(default_factory=list)
    endpoints: list[str] = field(default_factory=list)  # the endpoint path each batch goes to
    rejected: list[dict] = field(default_factory=list)  # {"ref", "reason", "excerpt"}
    records: int = 0

    def as_dict(self) -> dict:
        return {
            "errors": self.errors,
            "warnings": self.warnings,
            "records": self.records,
            "batches": self.batches,
            "endpoints": self.endpoints,
            "rejected": self.rejected,
        }

    def by_endpoint(self) -> list[tuple[str, list[dict]]]:
        """The batches per endpoint, in the order the run would send them."""
        out: dict[str, list[dict]] = {}
        for path, batch in zip(self.endpoints, self.batches, strict=True):
            out.setdefault(path, []).append(batch)
        return list(out.items())


def preview_items(
    rules: dict,
    items: Iterable[Item],
    *,
    environment: str = "development",
    id_salt: str = "preview",
    endpoint_mode: str = SyncJob.EndpointMode.REALTIME,
    data_plan: dict | None = None,
) -> Preview:
    """What a run of `rules` in `endpoint_mode` makes of `items`. With the workspace's id as `id_salt`, events get
    the `source_message_id`s a sync of the same records sends (batch ids are placeholders: a run's depend on the
    run and slice)."""
    result = Preview(errors=mapping_rules.validate(rules))
    warnings = getattr(mapping_rules, "warnings", None)
    if result.errors:
        return result
    if warnings is not None:
        result.warnings = warnings(rules)
    try:
        converter = mapping_rules.compile_mapping(rules, id_salt=id_salt, data_plan=data_plan)
    except mapping_rules.MappingError as e:  # the workspace's data plan setting
        result.errors = e.errors
        return result
    items = list(items)
    result.records = len(items)
    aside, refused = pipeline.set_aside(converter, items, endpoint_mode, int(time.time() * 1000))
    numbered = 0

    def ids(count: int, *_) -> list[str]:
        nonlocal numbered
        numbered += count
        return [f"preview-{i}" for i in range(numbered - count, numbered)]

    requests, too_large = pipeline.build(pipeline.in_building_order(aside), environment, ids, context=converter.context)
    result.rejected = [{"ref": r.ref, "reason": r.reason, "excerpt": r.excerpt} for r in refused + too_large]
    for request in requests:
        batches = orjson.loads(request.body)  # exactly what the run would send
        result.batches += batches
        result.endpoints += [request.path] * len(batches)
    return result


def preview_records(rules: dict, records: list, **kwargs) -> Preview:
    """Pasted JSON: a list of records (objects)."""
    items = [
        Item(ref=f"record {i + 1}", record=r)
        if isinstance(r, dict)
        else Item(ref=f"record {i + 1}", error=f"expected an object, got {kind(r)}", excerpt=json_excerpt(r, 200))
        for i, r in enumerate(records)
    ]
    return preview_items(rules, items, **kwargs)


def preview_job(job, rules: dict | None = None, limit: int = DEFAULT_LIMIT) -> Preview:
    """The first `limit` records of the job's source, through `rules` (default: the job's mapping), as a run of
    the job would send them (its endpoint mode, its workspace's environment and ids)."""
    try:
        source = build_source(job.source_kind, job.source_config, secret=job.source_secret, job_id=job.pk)
        items = list(islice(source.read(None), limit))
    except SourceError as e:
        return Preview(errors=[f"the source cannot be read: {e}"])
    workspace = job.workspace
    return preview_items(
        rules or job.mapping.rules,
        items,
        environment=workspace.environment,
        id_salt=str(workspace.pk),
        endpoint_mode=job.endpoint_mode,
        data_plan=workspace.data_plan,
    )


# ------------------------------------------------------------------------------------------- pasted samples


@dataclass
class Sample:
    """A pasted or uploaded sample, read: its items (records, or what cannot be read), the field names it has,
    and its problems — errors (something could not be read) apart from warnings (read, but mind this)."""

    format: str = ""  # what it was read as: csv, ndjson or json ("" when empty)
    items: list[Item] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def records(self) -> list[dict]:
        return [i.record for i in self.items if i.record is not None]

    def as_dict(self) -> dict:
        return {"format": self.format, "columns": self.columns, "errors": self.errors, "warnings": self.warnings}


def sample_format(text: str, fmt: str = "auto") -> str:
    """The format to read `text` as: `fmt`, or for "auto" JSON when it is a JSON array or one object, NDJSON when
    it starts with an object, CSV otherwise."""
    if fmt != "auto":
        return fmt
    start = text.lstrip("\ufeff \t\r\n")[:1]
    if start == "[":
        return "json"
    if start == "{":
        try:
            return "json" if isinstance(json.loads(text.lstrip("\ufeff")), dict) else "ndjson"
        except (json.JSONDecodeError, RecursionError):
            return "ndjson"
    return "csv"


def _json_problem(e: Exception) -> str:
    if not isinstance(e, json.JSONDecodeError):
        return "nested too deeply"
    return f"{e.msg} (line {e.lineno}, column {e.colno})"


def read_sample(text: str, fmt: str = "auto", limit: int = MAX_SAMPLE_RECORDS) -> Sample:
    """Read a pasted sample as the runs read files: CSV and NDJSON through feeds.sources.files (the same header
    checks and per-record errors); JSON as an array of records or one record. Never raises for bad input."""
    if fmt not in SAMPLE_FORMATS:
        return Sample(errors=[f"sample: unknown format {fmt!r} (use one of {', '.join(SAMPLE_FORMATS)})"])
    if not text.strip():
        return Sample()
    sample = Sample(format=sample_format(text, fmt))
    items: list[Item] = []
    if sample.format == "json":
        try:
            data = json.loads(text.lstrip("\ufeff"))
        except (json.JSONDecodeError, RecursionError) as e:
            sample.errors.append(f"sample: not valid JSON: {_json_problem(e)}")
            return sample
        records = data if isinstance(data, list) else [data]
        items = [
            Item(ref=f"record {i + 1}", record=r)
            if isinstance(r, dict)
            else Item(ref=f"record {i + 1}", error=f"expected an object, got {kind(r)}")
            for i, r in enumerate(records)
        ]
    else:
        try:
            for n, item in enumerate(read_text(text.encode("utf-8", "surrogatepass"), sample.format)):
                if n < limit:  # "sample:12" → "line 12", the line of the pasted text
                    items.append(replace(item, ref=item.ref.replace("sample:", "line ", 1), position=None))
                else:
                    items.append(Item(ref="", error=""))  # counted only
        except (SourceError, UnicodeError) as e:
            sample.errors.append(str(e) if str(e).startswith("sample") else f"sample: {e}")
    if len(items) > limit:
        sample.warnings.append(f"sample: only the first {limit} of {len(items)} records are previewed")
        items = items[:limit]
    sample.items = items
    for item in items:
        if item.record is None:
            sample.errors.append(f"sample, {item.ref}: {item.error}")
    sample.columns = columns_of(sample.records)
    if len(sample.columns) > MAX_COLUMNS:
        sample.warnings.append(f"sample: {len(sample.columns)} fields; the first {MAX_COLUMNS} are offered to pick")
        sample.columns = sample.columns[:MAX_COLUMNS]
    if sample.format == "csv" and sample.records:
        sample.warnings.append(
            "sample: CSV values are all text; a row's type (int, float, bool, timestamp) converts them"
        )
    if not sample.items and not sample.errors:
        sample.warnings.append("sample: no records in it (only a header?)")
    return sample


def columns_of(records: list[dict]) -> list[str]:
    """The field names of `records`, in the order they first appear; nested objects as dotted paths to their
    values ("address.city"), as a mapping's field names walk into them."""
    seen: dict[str, None] = {}

    def walk(value: dict, prefix: str, depth: int) -> None:
        for key, inner in value.items():
            name = f"{prefix}{key}"
            if isinstance(inner, dict) and inner and depth < COLUMN_DEPTH:
                walk(inner, f"{name}.", depth + 1)
            else:
                seen.setdefault(name, None)

    for record in records:
        walk(record, "", 1)
    return list(seen)


def preview_sample(rules: dict, sample: Sample, **kwargs) -> Preview:
    """A read sample through `rules`: its records as a run would send them. What could not be read is in the
    sample's errors, not refused again here."""
    return preview_items(rules, [i for i in sample.items if i.record is not None], **kwargs)
