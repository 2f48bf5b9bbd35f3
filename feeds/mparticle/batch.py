"""Batches: one user's data per batch, grouped and packed into requests.

mParticle's rate limit counts batches, not events, so a user's events from one chunk go into one batch
(while it stays under 128 KB), and batches are packed into bulk requests of at most 100 batches and under
256 KB. https://docs.mparticle.com/developers/server/json-reference/ and
https://docs.mparticle.com/guides/default-service-limits/ . No Django imports here.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from hashlib import sha1
from typing import ClassVar

import fastuuid
import orjson

from . import schema

# Namespace for the deterministic ids mpfeed gives batches and events (uuid5).
MPFEED_NAMESPACE = uuid.UUID("4f0b7c1e-6a55-4d2b-9c1e-7d7f0b2a5e11")

# Bytes a JSON array adds around n elements: "[" + "]" and n-1 commas.
_ARRAY_OVERHEAD = 2


# The namespace as fastuuid's UUID, and its uuid5: `str(uuid5(ID_NAMESPACE, name))` is
# `str(uuid.uuid5(MPFEED_NAMESPACE, name))` for a name in bytes (RFC 4122 version 5: a sha1 of the namespace and
# the name), made by Rust's uuid crate in a third of the time of hashlib's sha1 with the digits then formatted in
# Python. Every id mpfeed gives batches and events is made so; the generated converter calls the two directly.
ID_NAMESPACE = fastuuid.UUID(str(MPFEED_NAMESPACE))
uuid5 = fastuuid.uuid5
# ":".join(map(str, parts)) as one %-format per number of parts.
_ID_FORMATS = {n: ":".join(["%s"] * n) for n in range(1, 9)}


def uuid5_of(name: bytes) -> str:
    """mpfeed's deterministic id for a name in bytes (see ID_NAMESPACE)."""
    return str(uuid5(ID_NAMESPACE, name))


def deterministic_id(*parts: object) -> str:
    """A UUID that is the same every time for the same parts (used for ids reused on retries): exactly
    `str(uuid.uuid5(MPFEED_NAMESPACE, ":".join(map(str, parts))))`."""
    form = _ID_FORMATS.get(len(parts))
    return uuid5_of((form % parts if form else ":".join(map(str, parts))).encode())


_NODE_MASK = (1 << 48) - 1


def batch_ids(count: int, *parts: object) -> list[str]:
    """`count` distinct deterministic ids for the batches of one chunk, derived from one uuid5.

    The first is `deterministic_id(*parts)`; the i-th adds i to its last 48 bits (the node field, modulo 2**48),
    keeping the other 74 hash bits, the version and the variant. So ids within a chunk never collide, and two
    chunks' ids collide only if their uuid5s agree on 74 bits (as unlikely as a sha1 collision matters here),
    for one sha1 per chunk instead of one per batch. Sixteen ids in a row share all but their last hex digit,
    so that part is formatted once per sixteen (formatting a number is most of the cost of an id)."""
    if count <= 0:
        return []
    first = deterministic_id(*parts)
    node = int(first[24:], 16)
    if node + count > _NODE_MASK + 1:  # the node field wraps around within the chunk: each formatted alone
        each = first[:24] + "%012x"
        return [first] + [each % ((node + i) & _NODE_MASK) for i in range(1, count)]
    head = first[:24] + "%011x"
    ids: list[str] = []
    n, end = node, node + count
    while n < end:
        stop = min(end, (n | 15) + 1)
        ids += map((head % (n >> 4)).__add__, _HEX_DIGITS[n & 15 : (n & 15) + stop - n])
        n = stop
    return ids


_HEX_DIGITS = "0123456789abcdef"


@dataclass(slots=True)
class UserRecord:
    """One source record converted to mParticle terms, before grouping.

    `ref` says where it came from (file line, row key) so that a refusal can point back to it.
    """

    ref: str
    identities: dict[str, str]
    user_attributes: dict[str, object] = field(default_factory=dict)
    deleted_user_attributes: list[str] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)
    mpid: int | None = None
    # The batch-level fields the record has (device_info, mp_deviceid, partner_identities, ip), None when it has
    # none (the common case). They describe the device and request the data came from, so records of one user
    # with different values never share a batch (see Grouper).
    batch_fields: dict | None = None


