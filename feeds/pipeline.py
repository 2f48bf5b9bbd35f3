"""The data path, once: items → convert → route → set aside per user → group → pack into request bodies.

Every function here is pure (no database, no network). The engine (feeds.reading) runs the first half on each
chunk and stores what it sets aside, then the second half on each slice of stored records, persisting between
the two for crash safety; a preview (feeds.preview) runs both halves in memory on a few records. So a preview
shows what a run of the same records would do — the same batches on the same endpoints, the same refusals with
the same reasons — because it is the same code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import cast

import orjson

from feeds.mapping import Converter, RecordError
from feeds.models import RejectedRecord, SyncJob
from feeds.mparticle import schema
from feeds.mparticle.batch import UserRecord, group_set_aside, join, pack, serialize_batches, set_aside_form
from feeds.sources import Item

EXCERPT = 500
SOURCE, MAPPING = RejectedRecord.Stage.SOURCE, RejectedRecord.Stage.MAPPING  # where a record is refused
# (endpoint path, user, seq, ref, data, events): one endpoint's part of one record, set aside for grouping.
# `build` reads only these columns, so rows may carry more after them.
Aside = tuple[str, str, int, str, bytes, int]
# batch ids for (count, endpoint path, first user, first seq) of one endpoint's records in a slice
BatchIds = Callable[[int, str, str, int], list[str]]


@dataclass(frozen=True, slots=True)
class Refusal:
    """A record that is not sent, and why (for people: stored on a RejectedRecord, shown by a preview)."""

    stage: str
    ref: str
    reason: str
    excerpt: str = ""


@dataclass(slots=True)
class Request:
    """One bulk request to an endpoint: its exact body and what it carries."""

    path: str
    body: bytes
    source_request_ids: list[str]
    record_refs: list[Sequence[str]]
    batch_events: list[int]

    @property
    def batch_count(self) -> int:
        return len(self.source_request_ids)

    @property
    def event_count(self) -> int:
        return sum(self.batch_events)


# ------------------------------------------------------------------------------- convert, route, set aside


def set_aside(
    converter: Converter, items: Iterable[Item], mode: str, now_ms: int, seq: int = 0
) -> tuple[list[Aside], list[Refusal]]:
    """Convert and route `items` (numbered from `seq` + 1, in source order) into what is set aside per user,
    and the records refused on the way: unreadable input, records the mapping refuses, and data the endpoint
    would drop. This runs once per record of every run: one loop, no object per record beyond its row. A
    record that stays whole on the real-time endpoint (most of them) comes from the converter set aside
    already (Converter.set_aside); the others are routed here."""
    rows: list[Aside] = []
    refusals: list[Refusal] = []
    append = rows.append
    # Where `route` sends everything to the real-time endpoint: always, or (auto) when no event is older
    # than the real-time endpoint takes. Historical runs route every record.
    direct = mode != SyncJob.EndpointMode.HISTORICAL
    cutoff = realtime_cutoff(now_ms) if mode == SyncJob.EndpointMode.AUTO else None
    to_aside, convert, bulk = converter.set_aside, converter.convert, schema.BULK_PATH
    for item in items:
        seq += 1
        if item.record is None:
            refusals.append(Refusal(SOURCE, item.ref[:300], item.error, item.excerpt))
            continue
        try:
            if direct:
                got = to_aside(item.record, item.ref, cutoff)
                if type(got) is tuple:
                    user, data, events = got
                    append((bulk, user, seq, item.ref[:300], data, events))
                    continue
                record = cast(UserRecord, got)
            else:
                record = convert(item.record, item.ref)
            for path, part in route(record, mode, now_ms):
                user, data = set_aside_form(part)
                append((path, user, seq, part.ref[:300], data, len(part.events)))
        except RecordError as e:
            refusals.append(Refusal(MAPPING, item.ref[:300], str(e), excerpt(item.record)))
    return rows, refusals


def route(record: UserRecord, mode: str, now_ms: int) -> list[tuple[str, UserRecord]]:
    """Which endpoint a converted record goes to. Historical data must have events, all timestamped and at
    least 72 hours old; mParticle silently drops anything else, so it is refused here with the reason."""
    if mode == SyncJob.EndpointMode.REALTIME:
        return [(schema.BULK_PATH, record)]
    if mode == SyncJob.EndpointMode.HISTORICAL:
        check_historical(record.events, now_ms)
        return [(schema.HISTORICAL_PATH, record)]
    # Auto: events older than 30 days go to the historical endpoint, the rest (and the profile) in real time.
    cutoff = realtime_cutoff(now_ms)
    old = [e for e in record.events if (ts := e["data"].get("timestamp_unixtime_ms")) is not None and ts < cutoff]
    if not old:
        return [(schema.BULK_PATH, record)]
    recent = [e for e in record.events if e not in old]
    out = [
        (
            schema.HISTORICAL_PATH,
            UserRecord(
                ref=record.ref,
                identities=record.identities,
                mpid=record.mpid,
                events=old,
                batch_fields=record.batch_fields,
            ),
        )
    ]
    if recent or record.user_attributes or record.deleted_user_attributes:
        record.events = recent
        out.append((schema.BULK_PATH, record))
    return out


def realtime_cutoff(now_ms: int) -> int:
    """The time (ms) before which an event is too old for the real-time endpoint (30 days)."""
    return now_ms - schema.REALTIME_MAX_AGE_MS


def check_historical(events: list[dict], now_ms: int) -> None:
    if not events:
        raise RecordError("historical data needs at least one event; mParticle drops batches without events")
    for event in events:
        ts = event["data"].get("timestamp_unixtime_ms")
        if ts is None:
            raise RecordError("historical data needs a timestamp on every event (timestamp_unixtime_ms)")
        if now_ms - ts < schema.HISTORICAL_MIN_AGE_MS:
            raise RecordError("historical data must be at least 72 hours old; this event is newer")


def excerpt(record: dict) -> str:
    try:
        text = orjson.dumps(record, default=str).decode()
    except TypeError:
        text = repr(record)
    return text if len(text) <= EXCERPT else text[:EXCERPT] + "…"


def _data_excerpt(data) -> str:
    """The start of a set-aside record's data (JSON after its one-byte form marker, see set_aside_form)."""
    if not data:
        return ""
    raw = bytes(data[1 : 1 + EXCERPT + 1])
    text = raw[:EXCERPT].decode("utf-8", "replace")
    return text + "…" if len(raw) > EXCERPT else text


