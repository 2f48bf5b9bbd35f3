from __future__ import annotations

import re

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feeds.mparticle import schema
from feeds.mparticle.batch import BatchTooLarge, UserRecord, group_by_user, join, pack, serialize


def event(name: str, size: int = 0) -> dict:
    data: dict[str, object] = {"event_name": name, "custom_event_type": "other"}
    if size:
        data["custom_attributes"] = {"blob": "x" * size}
    return {"event_type": "custom_event", "data": data}


def test_a_users_events_go_into_one_batch():
    records = [
        UserRecord(ref=f"l{i}", identities={"customer_id": f"u{i % 3}"}, events=[event(f"e{i}")]) for i in range(12)
    ]
    batches, refused = group_by_user(records)
    assert refused == []
    assert len(batches) == 3
    assert [b.event_count for b in batches] == [4, 4, 4]
    assert batches[0].refs == ["l0", "l3", "l6", "l9"]


def test_later_attributes_win_and_deletions_merge():
    records = [
        UserRecord(ref="1", identities={"customer_id": "u"}, user_attributes={"plan": "free", "a": 1}),
        UserRecord(
            ref="2", identities={"customer_id": "u"}, user_attributes={"plan": "pro"}, deleted_user_attributes=["a"]
        ),
    ]
    [batch], _ = group_by_user(records)
    assert batch.user_attributes == {"plan": "pro"}
    assert batch.deleted_user_attributes == ["a"]


def test_a_batch_stays_under_the_batch_limit():
    records = [UserRecord(ref=str(i), identities={"customer_id": "u"}, events=[event("e", 10_000)]) for i in range(40)]
    batches, _ = group_by_user(records)
    assert len(batches) > 1
    for b in batches:
        assert len(b.serialize("production", "id")) <= schema.MAX_BATCH_BYTES


def test_a_record_too_large_for_any_batch_is_refused():
    records = [UserRecord(ref="big", identities={"customer_id": "u"}, events=[event("e", 200_000)])]
    batches, refused = group_by_user(records)
    assert batches == []
    assert refused[0][0].ref == "big"
    assert "over the 131072-byte batch limit" in refused[0][1]


def test_pack_respects_100_batches_and_256kb():
    sizes = [1000] * 250
    groups = pack(sizes)
    assert [len(g) for g in groups] == [100, 100, 50]
    big = [100_000] * 5
    groups = pack(big)
    assert [len(g) for g in groups] == [2, 2, 1]
    for g in pack([120_000, 120_000, 20_000, 131_000, 1]):
        body = join([b"x" * [120_000, 120_000, 20_000, 131_000, 1][i] for i in g])
        assert len(body) < schema.MAX_REQUEST_BYTES


def test_pack_edge_of_the_request_limit():
    # Two batches whose array is exactly 256 KB must not share a request: the body must stay below the limit.
    half = (schema.MAX_REQUEST_BYTES - 3) // 2
    sizes = [half, schema.MAX_REQUEST_BYTES - 3 - half]
    assert 2 + sizes[0] + 1 + sizes[1] == schema.MAX_REQUEST_BYTES
    assert [len(g) for g in pack(sizes)] == [1, 1]
    with pytest.raises(BatchTooLarge):
        pack([schema.MAX_REQUEST_BYTES])


def test_to_dict_is_the_mparticle_batch_format():
    [batch], _ = group_by_user(
        [UserRecord(ref="1", identities={"email": "a@b.c"}, user_attributes={"x": 1}, events=[event("e")], mpid=7)]
    )
    body = orjson.loads(serialize(batch.to_dict("development", "srid-1")))
    assert body == {
        "source_request_id": "srid-1",
        "environment": "development",
        "user_identities": {"email": "a@b.c"},
        "mpid": 7,
        "user_attributes": {"x": 1},
        "events": [event("e")],
    }


def test_serialize_splices_events_into_the_same_json_as_to_dict():
    records = [
        UserRecord(ref=str(i), identities={"customer_id": "u"}, user_attributes={"a": i}, events=[event(f"e{i}")])
        for i in range(3)
    ]
    [batch], _ = group_by_user(records)
    assert orjson.loads(batch.serialize("production", "x")) == batch.to_dict("production", "x")
    [empty], _ = group_by_user([UserRecord(ref="1", identities={"customer_id": "v"}, user_attributes={"a": 1})])
    assert orjson.loads(empty.serialize("development", "y")) == {
        "source_request_id": "y",
        "environment": "development",
        "user_identities": {"customer_id": "v"},
        "user_attributes": {"a": 1},
    }