@dataclass(slots=True)
class Batch:
    """One user's data as it will be sent; `refs` lists the source records it carries.

    Events are kept serialized (they are serialized once, to measure them, and spliced into the batch body):
    each item of `event_json` holds the events of one record, comma-separated. The batch of a single record (the
    common case) is a `OneRecordBatch` instead, until another record of its user joins it."""

    identities: dict[str, str]
    mpid: int | None
    user_attributes: dict[str, object] = field(default_factory=dict)
    deleted_user_attributes: list[str] = field(default_factory=list)
    event_json: list[bytes] = field(default_factory=list)
    event_count: int = 0
    refs: list[str] = field(default_factory=list)
    size: int = 0  # estimated serialized bytes
    batch_fields: dict | None = None  # as UserRecord.batch_fields: the same for every record of the batch
    whole: ClassVar[None] = None  # see OneRecordBatch

    def _head(self, environment: str, source_request_id: str, context: dict | None = None) -> dict:
        body: dict = {"source_request_id": source_request_id, "environment": environment}
        if context:
            body["context"] = context
        if self.batch_fields:
            body.update(self.batch_fields)
        if self.identities:
            body["user_identities"] = self.identities
        if self.mpid is not None:
            body["mpid"] = self.mpid
        if self.user_attributes:
            body["user_attributes"] = self.user_attributes
        if self.deleted_user_attributes:
            body["deleted_user_attributes"] = self.deleted_user_attributes
        return body

    def serialize(self, environment: str, source_request_id: str, context: dict | None = None) -> bytes:
        """The batch as JSON bytes: the head serialized, the already serialized events spliced in. `context` is
        the batch's `context` (the run's data plan), the same for every batch of a run."""
        head = orjson.dumps(self._head(environment, source_request_id, context))
        if not self.event_json:
            return head
        return head[:-1] + b',"events":[' + b",".join(self.event_json) + b"]}"

    def to_dict(self, environment: str, source_request_id: str, context: dict | None = None) -> dict:
        body = self._head(environment, source_request_id, context)
        if self.event_json:
            body["events"] = orjson.loads(b"[" + b",".join(self.event_json) + b"]")
        return body


class OneRecordBatch:
    """The batch of a single record (the common case), kept only serialized: `whole` is the batch's JSON after
    its opening brace, less the head (ids and environment). Its identities, attributes and events are not kept
    as objects (a chunk held for grouping is then mostly bytes, which cost the garbage collector nothing); they
    are read back from `whole` when asked for, or when another record joins (`opened`).

    Only `Grouper.add` makes them, storing the four fields itself: there is no `__init__` to call, as this runs
    once per user and chunk, and a call to one is a tenth of grouping's time."""

    __slots__ = ("whole", "event_count", "refs", "size")
    whole: bytes
    event_count: int
    refs: list[str]
    size: int
    mpid = None
    batch_fields = None

    def _data(self) -> dict:
        return orjson.loads(b"{" + self.whole)

    # What a Batch has as fields, read back from `whole`: copies (changing them changes nothing).
    @property
    def identities(self) -> dict[str, str]:
        return self._data()["user_identities"]

    @property
    def deleted_user_attributes(self) -> list[str]:
        return []

    @property
    def user_attributes(self) -> dict[str, object]:
        return self._data().get("user_attributes", {})

    def opened(self) -> Batch:
        """The same batch in the general form, for another record's data to join."""
        data = self._data()
        events = data.get("events")
        return Batch(
            identities=data["user_identities"],
            mpid=None,
            user_attributes=data.get("user_attributes", {}),
            event_json=[_events_json(events)] if events else [],
            event_count=self.event_count,
            refs=list(self.refs),
            size=self.size,
        )

    def serialize(self, environment: str, source_request_id: str, context: dict | None = None) -> bytes:
        head = b'{"source_request_id":' + orjson.dumps(source_request_id) + b',"environment":'
        head += orjson.dumps(environment) + b","
        if context:
            head += b'"context":' + orjson.dumps(context) + b","
        return head + self.whole

    def to_dict(self, environment: str, source_request_id: str, context: dict | None = None) -> dict:
        body: dict = {"source_request_id": source_request_id, "environment": environment}
        if context:
            body["context"] = context
        return {**body, **self._data()}


