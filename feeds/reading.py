"""Reading a run's source into deliveries: read → map → route → set aside per user → group → pack → persist.

Records are converted chunk by chunk and set aside in the database (SetAsideRecord), each chunk with its
rejected records and the run's checkpoint in one transaction. Once the source is read to the end (or a window
of MPFEED_GROUP_WINDOW_RECORDS is set aside), they are built into deliveries a slice of users at a time: every
record of a user together, in time order, so that a user's events go in as few batches as the 128 KB batch
limit allows, whatever the order of the source. A slice's deliveries (the exact request bodies, with
deterministic batch and event ids) are written and its set-aside records deleted in one transaction, before
anything of it is sent: a crash at any point resumes from the checkpoint or the next slice, and stored bodies
are resent byte for byte — nothing is lost and nothing is sent under a new id. Senders may send a run's deliveries
while it is still being read, so the counters they share with the reader move by increments (F expressions),
never by writing a copy back. What is converted, routed, grouped and packed is feeds.pipeline's, as every
preview's is; this module keeps it durable.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from itertools import islice

from django.conf import settings
from django.db.models import F
from django.utils import timezone

from feeds import db, pipeline
from feeds.mapping import Converter
from feeds.models import Delivery, RejectedRecord, SentKey, SetAsideRecord, SyncRun
from feeds.mparticle import schema
from feeds.mparticle.batch import batch_ids, search_keys
from feeds.sources import Item
from feeds.sources.build import build_source


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
        self.source: object = None

    def chunks(self) -> Iterator[list[Item]]:
        """The source's items after the checkpoint, a chunk at a time. Sources read lazily: connection and paging
        failures surface while iterating, as SourceError."""
        run = self.run
        source = build_source(run.source_kind, run.source_config, secret=run.job.source_secret, job_id=run.job_id)
        self.source = source
        items = iter(source.read(run.cursor))
        while True:
            chunk = list(islice(items, settings.MPFEED_CHUNK_SIZE))
            yield chunk
            if not chunk:
                return

    def steps(self, lease_seconds: float) -> Iterator[None]:
        """Advance the run one durable step at a time — a chunk read and set aside, or a slice of users built into
        deliveries — until nothing is left to build (run.read_done). Yields after each step."""
        chunks = None
        while not self.run.read_done:
            if self.run.building:
                self.build_slice(lease_seconds)
            else:
                if chunks is None:
                    chunks = self.chunks()
                self.set_aside(next(chunks), lease_seconds)
            yield

    # ---------------------------------------------------------------------------------------- set aside

    def set_aside(self, chunk: list[Item], lease_seconds: float) -> None:
        """Convert one chunk, set its records aside per user and move the checkpoint past it, in one transaction.
        Building starts once the source is read to the end, or once the window is full."""
        converter = self.converter
        names_before, values_before = converter.stats.names_truncated, converter.stats.values_truncated
        run = self.run
        aside, refusals = pipeline.set_aside(
            converter, chunk, run.endpoint_mode, int(time.time() * 1000), seq=run.records_read
        )
        rejects = [_rejected(run, refusal) for refusal in refusals]
        rows = [(run.pk, *record) for record in aside]
        size = sum(len(a[4]) for a in aside)

        chunk_no = run.chunks
        source_done = not chunk or len(chunk) < settings.MPFEED_CHUNK_SIZE
        cursor = run.cursor
        if chunk:
            cursor = chunk[-1].position
            # A position of None marks the last item of a complete, non-incremental read.
            if cursor is None:
                source_done = True
        set_aside = run.set_aside_records + len(rows)
        set_aside_bytes = run.set_aside_bytes + size
        full = (
            set_aside >= settings.MPFEED_GROUP_WINDOW_RECORDS or set_aside_bytes >= settings.MPFEED_GROUP_WINDOW_BYTES
        )
        building = bool(set_aside) and (source_done or full)
        read_done = source_done and not set_aside
        notes = _merge_notes(run.source_notes, getattr(self.source, "notes", None))
        with db.atomic():
            self._still_mine(chunk_no)
            RejectedRecord.objects.bulk_create(rejects)
            db.insert_rows(SetAsideRecord, ("run", *ASIDE), rows)
            SyncRun.objects.filter(pk=run.pk, chunks=chunk_no).update(
                cursor=cursor,
                source_notes=notes,
                chunks=chunk_no + 1,
                source_done=source_done,
                building=building,
                read_done=read_done,
                set_aside_records=set_aside,
                set_aside_bytes=set_aside_bytes,
                lease_until=timezone.now() + timedelta(seconds=lease_seconds),
                records_read=F("records_read") + len(chunk),
                records_rejected=F("records_rejected") + len(rejects),
                names_truncated=F("names_truncated") + converter.stats.names_truncated - names_before,
                values_truncated=F("values_truncated") + converter.stats.values_truncated - values_before,
            )
        run.cursor, run.chunks, run.source_done, run.building, run.read_done = (
            cursor, chunk_no + 1, source_done, building, read_done
        )  # fmt: skip
        run.set_aside_records, run.set_aside_bytes = set_aside, set_aside_bytes
        run.source_notes = notes
        run.records_read += len(chunk)

    def _still_mine(self, chunk_no: int) -> None:
        # Only while this reader still has the run where it left it: one that lost its lease (stalled past it)
        # and was replaced must not write the same step again.
        # Nor once the run has stopped (ended, blocked): what it would set aside would be left behind.
        mine = SyncRun.objects.filter(pk=self.run.pk, chunks=chunk_no)
        if not mine.exists():
            raise ReadingLost(f"run {self.run.pk}: another reader went on from step {chunk_no}")
        if not mine.filter(status__in=SyncRun.WORKING_STATUSES).exists():
            raise ReadingLost(f"run {self.run.pk}: stopped meanwhile; this reader writes nothing more")

    # --------------------------------------------------------------------------------------------- build

    def build_slice(self, lease_seconds: float) -> None:
        """Build the next users' set-aside records into deliveries — every record of a user together, in time
        order, in as few batches as the batch limit allows — and delete those records, in one transaction. The
        slice is the first MPFEED_BUILD_SLICE records in (endpoint, user) order, extended to the end of its last
        user: rebuilt after a crash, it is the same slice, with the same bodies and source_request_ids."""
        run = self.run
        rows = list(
            SetAsideRecord.objects.filter(run=run)
            .order_by("path", "user", "seq")
            .values_list(*ROW)[: settings.MPFEED_BUILD_SLICE]
        )
        if rows:
            last_path, last_user, last_seq, *_ = rows[-1]
            rows += list(
                SetAsideRecord.objects.filter(run=run, path=last_path, user=last_user, seq__gt=last_seq)
                .order_by("seq")
                .values_list(*ROW)[:MAX_USER_EXTENSION]
            )
        window = run.windows
        workspace_id = self.workspace.pk

        def ids(count: int, path: str, first_user: str, first_seq: int) -> list[str]:
            # One uuid5 per endpoint of the slice, counted up per batch: a rebuilt slice is the same slice (same
            # first user and record), so its batches get the same ids.
            return batch_ids(count, workspace_id, run.pk, "w", window, path, first_user, first_seq)

        requests, refusals = pipeline.build(
            rows, run.environment, ids, max_batches=self.max_batches, context=self.converter.context
        )
        rejects = [_rejected(run, refusal) for refusal in refusals]
        deliveries = [
            Delivery(
                run=run,
                workspace=self.workspace,
                sequence=0,  # numbered below, once their number is known
                path=request.path,
                payload=Delivery.compress(request.body),
                payload_bytes=len(request.body),
                batch_count=request.batch_count,
                event_count=request.event_count,
                source_request_ids=request.source_request_ids,
                record_refs=request.record_refs,
                batch_events=request.batch_events,
            )
            for request in requests
        ]
        # What each batch can be found by (identities, mpid, ids), from one parse of each body.
        keys = [search_keys(request.body) for request in requests]
        batch_total = sum(d.batch_count for d in deliveries)
        event_total = sum(d.event_count for d in deliveries)

        chunk_no = run.chunks
        left = max(0, run.set_aside_records - len(rows))
        left_bytes = max(0, run.set_aside_bytes - sum(len(r[4]) for r in rows))
        with db.atomic():
            self._still_mine(chunk_no)
            first = run.allocate_sequences(len(deliveries))
            for offset, delivery in enumerate(deliveries):
                delivery.sequence = first + offset
            RejectedRecord.objects.bulk_create(rejects)
            Delivery.objects.bulk_create(deliveries)
            _sent_keys(run, deliveries, keys)
            pks = [r[6] for r in rows]
            for start in range(0, len(pks), 500):
                SetAsideRecord.objects.filter(pk__in=pks[start : start + 500]).delete()
            if not left:
                # The window looks built: what the table says decides (a count that drifted is corrected here).
                left = SetAsideRecord.objects.filter(run=run).count()
                left_bytes = left_bytes if left else 0
            building = bool(left)
            read_done = run.source_done and not left
            window_done = not left
            SyncRun.objects.filter(pk=run.pk, chunks=chunk_no).update(
                chunks=chunk_no + 1,
                building=building,
                read_done=read_done,
                set_aside_records=left,
                set_aside_bytes=left_bytes,
                windows=window + (1 if window_done else 0),
                lease_until=timezone.now() + timedelta(seconds=lease_seconds),
                records_rejected=F("records_rejected") + len(rejects),
                batches=F("batches") + batch_total,
                requests=F("requests") + len(deliveries),
                events=F("events") + event_total,
            )
        run.chunks, run.building, run.read_done = chunk_no + 1, building, read_done
        run.set_aside_records, run.set_aside_bytes = left, left_bytes
        run.windows = window + (1 if window_done else 0)


# A set-aside record as the pipeline builds it (pipeline.Aside); read back, its primary key after.
ASIDE = ("path", "user", "seq", "ref", "data", "events")
ROW = (*ASIDE, "pk")
# A user's records beyond the slice are taken with it up to this many; past that, the rest form the next slice.
MAX_USER_EXTENSION = 100_000


def _sent_keys(run: SyncRun, deliveries: list[Delivery], keys: list[list[list[tuple[str, str]]]]) -> int:
    """Write what each built batch can be found by (feeds.models.SentKey)."""
    if any(d.pk is None for d in deliveries):  # a database that does not return ids from bulk inserts
        by_sequence = dict(
            Delivery.objects.filter(run=run, sequence__in=[d.sequence for d in deliveries]).values_list(
                "sequence", "pk"
            )
        )
        for delivery in deliveries:
            delivery.pk = by_sequence[delivery.sequence]
    return SentKey.objects.write(
        run.workspace_id,
        (
            (delivery.pk, index, kind, value)
            for delivery, batches in zip(deliveries, keys, strict=True)
            for index, pairs in enumerate(batches)
            for kind, value in pairs
        ),
    )


def _rejected(run: SyncRun, refusal: pipeline.Refusal) -> RejectedRecord:
    return RejectedRecord(run=run, stage=refusal.stage, ref=refusal.ref, reason=refusal.reason, excerpt=refusal.excerpt)


MAX_SOURCE_NOTES = 20


def _merge_notes(kept: list, new: list | None) -> list:
    """The run's notes with the source's new ones (a file's format and encoding, as chosen), the first
    MAX_SOURCE_NOTES: a resumed run's source tells again what an earlier reader already noted."""
    notes = list(kept or [])
    for note in new or ():
        if note not in notes and len(notes) < MAX_SOURCE_NOTES:
            notes.append(note)
    return notes
