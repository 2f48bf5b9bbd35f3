"""Preview: what a run would make of a few records — the batches on each endpoint and every refusal — without
sending anything. It is the run's own pipeline (feeds.pipeline), kept in memory: a record the run would refuse
(e.g. too recent for the historical endpoint) is shown refused with the run's reason."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import islice

import orjson

from feeds import mapping as mapping_rules
from feeds import pipeline
from feeds.models import SyncJob
from feeds.sources import Item, SourceError
from feeds.sources.build import build_source
from feeds.words import json_excerpt, kind

DEFAULT_LIMIT = 20


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
    converter = mapping_rules.compile_mapping(rules, id_salt=id_salt)
    items = list(items)
    result.records = len(items)
    aside, refused = pipeline.set_aside(converter, items, endpoint_mode, int(time.time() * 1000))
    numbered = 0

    def ids(count: int, *_) -> list[str]:
        nonlocal numbered
        numbered += count
        return [f"preview-{i}" for i in range(numbered - count, numbered)]

    requests, too_large = pipeline.build(pipeline.in_building_order(aside), environment, ids)
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
    )
