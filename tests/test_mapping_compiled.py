"""The generated converter (feeds/mapping/codegen.py) against the converter made of closures only: every mapping
of the test suite, of the README and of the demo, on many records (plausible ones and junk), must give the same
output — the same values of the same types in the same order — or the same RecordError message, and count the
same truncations. And the fast grouping of batches against the reference algorithm it replaced."""

from __future__ import annotations

import ast
import contextlib
import copy
import dataclasses
import hashlib
import importlib
import json
import math
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feeds.mapping import RecordError, compile_mapping, validate
from feeds.mapping.events import id_maker
from feeds.mparticle import schema
from feeds.mparticle.batch import (
    MPFEED_NAMESPACE,
    UserRecord,
    deterministic_id,
    group_by_user,
    set_aside_form,
    uuid5_of,
)
from tests.helpers import MAPPING
from tests.test_mapping_junk import FIELDS, KITCHEN_SINK, PLAUSIBLE, TRICKY_TEXT, junk

ROOT = Path(__file__).resolve().parent.parent
checked = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=200,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# ---------------------------------------------------------------------------------------------- mappings


def _dicts_in_tests() -> list[dict]:
    """Every dict written in the mapping tests that is a valid mapping (evaluated in its module, when it can be)."""
    found = []
    for path in sorted((ROOT / "tests").glob("test_mapping*.py")) + [ROOT / "tests" / "helpers.py"]:
        if path.name == Path(__file__).name:
            continue
        module = importlib.import_module(f"tests.{path.stem}")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Dict):
                value = _evaluate(node, path, vars(module))
                if isinstance(value, dict) and ("identities" in value or "mpid" in value) and not validate(value):
                    found.append(value)
    return found


def _evaluate(node: ast.expr, path: Path, namespace: dict) -> object:
    """A dict written in a test, evaluated in its module; None when it uses names local to a test function."""
    with contextlib.suppress(Exception):
        return eval(compile(ast.Expression(node), str(path), "eval"), dict(namespace))  # noqa: S307 - our tests
    return None


def _readme_examples() -> list[dict]:
    """The README's JSON examples, with an identity added to those that only show one part of a mapping."""
    found = []
    for block in re.findall(r"```json\n(.*?)```", (ROOT / "README.md").read_text(), re.S):
        try:
            doc = json.loads(block)
        except ValueError:
            continue
        if isinstance(doc, dict) and "identities" not in doc and "mpid" not in doc:
            doc = {"identities": {"customer_id": "customer_id"}, **doc}
        if not validate(doc):
            found.append(doc)
    return found


def _unique(docs: list[dict]) -> list[dict]:
    seen, out = set(), []
    for doc in docs:
        key = json.dumps(doc, sort_keys=True, default=repr)
        if key not in seen:
            seen.add(key)
            out.append(doc)
    return out


DOCS = _unique(
    [
        MAPPING,
        KITCHEN_SINK,
        {**KITCHEN_SINK, "options": {"long_values": "truncate"}},
        json.loads((ROOT / "demo" / "mapping.json").read_text()),
        *_readme_examples(),
        *_dicts_in_tests(),
    ]
)


def test_the_mappings_of_the_suite_are_all_collected():
    assert len(_readme_examples()) >= 10
    assert len(DOCS) >= 60


def _strings(value: object) -> set[str]:
    """Every text in a document (field names among them), and the parts of dotted ones."""
    found: set[str] = set()
    if isinstance(value, str):
        found.add(value)
        found.update(value.split("."))
        found.update(re.findall(r"\{([^{}]+)\}", value))
    elif isinstance(value, dict):
        for key, child in value.items():
            found |= _strings(key) | _strings(child)
    elif isinstance(value, list):
        for child in value:
            found |= _strings(child)
    return found


# ------------------------------------------------------------------------------------------ comparing