def serialize_batches(
    batches: Sequence[Batch | OneRecordBatch | bytes],
    environment: str,
    source_request_ids: Sequence[str],
    context: dict | None = None,
) -> list[bytes]:
    """`[b.serialize(environment, i, context) for b, i in zip(batches, source_request_ids)]`, where a batch given
    as bytes is a OneRecordBatch's `whole` (see Built), with what is the same for every batch (the environment,
    the context) serialized once. The ids must need no JSON escaping (as `batch_ids` and `deterministic_id`
    make them: hex digits and dashes); they are spliced in as they are."""
    start = b'{"source_request_id":"'
    middle = b'","environment":' + orjson.dumps(environment) + b","
    if context:
        middle += b'"context":' + orjson.dumps(context) + b","
    concat = b"".join
    return [
        concat((start, srid.encode(), middle, batch))
        if isinstance(batch, bytes)
        else concat((start, srid.encode(), middle, batch.whole))
        if batch.whole is not None
        else batch.serialize(environment, srid, context)
        for batch, srid in zip(batches, source_request_ids, strict=True)
    ]


class BatchTooLarge(ValueError):
    """A single record's data cannot fit in one batch."""


# Fixed overhead of a batch without events: ids, environment, identities. Estimated generously so that
# estimates never undershoot the real size; the real size is checked again when serialized.
_BATCH_OVERHEAD = 160
# A record serialized whole, {"user_identities":I,"user_attributes":A,"events":E}, is 20 + len(I) bytes, plus
# 19 + len(A) with attributes, plus 10 + len(E) with events, where len(E) is one more than the events' share of
# the estimate (their lengths and a comma each); so its estimate is _BATCH_OVERHEAD + its length, less these.
_WHOLE_ATTRIBUTES = 19
_WHOLE_EVENTS = 11

# Note on memory: orjson writes into a buffer of at least 1 KB and shrinks it in place, so keeping thousands of
# its results alive (as grouping does until the chunk is sent) grows the heap by a page every few records. What
# is kept is therefore always a slice (a right-sized copy) of what orjson returned.


def _events_json(events: list[dict]) -> bytes:
    """The events serialized and comma-separated (without the brackets)."""
    try:
        return orjson.dumps(events)[1:-1]
    except orjson.JSONEncodeError:  # nested too deep once in a list? One by one, as mParticle will get them.
        return b",".join([orjson.dumps(e) for e in events])


def _size(value: object) -> int:
    return len(orjson.dumps(value))


_new_object = object.__new__


