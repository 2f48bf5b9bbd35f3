"""The push inbox: records a partner POSTs to a job's URL, stored on arrival, read by the job's next run."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from feeds.sources import Item, SourceError

PAGE = 1000
MAX_DEPTH = 64


class InboxSource:
    def __init__(self, job_id: int):
        self.job_id = job_id

    @classmethod
    def from_config(cls, config: dict, *, job_id: int) -> InboxSource:
        if config:
            raise SourceError("the push inbox takes no settings")
        return cls(job_id)

    def describe(self) -> str:
        return "records pushed to the job's inbox"

    def read(self, cursor: Any = None) -> Iterator[Item]:
        from feeds.models import InboxRecord

        after = int(cursor["id"]) if isinstance(cursor, dict) and "id" in cursor else 0
        while True:
            page = list(
                InboxRecord.objects.filter(job_id=self.job_id, pk__gt=after)
                .order_by("pk")
                .values_list("pk", "data")[:PAGE]
            )
            for pk, data in page:
                yield Item(ref=f"inbox:{pk}", record=orjson.loads(data), position={"id": pk})
            if len(page) < PAGE:
                return
            after = page[-1][0]


class PushError(ValueError):
    """A push that cannot be stored; nothing of it was stored. The message is for the partner's engineers."""


def parse_push(body: bytes, content_type: str) -> list[dict]:
    """The records of a push: a JSON array of objects, or NDJSON (one object per line). All or nothing:
    one bad record refuses the whole push, naming every bad line, so that nothing is half stored."""
    text = body.strip()
    if not text:
        raise PushError("the body is empty")
    problems: list[str] = []
    records: list[dict] = []
    if text.startswith(b"[") and "ndjson" not in content_type:
        try:
            data = orjson.loads(text)
        except orjson.JSONDecodeError as e:
            raise PushError(f"the body is not valid JSON: {e}") from None
        for i, record in enumerate(data):
            if isinstance(record, dict):
                records.append(record)
            else:
                problems.append(f"item {i}: expected an object, got {type(record).__name__}")
    else:
        for number, line in enumerate(text.split(b"\n"), start=1):
            if not line.strip():
                continue
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError as e:
                problems.append(f"line {number}: not valid JSON ({e})")
                continue
            if isinstance(record, dict):
                records.append(record)
            else:
                problems.append(f"line {number}: expected an object, got {type(record).__name__}")
    if problems:
        shown = "; ".join(problems[:20]) + (f"; and {len(problems) - 20} more" if len(problems) > 20 else "")
        raise PushError(f"nothing was stored: {shown}")
    if not records:
        raise PushError("the body holds no records")
    return records


def store_push(job, records: list[dict]) -> tuple[int, int]:
    """Store a push's records durably, in one transaction; returns the first and last inbox ids."""
    from django.db import transaction

    from feeds.models import InboxRecord

    with transaction.atomic():
        created = InboxRecord.objects.bulk_create(
            [InboxRecord(job=job, data=orjson.dumps(r).decode()) for r in records]
        )
    if created and created[0].pk is not None:
        return created[0].pk, created[-1].pk
    # Databases that do not return ids from bulk inserts: read them back (the newest rows of this job).
    ids = list(InboxRecord.objects.filter(job=job).order_by("-pk").values_list("pk", flat=True)[: len(records)])
    return min(ids), max(ids)