def outcome(converter, record: object, ref: str = "f.csv:2") -> tuple:
    """What converting does, in a form that tells 1 from 1.0 from True and sees the order of keys."""
    try:
        user = converter.convert(record, ref)
    except RecordError as e:
        result: tuple = ("refused", str(e), e.__cause__ is None)
    else:
        parts = (user.ref, user.identities, user.user_attributes, user.deleted_user_attributes, user.events, user.mpid)
        result = ("converted", repr(parts))
    return (*result, repr(converter.stats))


def pair(doc: dict, salt: str = "w1"):
    return compile_mapping(doc, id_salt=salt), compile_mapping(doc, id_salt=salt, codegen=False)


# Converter.set_aside's bounds: none, one after the suite's times (2026-11-01T00:00Z), one before every time.
CUTOFFS = (None, 1_793_491_200_000, -(2**62))


def aside_outcome(converter, record: object, ref: str, cutoff: int | None) -> tuple:
    """What Converter.set_aside gives: the set-aside form as it is (bytes and all), or the record to route."""
    try:
        got = converter.set_aside(record, ref, cutoff)
    except RecordError as e:
        return ("refused", str(e))
    if type(got) is tuple:
        return ("set aside", got)
    return ("routed", repr(dataclasses.astuple(got)))


def expected_aside(converter, record: object, ref: str, cutoff: int | None) -> tuple:
    """What set_aside must give: set_aside_form of the converted record, when that is in the common form and no
    event is before `cutoff`; else the record."""
    try:
        user = converter.convert(record, ref)
    except RecordError as e:
        return ("refused", str(e))
    stamps = [e["data"].get("timestamp_unixtime_ms") for e in user.events]
    old = cutoff is not None and any(ts is not None and ts < cutoff for ts in stamps)
    if user.mpid is None and not user.deleted_user_attributes and user.batch_fields is None and not old:
        return ("set aside", (*set_aside_form(user), len(user.events)))
    return ("routed", repr(dataclasses.astuple(user)))


def same(generated, closures, record: object, ref: str = "f.csv:2") -> None:
    assert outcome(generated, record, ref) == outcome(closures, record, ref), (record, generated.source)
    for cutoff in CUTOFFS:  # (each converter called alike, so that their counters stay comparable)
        expected = expected_aside(generated, record, ref, cutoff)
        assert aside_outcome(generated, record, ref, cutoff) == expected, (record, cutoff, generated.source)
        assert aside_outcome(closures, record, ref, cutoff) == expected_aside(closures, record, ref, cutoff) == expected


@pytest.mark.parametrize("doc", DOCS, ids=[f"doc{i}" for i in range(len(DOCS))])
def test_generated_and_closure_converters_agree_on_the_suites_records(doc):
    generated, closures = pair(doc)
    records = [PLAUSIBLE, {}, {"id": "u"}]
    records += [copy.deepcopy(s["record"]) for s in doc.get("samples", []) if isinstance(s.get("record"), dict)]
    names = sorted(_strings(doc) | set(FIELDS))
    texts = ["", " ", "x", " Mixed Case ", "12", "12.5", "-0", "1e3", "1e400", "nan", "true", "no", "9" * 25, "é" * 3]
    texts += ["2026-11-20T10:00:00Z", "2026-11-20T10:00:00+02:00", "2026-11-20", "1795168800", "20/11/2026 10:00"]
    texts += ['{"a": 1}', '[{"sku": "A", "price": "2"}]', "a, b,,c", "view", "purchase", "x" * 5000, "\ud800"]
    values = [*texts, None, True, 0, 7, 2.5, math.inf, 2**70, [], ["a"], {}, {"a": "b"}, [{"sku": "A"}]]
    for i, value in enumerate(values):
        # The same value in every field the mapping may read, then alone in each field of a plausible record.
        records.append(dict.fromkeys(names, value))
        for name in names[i % 3 :: 3]:
            records.append({**PLAUSIBLE, **dict.fromkeys(names, "1"), name: value})
    for record in records:
        same(generated, closures, record)
    for not_a_record in (None, [], "x", 3):
        same(generated, closures, not_a_record)