class Grouper:
    """Groups records per user as they come, in first-seen order, splitting a user's data when a batch would
    pass `max_batch_bytes`. Records are taken one at a time so that a caller need not hold a chunk's converted
    records: what a batch keeps of them is bytes. `batches` and `refused` (records too large on their own, with
    the reason) are the result."""

    __slots__ = ("max_batch_bytes", "open_batches", "batches", "refused")

    def __init__(self, max_batch_bytes: int = schema.MAX_BATCH_BYTES):
        self.max_batch_bytes = max_batch_bytes
        self.open_batches: dict[object, int] = {}  # user → index in batches of the user's open batch
        self.batches: list[Batch | OneRecordBatch] = []
        self.refused: list[tuple[UserRecord, str]] = []

    def add(self, record: UserRecord, dumps=orjson.dumps, sort_keys=orjson.OPT_SORT_KEYS) -> None:
        identities = record.identities
        mpid = record.mpid
        # The user: identities in a canonical form, as bytes (which the garbage collector need not follow).
        ids_json = dumps(identities, option=sort_keys)[1:]
        key: object = ids_json if mpid is None else (mpid, ids_json)
        batch_fields = record.batch_fields
        fields_size = 0
        if batch_fields is not None:
            # Records of one user with different device info, ip or partner ids are sent in different batches:
            # a batch says which device and request its data came from, so merging them would attribute
            # events to the wrong device (and "latest wins" would silently rewrite earlier records' data).
            fields_json = dumps(batch_fields, option=sort_keys)
            key = (mpid, ids_json, fields_json)
            fields_size = len(fields_json)
        index = self.open_batches.get(key)
        attributes = record.user_attributes
        events = record.events
        max_batch_bytes = self.max_batch_bytes
        if index is None and identities and mpid is None and not record.deleted_user_attributes and not fields_size:
            # The common case, a user's first record: serialized whole, once, it is measured and ready to send.
            if attributes and events:
                data: dict = {"user_identities": identities, "user_attributes": attributes, "events": events}
            else:
                data = {"user_identities": identities}
                if attributes:
                    data["user_attributes"] = attributes
                if events:
                    data["events"] = events
            try:
                whole = dumps(data)[1:]
            except orjson.JSONEncodeError:
                pass  # nested too deep once wrapped? The general path below says.
            else:
                own_size = _BATCH_OVERHEAD + 1 + len(whole)
                own_size -= (_WHOLE_ATTRIBUTES if attributes else 0) + (_WHOLE_EVENTS if events else 0)
                if own_size > max_batch_bytes:
                    self.refused.append((record, _too_large(own_size, max_batch_bytes)))
                    return
                one = _new_object(OneRecordBatch)  # its four fields, stored here (see OneRecordBatch)
                one.whole = whole
                one.event_count = len(events)
                one.refs = [record.ref]
                one.size = own_size
                batches = self.batches
                self.open_batches[key] = len(batches)
                batches.append(one)
                return
        event_json = _events_json(events) if events else b""
        events_size = len(event_json) + 1 if events else 0
        attrs_size = _size(attributes) if attributes else 0
        deleted_size = _size(record.deleted_user_attributes) if record.deleted_user_attributes else 0
        ids_size = 1 + len(ids_json) + 20
        own_size = _BATCH_OVERHEAD + ids_size + events_size + attrs_size + deleted_size + fields_size
        if own_size > max_batch_bytes:
            self.refused.append((record, _too_large(own_size, max_batch_bytes)))
            return
        # Attributes merge (later values win), so adding them can only grow the batch by attrs_size.
        added = events_size + attrs_size + deleted_size
        if index is None or (batch := self.batches[index]).size + added > max_batch_bytes:
            batch = Batch(
                identities=dict(identities),
                mpid=mpid,
                size=_BATCH_OVERHEAD + ids_size + fields_size,
                batch_fields=batch_fields,
            )
            self.open_batches[key] = len(self.batches)
            self.batches.append(batch)
        elif isinstance(batch, OneRecordBatch):
            batch = batch.opened()
            self.batches[index] = batch
        if attributes:
            batch.user_attributes.update(attributes)
            if batch.deleted_user_attributes:
                batch.deleted_user_attributes = [a for a in batch.deleted_user_attributes if a not in attributes]
        for name in record.deleted_user_attributes:
            batch.user_attributes.pop(name, None)
            if name not in batch.deleted_user_attributes:
                batch.deleted_user_attributes.append(name)
        if events:
            batch.event_json.append(event_json)
            batch.event_count += len(events)
        batch.refs.append(record.ref)
        batch.size += added


def group_by_user(
    records: Iterable[UserRecord], max_batch_bytes: int = schema.MAX_BATCH_BYTES
) -> tuple[list[Batch | OneRecordBatch], list[tuple[UserRecord, str]]]:
    """Group records per user (see `Grouper`). Returns (batches, refused) where refused holds records too large
    on their own, with the reason."""
    grouper = Grouper(max_batch_bytes)
    add = grouper.add
    for record in records:
        add(record)
    return grouper.batches, grouper.refused


