"""The push inbox: records a partner POSTs to a job's URL, stored on arrival, read by the job's next run."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from feeds.sources import Item, SourceError
from feeds.words import kind

PAGE = 1000
MAX_DEPTH = 64


class InboxSource:
    def __init__(self, job_id: int | None):
        self.job_id = job_id  # None for a job not saved yet (its settings are checked before the first save)

    @classmethod
    def from_config(cls, config: dict, *, job_id: int | None) -> InboxSource:
        if config:
            raise SourceError("the push inbox takes no settings")
        return cls(job_id)

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


def has_new(job_id: int, cursor: dict | None) -> bool:
    """Whether records were pushed after `cursor` (the job's position): what a scheduled run would forward."""
    from feeds.models import InboxRecord

    after = (cursor or {}).get("id", 0)
    return InboxRecord.objects.filter(job_id=job_id, pk__gt=after).exists()


def drop_forwarded(job_id: int, cursor: dict) -> None:
    """Delete the records up to `cursor`: a run forwarded them (they are in its outbox now)."""
    from feeds.models import InboxRecord

    InboxRecord.objects.filter(job_id=job_id, pk__lte=cursor["id"]).delete()


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
                problems.append(f"item {i}: expected an object, got {kind(record)}")
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
                problems.append(f"line {number}: expected an object, got {kind(record)}")
    if problems:
        shown = "; ".join(problems[:20]) + (f"; and {len(problems) - 20} more" if len(problems) > 20 else "")
        raise PushError(f"nothing was stored: {shown}")
    if not records:
        raise PushError("the body holds no records")
    return records


def store_push(job, records: list[dict]) -> tuple[int, int]:
    """Store a push's records durably, in one transaction; returns the first and last inbox ids."""
    from django.db import transaction

    with transaction.atomic():
        return _store(job, records)


def _store(job, records: list[dict]) -> tuple[int, int]:
    from feeds.models import InboxRecord

    created = InboxRecord.objects.bulk_create([InboxRecord(job=job, data=orjson.dumps(r).decode()) for r in records])
    if created and created[0].pk is not None:
        return created[0].pk, created[-1].pk
    # Databases that do not return ids from bulk inserts: read them back (the newest rows of this job).
    ids = list(InboxRecord.objects.filter(job=job).order_by("-pk").values_list("pk", flat=True)[: len(records)])
    return min(ids), max(ids)


class KeyReused(Exception):
    """An Idempotency-Key already used for a push with another body."""


@dataclass(frozen=True)
class Stored:
    received: int
    first_id: int
    last_id: int
    replayed: bool  # the key was seen before: nothing new was stored


def store_idempotent_push(job, key: str, body: bytes, records: list[dict]) -> Stored:
    """Store a push once per Idempotency-Key: the records and the key in one transaction. The same key with the
    same body again is answered as the first time; with another body, KeyReused."""
    from django.db import IntegrityError, transaction

    from feeds.models import InboxPush

    digest = hashlib.sha256(body).hexdigest()
    for _ in range(2):
        earlier = InboxPush.objects.filter(job=job, key=key).first()
        if earlier is not None:
            if not hmac.compare_digest(earlier.body_sha256, digest):
                raise KeyReused(key)
            return Stored(earlier.received, earlier.first_id, earlier.last_id, replayed=True)
        try:
            with transaction.atomic():
                first, last = _store(job, records)
                InboxPush.objects.create(
                    job=job, key=key, body_sha256=digest, received=len(records), first_id=first, last_id=last
                )
            return Stored(len(records), first, last, replayed=False)
        except IntegrityError:
            continue  # the same key stored by a concurrent request: answer as it was answered
    raise KeyReused(key)