def test_deterministic_ids_are_uuid5():
    import uuid

    from feeds.mparticle.batch import MPFEED_NAMESPACE, deterministic_id

    for parts in [("a",), (1, 2, "x"), ("ws", 7, 0, "/bulkevents", 99), ("é", "ü")] + [(i, "k") for i in range(200)]:
        assert deterministic_id(*parts) == str(uuid.uuid5(MPFEED_NAMESPACE, ":".join(map(str, parts))))


def test_batch_ids_are_distinct_deterministic_uuids_led_by_the_uuid5_of_their_parts(monkeypatch):
    import uuid

    from feeds.mparticle import batch as batch_module
    from feeds.mparticle.batch import batch_ids, deterministic_id

    ids = batch_ids(1000, 3, 41, 7, "/bulkevents")
    assert ids[0] == deterministic_id(3, 41, 7, "/bulkevents")
    assert ids == batch_ids(1000, 3, 41, 7, "/bulkevents")  # the same on every retry of the chunk
    assert len(set(ids)) == 1000
    assert not set(ids) & set(batch_ids(1000, 3, 41, 8, "/bulkevents"))  # the next chunk's are others
    for value in ids:
        parsed = uuid.UUID(value)
        assert str(parsed) == value and parsed.version == 5 and parsed.variant == uuid.RFC_4122
    assert batch_ids(0, "x") == [] and batch_ids(1, "x") == [deterministic_id("x")]

    # A node field near its end wraps around (modulo 2**48) and still gives distinct, well-formed ids.
    monkeypatch.setattr(batch_module, "deterministic_id", lambda *parts: "0b7c0f2e-1d3a-5e4f-8a9b-fffffffffffe")
    wrapped = batch_module.batch_ids(4, "x")
    assert [w[24:] for w in wrapped] == ["fffffffffffe", "ffffffffffff", "000000000000", "000000000001"]

    # Formatted sixteen at a time, they are the first id's node plus one, two…, whatever it starts at and ends.
    for node in ("000000000000", "00000000000f", "0000000000f1", "abcdef012340", "ffffffffffef", "fffffffffff0"):
        first = "0b7c0f2e-1d3a-5e4f-8a9b-" + node
        monkeypatch.setattr(batch_module, "deterministic_id", lambda *parts, first=first: first)
        for count in (1, 2, 15, 16, 17, 31, 32, 33, 100):
            expected = [first[:24] + "%012x" % ((int(node, 16) + i) % 2**48) for i in range(count)]
            assert batch_module.batch_ids(count, "x") == expected, (node, count)


def reference_pack(sizes, max_batches, max_bytes):
    """pack as a plain greedy loop over every batch: the reference its fast path must agree with."""
    groups, start, body = [], 0, 2
    for i, size in enumerate(sizes):
        if 2 + size >= max_bytes:
            raise BatchTooLarge(f"batch {i} is {size} bytes, too large for any request")
        added = size + (1 if i > start else 0)
        if i - start >= max_batches or body + added >= max_bytes:
            groups.append(range(start, i))
            start, body, added = i, 2, size
        body += added
    if start < len(sizes):
        groups.append(range(start, len(sizes)))
    return groups


@settings(max_examples=300, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=1, max_value=400), max_size=400),
    max_batches=st.integers(min_value=1, max_value=120),
    max_bytes=st.integers(min_value=50, max_value=5000),
)
def test_pack_is_the_greedy_packing(sizes, max_batches, max_bytes):
    try:
        expected = reference_pack(sizes, max_batches, max_bytes)
    except BatchTooLarge as e:
        with pytest.raises(BatchTooLarge, match=re.escape(str(e))):
            pack(sizes, max_batches, max_bytes)
        return
    groups = pack(sizes, max_batches, max_bytes)
    assert groups == expected
    for group in groups:
        assert 0 < len(group) <= max_batches
        assert len(join([b"x" * sizes[i] for i in group])) < max_bytes


def test_a_one_record_batch_serialized_alone_escapes_any_id():
    [batch], _ = group_by_user([UserRecord(ref="1", identities={"customer_id": "v"}, events=[event("e")])])
    body = orjson.loads(batch.serialize("production", 'odd "id" \\ here'))
    assert body["source_request_id"] == 'odd "id" \\ here' and body["user_identities"] == {"customer_id": "v"}
    assert batch.deleted_user_attributes == [] and batch.mpid is None
    with pytest.raises(ValueError, match="at least 1"):
        pack([10, 20], max_batches=0)