def _too_large(size: int, limit: int) -> str:
    return f"the record's data is {size} bytes, over the {limit}-byte batch limit"


def serialize(batch: dict) -> bytes:
    return orjson.dumps(batch)


def join(parts: Sequence[bytes]) -> bytes:
    """The body of a bulk request made of already serialized batches."""
    return b"[" + b",".join(parts) + b"]"


def pack(
    sizes: Sequence[int],
    max_batches: int = schema.MAX_BATCHES_PER_REQUEST,
    max_bytes: int = schema.MAX_REQUEST_BYTES,
) -> list[range]:
    """Split serialized batches (given by their sizes, in order) into consecutive groups that each make a
    bulk body of at most `max_batches` batches and strictly under `max_bytes` bytes."""
    if max_batches < 1:
        raise ValueError(f"max_batches must be at least 1, not {max_batches}")
    groups: list[range] = []
    count = len(sizes)
    start = 0
    while start < count:
        end = min(start + max_batches, count)
        # The common case: the next max_batches batches fit in one body together ("[", "]" and the commas).
        if sum(sizes[start:end]) + (end - start) + 1 < max_bytes:
            groups.append(range(start, end))
            start = end
            continue
        body = _ARRAY_OVERHEAD
        i = start
        while i < end:
            size = sizes[i]
            if _ARRAY_OVERHEAD + size >= max_bytes:
                raise BatchTooLarge(f"batch {i} is {size} bytes, too large for any request")
            added = size + (1 if i > start else 0)
            if body + added >= max_bytes:
                break
            body += added
            i += 1
        groups.append(range(start, i))
        start = i
    return groups


# ----------------------------------------------------------------------- records set aside between reading and grouping


# A record set aside is kept as bytes in one of two forms: "W" (or "A" when it has user attributes) + the batch
# JSON of a record that can be a one-record batch as it is (identities, no mpid, no deletions, no batch-level
# fields: the common case),
# so that a user with a single record needs no parsing at all when built; "R" + the record's fields otherwise.
WHOLE, WHOLE_WITH_ATTRIBUTES, _FIELDS = b"W", b"A", b"R"


# A user's key (see set_aside_form) is its identities' canonical JSON when it is at most this many bytes long.
USER_KEY_TEXT = 200


def set_aside_form(record: UserRecord, dumps=orjson.dumps, sort_keys=orjson.OPT_SORT_KEYS) -> tuple[str, bytes]:
    """A record as it is set aside: (its user, its data). The data is one of the forms above. The user is the
    key its records are built together by: the identities as canonical JSON (sorted keys), after the mpid and
    a "|" when it has one; or, past USER_KEY_TEXT bytes, "#" and a sha1 of that text. Both are exact (no two
    users share a key), and the text is no secret the data does not hold already (a sha1 of every record's
    identities cost more than a tenth of the engine's time per record)."""
    identities = record.identities
    mpid = record.mpid
    if is_whole(record):
        user, data, _ = whole_form(identities, record.user_attributes, record.events)
        return user, data
    ids_json = dumps(identities, option=sort_keys)
    user = user_key(ids_json if mpid is None else b"%d|%s" % (mpid, ids_json))
    fields: dict = {"i": identities}
    if mpid is not None:
        fields["m"] = mpid
    if record.user_attributes:
        fields["a"] = record.user_attributes
    if record.deleted_user_attributes:
        fields["d"] = record.deleted_user_attributes
    if record.events:
        fields["e"] = record.events
    if record.batch_fields is not None:
        fields["x"] = record.batch_fields
    return user, _FIELDS + dumps(fields)


# What Converter.set_aside gives: a record's (user, data, event count) as whole_form makes them, or the
# record itself when it must be routed or set aside in the other form.
SetAside = tuple[str, bytes, int] | UserRecord


