"""Reading a run's source into deliveries: read → map → group per user → pack → persist, chunk by chunk.

Each chunk's deliveries (the exact request bodies, with deterministic batch and event ids), its rejected records
and the run's checkpoint are written in one transaction, before anything of it is sent: a crash at any point
resumes reading from the checkpoint, and stored bodies are resent byte for byte — nothing is lost and nothing is
sent under a new id. Senders may send a run's deliveries while it is still being read, so the counters they
share with the reader move by increments (F expressions), never by writing a copy back.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from datetime import timedelta
from itertools import islice

import orjson
from django.conf import settings
from django.db.models import F
from django.utils import timezone

from feeds import db
from feeds.mapping import Converter, RecordError
from feeds.models import Delivery, RejectedRecord, SyncJob, SyncRun
from feeds.mparticle import schema
from feeds.mparticle.batch import Grouper, UserRecord, batch_ids, join, pack, serialize_batches
from feeds.sources import Item
from feeds.sources.build import build_source

EXCERPT = 500


class ReadingLost(Exception):
    """Another reader took the run over (this one stalled past its lease): this one stops, writing nothing."""


class Reader:
    """Reads one run's source from its checkpoint and persists chunk after chunk (raises SourceError)."""

    def __init__(self, run: SyncRun, converter: Converter, *, max_batches: int = schema.MAX_BATCHES_PER_REQUEST):
        self.run = run
        self.workspace = run.workspace
        self.converter = converter
        # Fewer batches per request for a workspace whose limit is small (a request should fit its second).
        self.max_batches = max(1, min(schema.MAX_BATCHES_PER_REQUEST, max_batches))
        self.items: Iterator[Item] | None = None

    def chunks(self) -> Iterator[list[Item]]:
        """The source's items after the checkpoint, a chunk at a time. Sources read lazily: connection and paging
        failures surface while iterating, as SourceError."""
        run = self.run
        source = build_source(run.source_kind, run.source_config, secret=run.job.source_secret, job_id=run.job_id)
        items = iter(source.read(run.cursor))
        while True:
            chunk = list(islice(items, settings.MPFEED_CHUNK_SIZE))
            yield chunk
            if not chunk:
                return

    def persist(self, chunk: list[Item], lease_seconds: float) -> None:
        """Turn one chunk into deliveries and rejects, and move the checkpoint past it, in one transaction."""
        converter = self.converter
        names_before, values_before = converter.stats.names_truncated, converter.stats.values_truncated
        run = self.run
        rejects: list[RejectedRecord] = []
        # Records are grouped per user as they are converted, one grouper per endpoint.
        by_path: dict[str, Grouper] = {}
        now_ms = int(time.time() * 1000)
        for item in chunk:
            if item.record is None:
                rejects.append(
                    RejectedRecord(
                        run=run,
                        stage=RejectedRecord.Stage.SOURCE,
                        ref=item.ref[:300],
                        reason=item.error,
                        excerpt=item.excerpt,
                    )
                )
                continue
            try:
                record = converter.convert(item.record, item.ref)
                for path, part in route(record, run.endpoint_mode, now_ms):
                    grouper = by_path.get(path)
                    if grouper is None:
                        grouper = by_path[path] = Grouper()
                    grouper.add(part)
            except RecordError as e:
                rejects.append(
                    RejectedRecord(
                        run=run,
                        stage=RejectedRecord.Stage.MAPPING,
                        ref=item.ref[:300],
                        reason=str(e),
                        excerpt=_excerpt(item.record),
                    )
                )

        chunk_no = run.chunks
        deliveries: list[Delivery] = []
        batch_total = event_total = 0
        for path, grouper in by_path.items():
            batches = grouper.batches
            for record, reason in grouper.refused:
                rejects.append(
                    RejectedRecord(run=run, stage=RejectedRecord.Stage.MAPPING, ref=record.ref[:300], reason=reason)
                )
            srids = batch_ids(len(batches), self.workspace.pk, run.pk, chunk_no, path)
            bodies = serialize_batches(batches, run.environment, srids)
            for group in pack([len(b) for b in bodies], max_batches=self.max_batches):
                parts = bodies[group.start : group.stop]
                body = join(parts)
                deliveries.append(
                    Delivery(
                        run=run,
                        workspace=self.workspace,
                        sequence=0,  # numbered below, once their number is known
                        path=path,
                        payload=Delivery.compress(body),
                        payload_bytes=len(body),
                        batch_count=len(parts),
                        event_count=sum(batches[i].event_count for i in group),
                        source_request_ids=[srids[i] for i in group],
                        record_refs=[batches[i].refs for i in group],
                        batch_events=[batches[i].event_count for i in group],
                    )
                )
                batch_total += len(parts)
                event_total += deliveries[-1].event_count

        read_done = not chunk or len(chunk) < settings.MPFEED_CHUNK_SIZE
        cursor = run.cursor
        if chunk:
            cursor = chunk[-1].position
            # A position of None marks the last item of a complete, non-incremental read.
            if cursor is None:
                read_done = True
        with db.atomic():
            # Only while this reader still has the run where it left it: one that lost its lease (stalled past it)
            # and was replaced must not write the same chunk again.
            if not SyncRun.objects.filter(pk=run.pk, chunks=chunk_no).exists():
                raise ReadingLost(f"run {run.pk}: another reader went on from chunk {chunk_no}")
            first = run.allocate_sequences(len(deliveries))
            for offset, delivery in enumerate(deliveries):
                delivery.sequence = first + offset
            RejectedRecord.objects.bulk_create(rejects)
            Delivery.objects.bulk_create(deliveries)
            SyncRun.objects.filter(pk=run.pk, chunks=chunk_no).update(
                cursor=cursor,
                chunks=chunk_no + 1,
                read_done=read_done,
                lease_until=timezone.now() + timedelta(seconds=lease_seconds),
                checkpoint=F("checkpoint") + len(chunk),
                records_read=F("records_read") + len(chunk),
                records_rejected=F("records_rejected") + len(rejects),
                batches=F("batches") + batch_total,
                requests=F("requests") + len(deliveries),
                events=F("events") + event_total,
                names_truncated=F("names_truncated") + converter.stats.names_truncated - names_before,
                values_truncated=F("values_truncated") + converter.stats.values_truncated - values_before,
            )
        run.cursor, run.chunks, run.read_done = cursor, chunk_no + 1, read_done


