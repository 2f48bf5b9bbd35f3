"""Preview: what a mapping makes of a few records — the batches and every refusal — without sending anything."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import islice

from feeds import mapping as mapping_rules
from feeds.mparticle.batch import group_by_user
from feeds.sources import Item, SourceError
from feeds.sources.build import build_source
from feeds.words import kind

DEFAULT_LIMIT = 20


@dataclass
class Preview:
    errors: list[str] = field(default_factory=list)  # the mapping itself is not valid
    warnings: list[str] = field(default_factory=list)
    batches: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)  # {"ref", "reason", "excerpt"}
    records: int = 0

    def as_dict(self) -> dict:
        return {
            "errors": self.errors,
            "warnings": self.warnings,
            "records": self.records,
            "batches": self.batches,
            "rejected": self.rejected,
        }


def preview_items(
    rules: dict, items: Iterable[Item], *, environment: str = "development", id_salt: str = "preview"
) -> Preview:
    """What `rules` make of `items`. With the workspace's id as `id_salt`, events get the `source_message_id`s a
    sync of the same records sends (batch ids are placeholders: a run's depend on the run and chunk)."""
    result = Preview(errors=mapping_rules.validate(rules))
    warnings = getattr(mapping_rules, "warnings", None)
    if result.errors:
        return result
    if warnings is not None:
        result.warnings = warnings(rules)
    converter = mapping_rules.compile_mapping(rules, id_salt=id_salt)
    converted = []
    for item in items:
        result.records += 1
        if item.record is None:
            result.rejected.append({"ref": item.ref, "reason": item.error, "excerpt": item.excerpt})
            continue
        try:
            converted.append(converter.convert(item.record, item.ref))
        except mapping_rules.RecordError as e:
            result.rejected.append({"ref": item.ref, "reason": str(e), "excerpt": ""})
    batches, refused = group_by_user(converted)
    result.rejected += [{"ref": r.ref, "reason": reason, "excerpt": ""} for r, reason in refused]
    result.batches = [b.to_dict(environment, f"preview-{i}") for i, b in enumerate(batches)]
    return result


def preview_records(rules: dict, records: list, **kwargs) -> Preview:
    """Pasted JSON: a list of records (objects)."""
    items = [
        Item(ref=f"record {i + 1}", record=r)
        if isinstance(r, dict)
        else Item(ref=f"record {i + 1}", error=f"expected an object, got {kind(r)}")
        for i, r in enumerate(records)
    ]
    return preview_items(rules, items, **kwargs)


def preview_job(job, rules: dict | None = None, limit: int = DEFAULT_LIMIT) -> Preview:
    """The first `limit` records of the job's source, through `rules` (default: the job's mapping)."""
    try:
        source = build_source(job.source_kind, job.source_config, secret=job.source_secret, job_id=job.pk)
        items = list(islice(source.read(None), limit))
    except SourceError as e:
        return Preview(errors=[f"the source cannot be read: {e}"])
    workspace = job.workspace
    return preview_items(
        rules or job.mapping.rules, items, environment=workspace.environment, id_salt=str(workspace.pk)
    )