def whole_form(
    identities: dict[str, str],
    attributes: dict[str, object],
    events: list[dict],
    dumps=orjson.dumps,
    sort_keys=orjson.OPT_SORT_KEYS,
) -> tuple[str, bytes, int]:
    """(user, data, event count) of a record set aside in the "W" or "A" form: one with identities and no
    mpid, deletions or batch-level fields (see set_aside_form). Converter.set_aside calls it (or writes it
    out) without making a UserRecord."""
    user = user_key(dumps(identities, option=sort_keys))
    if attributes and events:
        return (
            user,
            WHOLE_WITH_ATTRIBUTES
            + dumps({"user_identities": identities, "user_attributes": attributes, "events": events}),
            len(events),
        )
    data: dict = {"user_identities": identities}
    if attributes:
        data["user_attributes"] = attributes
    if events:
        data["events"] = events
    return user, (WHOLE_WITH_ATTRIBUTES if attributes else WHOLE) + dumps(data), len(events)


def has_older(events: list[dict], cutoff: int) -> bool:
    """Whether any of the events is timestamped before `cutoff` (ms since the epoch)."""
    for event in events:
        ts = event["data"].get("timestamp_unixtime_ms")
        if ts is not None and ts < cutoff:
            return True
    return False


def is_whole(record: UserRecord) -> bool:
    """Whether a record is set aside in the "W" or "A" form (see whole_form)."""
    return (
        record.mpid is None
        and bool(record.identities)
        and not record.deleted_user_attributes
        and record.batch_fields is None
    )


def user_key(text: bytes) -> str:
    """A user's key from its canonical text (see set_aside_form)."""
    return text.decode() if len(text) <= USER_KEY_TEXT else "#" + sha1(text, usedforsecurity=False).hexdigest()


def load_record(data, ref: str) -> UserRecord:
    data = bytes(data)
    d = orjson.loads(data[1:])
    if data[:1] != _FIELDS:
        return UserRecord(
            ref=ref, identities=d["user_identities"], user_attributes=d.get("user_attributes", {}),
            events=d.get("events", []),
        )  # fmt: skip
    return UserRecord(
        ref=ref, identities=d["i"], user_attributes=d.get("a", {}), deleted_user_attributes=d.get("d", []),
        events=d.get("e", []), mpid=d.get("m"), batch_fields=d.get("x"),
    )  # fmt: skip


_FIELDS_BYTE, _WHOLE_WITH_ATTRIBUTES_BYTE = _FIELDS[0], WHOLE_WITH_ATTRIBUTES[0]


@dataclass(slots=True)
class Built:
    """What `group_set_aside` makes of set-aside records. Per batch, in parallel lists: the batch, its records'
    refs and its event count. A user's only record (the common case) is its batch as it was stored, the `bytes`
    of the batch's JSON after its head (as OneRecordBatch.whole); other batches are Batch or OneRecordBatch
    objects. `refused` holds the records too large to send on their own, with the reason."""

    batches: list[Batch | OneRecordBatch | bytes] = field(default_factory=list)
    refs: list[Sequence[str]] = field(default_factory=list)
    events: list[int] = field(default_factory=list)
    refused: list[tuple[UserRecord, str]] = field(default_factory=list)