def route(record: UserRecord, mode: str, now_ms: int) -> Iterable[tuple[str, UserRecord]]:
    """Which endpoint a converted record goes to. Historical data must have events, all timestamped and at
    least 72 hours old; mParticle silently drops anything else, so it is refused here with the reason."""
    if mode == SyncJob.EndpointMode.REALTIME:
        return [(schema.BULK_PATH, record)]
    if mode == SyncJob.EndpointMode.HISTORICAL:
        _check_historical(record.events, now_ms)
        return [(schema.HISTORICAL_PATH, record)]
    # Auto: events older than 30 days go to the historical endpoint, the rest (and the profile) in real time.
    old = [
        e
        for e in record.events
        if (ts := e["data"].get("timestamp_unixtime_ms")) is not None and now_ms - ts > schema.REALTIME_MAX_AGE_MS
    ]
    if not old:
        return [(schema.BULK_PATH, record)]
    recent = [e for e in record.events if e not in old]
    out = [
        (schema.HISTORICAL_PATH, UserRecord(ref=record.ref, identities=record.identities, mpid=record.mpid, events=old))
    ]
    if recent or record.user_attributes or record.deleted_user_attributes:
        record.events = recent
        out.append((schema.BULK_PATH, record))
    return out


def _check_historical(events: list[dict], now_ms: int) -> None:
    if not events:
        raise RecordError("historical data needs at least one event; mParticle drops batches without events")
    for event in events:
        ts = event["data"].get("timestamp_unixtime_ms")
        if ts is None:
            raise RecordError("historical data needs a timestamp on every event (timestamp_unixtime_ms)")
        if now_ms - ts < schema.HISTORICAL_MIN_AGE_MS:
            raise RecordError("historical data must be at least 72 hours old; this event is newer")


def _excerpt(record: dict) -> str:
    try:
        text = orjson.dumps(record, default=str).decode()
    except TypeError:
        text = repr(record)
    return text if len(text) <= EXCERPT else text[:EXCERPT] + "…"