# ----------------------------------------------------------------------------------------- group, pack


def in_building_order(rows: list[Aside]) -> list[Aside]:
    """Set-aside records in the order they are built: by endpoint, user, then source order (the order the
    engine reads them back from the database in)."""
    return sorted(rows, key=lambda r: (r[0], r[1], r[2]))


def build(
    rows: Iterable[Aside],
    environment: str,
    ids: BatchIds,
    *,
    max_batches: int = schema.MAX_BATCHES_PER_REQUEST,
    context: dict | None = None,
) -> tuple[list[Request], list[Refusal]]:
    """Build set-aside records, in building order, into requests: every record of a user together, in time
    order, in as few batches as the batch limit allows, packed into bodies of at most `max_batches` batches.
    `context` (the converter's: the data plan) goes in every batch. Also returns the records too large to send
    on their own."""
    requests: list[Request] = []
    refusals: list[Refusal] = []
    # The context is spliced into every batch after grouping: the batch limit leaves room for it.
    max_batch_bytes = schema.MAX_BATCH_BYTES - (len(orjson.dumps(context)) + len(',"context":') if context else 0)
    for path, path_rows in groupby(rows, key=lambda r: r[0]):
        of_path = list(path_rows)
        first_user, first_seq = of_path[0][1], of_path[0][2]
        built = group_set_aside(of_path, max_batch_bytes)
        batches = built.batches
        if built.refused:  # rare: records too large on their own, shown with what they were converted to
            data_of: dict[str, bytes] = {}
            for r in of_path:
                data_of.setdefault(r[3], r[4])
            refusals += [
                Refusal(MAPPING, record.ref[:300], reason, _data_excerpt(data_of.get(record.ref[:300])))
                for record, reason in built.refused
            ]
        srids = ids(len(batches), path, first_user, first_seq)
        bodies = serialize_batches(batches, environment, srids, context)
        for group in pack([len(b) for b in bodies], max_batches=max_batches):
            requests.append(
                Request(
                    path=path,
                    body=join(bodies[group.start : group.stop]),
                    source_request_ids=[srids[i] for i in group],
                    record_refs=built.refs[group.start : group.stop],
                    batch_events=built.events[group.start : group.stop],
                )
            )
    return requests, refusals