@checked
@given(data=st.data(), which=st.integers(min_value=0, max_value=len(DOCS) - 1))
def test_generated_and_closure_converters_agree_on_junk(data, which):
    doc = DOCS[which]
    names = sorted(_strings(doc))[:40] or ["id"]
    keys = st.sampled_from(names) | st.sampled_from(FIELDS) | st.text(max_size=4)
    record = data.draw(st.dictionaries(keys, junk | st.sampled_from(TRICKY_TEXT), max_size=12))
    generated, closures = pair(doc)
    same(generated, closures, record)
    same(generated, closures, {**PLAUSIBLE, **record})


@checked
@given(moment=st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)))
def test_written_out_iso_times_are_the_closures_milliseconds(moment):
    # Every moment in datetime's range, before and after 1970, with and without microseconds.
    generated, closures = pair({"identities": {"customer_id": "id"}, "events": [{"name": "E", "timestamp": "ts"}]})
    for text in (moment.isoformat(), moment.isoformat().replace("+00:00", "Z")):
        same(generated, closures, {"id": "u", "ts": text})
    got = generated.convert({"id": "u", "ts": moment.isoformat()}, "f.csv:2").events[0]["data"]
    assert got["timestamp_unixtime_ms"] == (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def test_the_same_converter_counts_the_same_truncations_over_many_records():
    doc = {
        "identities": {"customer_id": "id"},
        "options": {"long_values": "truncate"},
        "user_attributes": {"bio": "bio", "tags": {"field": "bio", "split": ","}},
        "events": [{"name": "E", "attributes": {"a" * 300: "bio", "b": {"field": "bio", "type": "string"}}}],
    }
    generated, closures = pair(doc)
    for record in [{"id": "u", "bio": "x" * n} for n in (0, 1, 4096, 4097, 9000)] * 3:
        same(generated, closures, record)
    assert generated.stats == closures.stats and generated.stats.names_truncated > 0


def test_record_key_and_refs_reach_the_event_ids_alike():
    generated, closures = pair({**MAPPING, "record_key": "key.id"})
    for key in ("k1", "", None, 12, 1.5, True, ["x"], {"id": "nested"}):
        for ref in ("f.csv:2", "é.csv:3"):
            same(generated, closures, {**PLAUSIBLE, "key": key, "key.id": key}, ref)
            same(generated, closures, {**PLAUSIBLE, "key": {"id": key}}, ref)


def test_unexpected_errors_are_refused_alike():
    class Strange(dict):
        def get(self, *args):
            raise RuntimeError("boom")

    generated, closures = pair(MAPPING)
    assert outcome(generated, Strange(), "r")[:3] == (
        "refused",
        "the record could not be converted (RuntimeError: boom)",
        False,
    )
    same(generated, closures, Strange())


# ------------------------------------------------------------------------------------ the generated source

AWKWARD = [
    "a'b",
    'a"b',
    "a\\b",
    "a\nb",
    "'''",
    '"""',
    "{x}",
    "\x00",
    "é",
    "\ud800",
    "__import__('os').system('false')",
    "'); raise SystemExit(1); ('",
    "v",
    "get",
    "record",
    "MISSING",
]


@pytest.mark.parametrize("name", AWKWARD)
def test_names_from_the_document_never_become_code(name):
    doc = {
        "record_key": name,
        "identities": {"customer_id": name, "email": {"field": name, "transform": ["trim", "lower"]}},
        "user_attributes": {name: name, "n": {"field": name, "type": "number"}},
        "events": [
            {
                "name": name.replace("{", "{{").replace("}", "}}") or "E",
                "custom_event_type": "other",
                "timestamp": {"field": name, "required": False},
                "attributes": {name: name, "c": {"value": name}, "f": {"field": name, "type": "float"}},
            }
        ],
    }
    if validate(doc):
        pytest.skip(f"not a valid mapping: {validate(doc)}")
    generated, closures = pair(doc)
    assert name not in generated.source or repr(name) in generated.source
    for value in ("x", " 5 ", name, "", None, 3):
        same(generated, closures, {name: value})


def test_every_constant_in_the_source_is_a_plain_literal():
    generated = compile_mapping(KITCHEN_SINK)
    tree = ast.parse(generated.source)
    assert [(type(n).__name__, n.name) for n in tree.body] == [("FunctionDef", "convert"), ("FunctionDef", "set_aside")]
    for node in ast.walk(tree):
        assert not isinstance(node, (ast.Import, ast.ImportFrom, ast.Lambda, ast.ClassDef, ast.Global))
        if isinstance(node, ast.Constant):
            assert type(node.value) in (str, int, float, bool, type(None))


def test_the_common_rules_are_written_out():
    source = compile_mapping(MAPPING).source
    assert "get('user_id')" in source and "(v1 := v1.strip().lower())" in source
    assert "float(v)" in source and "fromisoformat(v)" in source
    assert "{'event_type': 'custom_event', 'data': data}" in source


def test_numbers_join_the_written_out_dicts_and_only_a_deleting_mapping_keeps_a_deleted_list():
    doc = {
        **MAPPING,
        "user_attributes": {"plan": "plan", "age": {"field": "age", "type": "int"}},
        "events": [
            {"name": "E", "attributes": {"sku": "sku", "n": {"field": "n", "type": "number"}, "c": {"value": "X"}}}
        ],
    }
    source = compile_mapping(doc).source
    assert "attributes = {'plan': v0, 'age': v1}" in source and "custom = {'sku': v0, 'n': v1, 'c': 'X'}" in source
    assert "deleted" not in source.replace("out.deleted_user_attributes = []", "")
    deleting = compile_mapping({**doc, "user_attributes": {"plan": {"field": "plan", "on_null": "delete"}}}).source
    assert "deleted = []" in deleting and "if not deleted:" in deleting
    generated, closures = pair(doc)
    for record in ({"user_id": "u", "age": "41", "n": "2.5", "sku": "A"}, {"user_id": "u", "age": "x", "n": "nan"}):
        same(generated, closures, {**PLAUSIBLE, **record})


# The mapping of a common feed, with what the text form (codegen._as_text) must get right: identities out of
# their sorted order, a constant among attributes, events with and without a time, text and numbers.
TEXT_FORM = {
    "record_key": "id",
    "identities": {"email": {"field": "email", "transform": ["trim", "lower"]}, "customer_id": "user_id"},
    "user_attributes": {"plan": "plan", "$firstname": "first_name", "source": {"value": 'Pa"rtner'}},
    "events": [
        {
            "name": "Purchase Completed",
            "custom_event_type": "transaction",
            "timestamp": {"field": "ts", "format": "iso8601"},
            "attributes": {"sku": "sku", "amount": {"field": "amount", "type": "float"}, "currency": {"value": "USD"}},
        },
        {
            "name": 'Order "Seen"',
            "attributes": {
                "sku": "sku",
                "note": "note",
                "qty": {"field": "qty", "type": "int"},
                "n": {"field": "n", "type": "number"},
            },
        },
    ],
}
TEXT_FORM_RECORD = {
    "id": "o1", "user_id": "u1", "email": " A@B.C ", "plan": "pro", "first_name": "Ada", "ts": "2026-11-20T10:00:00Z",
    "sku": "S-1", "amount": "12.5", "note": "ok", "qty": "3", "n": "2.50",
}  # fmt: skip
# Text each value is drawn from: what JSON must escape (quotes, backslashes, control characters), what the
# closures refuse or read otherwise (lone surrogates, non-ASCII, empty, too long), and the plain.
text_form_values = (
    st.text(alphabet=st.sampled_from('aZ09 @."\\\x00\x1f\x7f/é\ud800'), max_size=6)
    | st.sampled_from(["", "x" * 5000, "2026-11-20T10:00:00+02:00", "2026-11-20", "1e400", "nan", "-0", "7"])
    | st.none()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
)


def test_the_text_form_is_written_for_a_common_feed_and_gives_the_general_codes_bytes():
    generated, closures = pair(TEXT_FORM)
    set_aside = generated.source[generated.source.index("def set_aside") :]
    assert "j.isprintable()" in set_aside and "identities = {" not in set_aside.split("j = concat(")[0]
    got = generated.set_aside(TEXT_FORM_RECORD, "f.csv:2", None)
    assert got == (*set_aside_form(generated.convert(TEXT_FORM_RECORD, "f.csv:2")), 2)
    assert got[0] == '{"customer_id":"u1","email":"a@b.c"}'  # the user's key sorted; the data keeps the mapping's order
    assert got[1].startswith(b'A{"user_identities":{"email":"a@b.c","customer_id":"u1"},"user_attributes":')
    same(generated, closures, TEXT_FORM_RECORD)
    # Mappings the text form is not for: conditions, an mpid, deletions from a dynamic source…
    for doc in (
        {**TEXT_FORM, "events": [{**TEXT_FORM["events"][0], "when": {"field": "sku", "equals": "S-1"}}]},
        {**TEXT_FORM, "mpid": "mpid"},
        {**TEXT_FORM, "events": []},
        {**TEXT_FORM, "events": [{"name": "E", "timestamp": {"field": "ts", "required": False}}]},
    ):
        assert "j.isprintable()" not in compile_mapping(doc).source
    # Names orjson cannot write (a lone surrogate, which validation lets through): no text form, and the records
    # refused as they always were.
    for doc in (
        {"identities": {"customer_id": "id"}, "events": [{"name": "\ud800"}]},
        {"identities": {"customer_id": "id"}, "user_attributes": {"\ud800": "a"}, "events": [{"name": "E"}]},
        {"identities": {"customer_id": "id"}, "events": [{"name": "E", "attributes": {"\ud800": "a"}}]},
    ):
        assert validate(doc) == []
        generated, closures = pair(doc)
        assert "j.isprintable()" not in generated.source
        record = {"id": "u", "a": "x"}
        assert outcome(generated, record) == outcome(closures, record)
        with pytest.raises(RecordError, match="could not be converted"):
            generated.set_aside(record, "f.csv:2", None)


TEXT_FORM_TRICKY = [
    'a"b', "a\\b", "a\x00b", "a\x1fb", "a\x7fb", "a/b", "aéb", "\ud800", "", " ", "x" * 300, "x" * 5000, 7, 2.5, None,
    True, ["a"], "nan", "1e400", "2026-11-20T10:00:00+02:00", "2026-11-20T10:00:00", "2026-11-20", "2026-11-20T10:00:00.123456Z",
    "2026-10-01T00:00:00Z", "é" * 150, "é" * 4000, "\U0001f600" * 3000, "\u2028", "a\xa0b", "9" * 25, " 12 ", "1_000", "-0.0", "1e16", "1e-7",
]  # fmt: skip


@pytest.mark.parametrize(
    "doc",
    [
        TEXT_FORM,
        {**TEXT_FORM, "user_attributes": {}},  # the "W" form
        {**TEXT_FORM, "record_key": "missing.field"},
        {key: rule for key, rule in TEXT_FORM.items() if key != "record_key"},
        {"identities": {"customer_id": "user_id"}, "events": [{"name": "E", "attributes": {"n" * 300: "note"}}]},
    ],
    ids=["common", "no attributes", "nested record key", "no record key", "a cut attribute name"],
)
def test_the_text_form_gives_the_general_codes_bytes_for_every_tricky_value_in_every_field(doc):
    generated, closures = pair(doc)
    for name in TEXT_FORM_RECORD:
        for value in TEXT_FORM_TRICKY:
            same(generated, closures, {**TEXT_FORM_RECORD, name: value})


@checked
@given(changes=st.dictionaries(st.sampled_from(sorted(TEXT_FORM_RECORD)), text_form_values, max_size=3))
def test_the_text_form_gives_the_general_codes_bytes_or_leaves_the_record_to_it(changes):
    generated, closures = pair(TEXT_FORM)
    same(generated, closures, {**TEXT_FORM_RECORD, **changes})
    same(generated, closures, changes)


# ---------------------------------------------------------------------------------------------- ids


def test_deterministic_ids_are_uuid5_for_any_number_of_parts():
    for parts in [(), ("a",), tuple(range(8)), tuple(range(9)), tuple("abcdefghijkl"), ((1, 2), None, 1.5, "é")]:
        assert deterministic_id(*parts) == str(uuid.uuid5(MPFEED_NAMESPACE, ":".join(map(str, parts))))


def rfc_uuid5(name: bytes) -> str:
    """RFC 4122 version 5 in mpfeed's namespace as the standard library computes it (uuid.uuid5, which takes
    only text in Python 3.11): the first 16 bytes of a sha1, version and variant set."""
    digest = hashlib.sha1(MPFEED_NAMESPACE.bytes + name, usedforsecurity=False).digest()
    return str(uuid.UUID(bytes=digest[:16], version=5))


@checked
@given(
    name=st.binary(max_size=300),
    prefix=st.text(st.characters(codec="utf-8"), max_size=20),  # a salt and a rule's index
    ref=st.text(max_size=80),  # lone surrogates too
)
def test_every_event_and_batch_id_is_the_standard_uuid5(name, prefix, ref):
    # fastuuid makes them: the ids of data sent before it came in must not change.
    assert uuid5_of(name) == rfc_uuid5(name)
    assert id_maker(prefix)(ref) == rfc_uuid5(f"{prefix}:{ref}".encode("utf-8", "surrogatepass"))


def test_an_event_id_is_the_one_it_always_was():
    doc = {"identities": {"customer_id": "id"}, "events": [{"name": "E"}]}
    for converter in pair(doc):
        (event,) = converter.convert({"id": "u"}, "f.csv:2").events
        assert event["data"]["source_message_id"] == "2e75f241-ebb3-5d3a-95c3-9110505c2ec8"  # (as made by hashlib)


# --------------------------------------------------------------------------------------------- batches


def reference_group_by_user(records, max_batch_bytes=schema.MAX_BATCH_BYTES):
    """group_by_user as it was before batches of one record were kept serialized whole: the reference."""
    open_batches: dict = {}
    batches: list = []
    refused: list = []
    for record in records:
        event_json = [orjson.dumps(e) for e in record.events]
        events_size = sum(map(len, event_json)) + len(event_json)
        attrs_size = len(orjson.dumps(record.user_attributes)) if record.user_attributes else 0
        deleted_size = len(orjson.dumps(record.deleted_user_attributes)) if record.deleted_user_attributes else 0
        ids_size = len(orjson.dumps(record.identities)) + 20
        own_size = 160 + ids_size + events_size + attrs_size + deleted_size
        if own_size > max_batch_bytes:
            refused.append(
                (record, f"the record's data is {own_size} bytes, over the {max_batch_bytes}-byte batch limit")
            )
            continue
        key = (record.mpid, tuple(sorted(record.identities.items())))
        batch = open_batches.get(key)
        if batch is None or batch["size"] + events_size + attrs_size + deleted_size > max_batch_bytes:
            batch = {"identities": dict(record.identities), "mpid": record.mpid, "attributes": {}, "deleted": []}
            batch.update(events=[], refs=[], size=160 + ids_size)
            open_batches[key] = batch
            batches.append(batch)
        if record.user_attributes:
            batch["attributes"].update(record.user_attributes)
            batch["deleted"] = [a for a in batch["deleted"] if a not in record.user_attributes]
        for name in record.deleted_user_attributes:
            batch["attributes"].pop(name, None)
            if name not in batch["deleted"]:
                batch["deleted"].append(name)
        batch["events"].extend(event_json)
        batch["refs"].append(record.ref)
        batch["size"] += events_size + attrs_size + deleted_size
    return batches, refused


def reference_body(batch: dict, environment: str, srid: str) -> bytes:
    head: dict = {"source_request_id": srid, "environment": environment}
    if batch["identities"]:
        head["user_identities"] = batch["identities"]
    if batch["mpid"] is not None:
        head["mpid"] = batch["mpid"]
    if batch["attributes"]:
        head["user_attributes"] = batch["attributes"]
    if batch["deleted"]:
        head["deleted_user_attributes"] = batch["deleted"]
    body = orjson.dumps(head)
    return body[:-1] + b',"events":[' + b",".join(batch["events"]) + b"]}" if batch["events"] else body


def assert_grouped_alike(records: list[UserRecord], limit: int = schema.MAX_BATCH_BYTES) -> None:
    expected, expected_refused = reference_group_by_user(copy.deepcopy(records), limit)
    batches, refused = group_by_user(records, limit)
    assert [(r.ref, reason) for r, reason in refused] == [(r.ref, reason) for r, reason in expected_refused]
    assert len(batches) == len(expected)
    for i, (batch, reference) in enumerate(zip(batches, expected)):
        assert (batch.refs, batch.size, batch.event_count) == (
            reference["refs"],
            reference["size"],
            len(reference["events"]),
        )
        assert batch.serialize("production", f"id-{i}") == reference_body(reference, "production", f"id-{i}")
        assert batch.to_dict("development", "x") == orjson.loads(reference_body(reference, "development", "x"))
        if batch.whole is None:  # a batch kept whole holds its user data only as bytes (compared just above)
            assert batch.user_attributes == reference["attributes"]
            assert batch.deleted_user_attributes == reference["deleted"]


def event(i: int, size: int = 0) -> dict:
    data: dict = {"event_name": f"e{i}", "custom_event_type": "other"}
    if size:
        data["custom_attributes"] = {"blob": "é" * size}
    return {"event_type": "custom_event", "data": data}


user_records = st.builds(
    lambda ref, ids, mpid, attributes, deleted, events: UserRecord(ref, ids, attributes, deleted, events, mpid),
    st.text(max_size=3),
    st.dictionaries(
        st.sampled_from(["customer_id", "email", "other"]), st.sampled_from(["u1", "u2", 'é"\\']), max_size=2
    ),
    st.none() | st.sampled_from([1, 2, -(2**63)]),
    st.dictionaries(
        st.sampled_from(["a", "b", "plan"]),
        st.none() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=5),
        max_size=3,
    ),
    st.lists(st.sampled_from(["a", "b", "plan"]), max_size=3),
    st.lists(st.builds(event, st.integers(0, 9), st.sampled_from([0, 0, 10, 300, 3000])), max_size=3),
)


@checked
@given(records=st.lists(user_records, max_size=12), limit=st.sampled_from([600, 2000, 9000, schema.MAX_BATCH_BYTES]))
def test_grouping_gives_what_the_reference_algorithm_gave(records, limit):
    assert_grouped_alike(records, limit)


def test_grouping_converted_records_gives_what_the_reference_algorithm_gave():
    converter = compile_mapping(KITCHEN_SINK, id_salt="w")
    records = []
    for i in range(300):
        record = {
            **PLAUSIBLE,
            "id": f"u{i % 37}",
            "type": ["purchase", "view", "cart"][i % 3],
            "plan": ["", "pro"][i % 2],
        }
        with contextlib.suppress(RecordError):
            records.append(converter.convert(record, f"f:{i}"))
    assert len(records) > 200
    for limit in (1500, 5000, schema.MAX_BATCH_BYTES):
        assert_grouped_alike(records, limit)