def group_set_aside(rows: Iterable[tuple], max_batch_bytes: int = schema.MAX_BATCH_BYTES) -> Built:
    """Group set-aside records of one endpoint — (endpoint path, user, seq, ref, data, event count, maybe more
    columns), ordered by user then seq — into batches: each user's records together, in time order (a Grouper
    per user with several). A user's only record in the "W" or "A" form becomes its batch as it was stored,
    without being parsed or wrapped in an object.

    This runs once per record of every run, so it walks the rows by index rather than with groupby (no list
    per user)."""
    rows = rows if isinstance(rows, list) else list(rows)
    built = Built()
    put, put_refs, put_events = built.batches.append, built.refs.append, built.events.append
    refused = built.refused
    fields_form, with_attributes = _FIELDS_BYTE, _WHOLE_WITH_ATTRIBUTES_BYTE
    # A record whose data is this short fits in a batch whatever its form (its size estimate is less).
    surely_fits = max_batch_bytes - _BATCH_OVERHEAD
    count = len(rows)
    i = 0
    while i < count:
        row = rows[i]
        user = row[1]
        data = row[4]
        i += 1
        if (i == count or rows[i][1] != user) and data[0] != fields_form:
            if len(data) > surely_fits:
                own_size = _BATCH_OVERHEAD + len(data) - 1 - (_WHOLE_EVENTS if row[5] else 0)
                if data[0] == with_attributes:
                    own_size -= _WHOLE_ATTRIBUTES
                if own_size > max_batch_bytes:
                    refused.append((UserRecord(ref=row[3], identities={}), _too_large(own_size, max_batch_bytes)))
                    continue
            put(data[2:] if type(data) is bytes else bytes(data[2:]))  # after "W{" (a memoryview from bytea)
            put_refs((row[3],))  # a tuple of text: the garbage collector soon stops following it
            put_events(row[5])
            continue
        start = i - 1
        while i < count and rows[i][1] == user:
            i += 1
        grouper = Grouper(max_batch_bytes)
        grouper.refused = refused
        for record in in_time_order([(r[2], load_record(r[4], r[3])) for r in rows[start:i]]):
            grouper.add(record)
        for batch in grouper.batches:
            put(batch)
            put_refs(batch.refs)
            put_events(batch.event_count)
    return built


def in_time_order(records: list[tuple[int, UserRecord]]) -> list[UserRecord]:
    """A user's records ordered by the time of their first event (source order for equal times, and a record
    without events keeps its place after the one before it): events go out in time order, and the attributes
    of the latest record win."""
    if len(records) == 1:
        return [records[0][1]]
    keyed = []
    last = -(2**63)
    for seq, record in records:
        stamps = [t for e in record.events if (t := e.get("data", {}).get("timestamp_unixtime_ms")) is not None]
        if stamps:
            last = min(stamps)
        keyed.append((last, seq, record))
    keyed.sort(key=lambda k: (k[0], k[1]))
    return [record for _, _, record in keyed]


# ------------------------------------------------------------------------------------ what a sent batch is found by

# The device identities of a batch's device_info (https://docs.mparticle.com/developers/server/json-reference/#device_info).
DEVICE_IDENTITY_KEYS: tuple[str, ...] = (
    "android_advertising_id",
    "android_uuid",
    "ios_advertising_id",
    "ios_idfv",
    "push_token",
    "roku_advertising_id",
    "roku_publisher_id",
    "fire_advertising_id",
    "microsoft_advertising_id",
    "microsoft_publisher_id",
)


def search_keys(body: bytes) -> list[list[tuple[str, str]]]:
    """For each batch of a bulk request body, what staff may find it by, as (kind, value) pairs with the values
    as sent: each user identity (its key as the kind: email, customer_id, …), the mpid, device and partner
    identities, the batch's source_request_id and each event's source_message_id. One parse of the body."""
    found: list[list[tuple[str, str]]] = []
    for batch in orjson.loads(body):
        keys: list[tuple[str, str]] = []
        if not isinstance(batch, dict):  # not a batch (mParticle refuses the request): nothing to find it by
            found.append(keys)
            continue
        for kind, value in (batch.get("user_identities") or {}).items():
            if value is not None and value != "":
                keys.append((kind, str(value)))
        if batch.get("mpid") is not None:
            keys.append(("mpid", str(batch["mpid"])))
        device = batch.get("device_info")
        if isinstance(device, dict):
            keys += [(k, str(device[k])) for k in DEVICE_IDENTITY_KEYS if device.get(k) not in (None, "")]
        partner = batch.get("partner_identities")
        if isinstance(partner, dict):
            keys += [(f"partner:{k}", str(v)) for k, v in partner.items() if v not in (None, "")]
        if batch.get("source_request_id"):
            keys.append(("source_request_id", str(batch["source_request_id"])))
        for event in batch.get("events") or ():
            data = event.get("data") if isinstance(event, dict) else None
            if isinstance(data, dict) and data.get("source_message_id"):
                keys.append(("source_message_id", str(data["source_message_id"])))
        found.append(list(dict.fromkeys(keys)))
    return found
