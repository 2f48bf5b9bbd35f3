"""Golden samples: source records kept in the mapping document with the output they must produce.

    "samples": [
      {"name": "a purchase", "record": {...}, "expect": {"identities": {...}, "events": [...]}},
      {"name": "no user id", "record": {...}, "expect": {"rejected": "no identity"}}
    ]

`check_samples(doc)` converts each record with the document and says, field by field, where the output
differs from what is expected. `compare_outputs(old, new)` converts the old document's sample records with the
old and the new rules and shows what an edit changes. Neither is part of validation: the caller decides
whether a difference blocks a change.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from feeds.mparticle.batch import UserRecord
from feeds.words import json_excerpt

from .converter import compile_mapping
from .values import RecordError

_ABSENT = object()
_EMPTY: dict[str, object] = {
    "identities": {},
    "user_attributes": {},
    "deleted_user_attributes": [],
    "events": [],
    "mpid": None,
    "device_info": {},
    "mp_deviceid": None,
    "partner_identities": {},
    "ip": None,
}
# What a sample's expectation compares, in this order.
_COMPARED = (
    "identities",
    "mpid",
    "user_attributes",
    "deleted_user_attributes",
    "events",
    "device_info",
    "mp_deviceid",
    "partner_identities",
    "ip",
)


def sample_output(record: UserRecord) -> dict:
    """A converted record in the form samples expect: the batch's user data and events, without the
    `source_message_id`s (they depend on the workspace). Empty parts are left out."""
    out: dict = {}
    if record.identities:
        out["identities"] = dict(record.identities)
    if record.mpid is not None:
        out["mpid"] = record.mpid
    if record.user_attributes:
        out["user_attributes"] = dict(record.user_attributes)
    if record.deleted_user_attributes:
        out["deleted_user_attributes"] = list(record.deleted_user_attributes)
    if record.batch_fields:
        out.update(record.batch_fields)
    if record.events:
        out["events"] = [
            {
                "event_type": event["event_type"],
                "data": {k: v for k, v in event["data"].items() if k != "source_message_id"},
            }
            for event in record.events
        ]
    return out


@dataclass
class SampleResult:
    """How one sample fared: `ok`, and otherwise `differences`, one line per field, for people."""

    index: int
    name: str
    ok: bool
    differences: list[str] = field(default_factory=list)
    output: dict | None = None  # what the mapping produced (sample_output form), None when refused
    rejected: str | None = None  # the reason, when the mapping refused the record

    @property
    def label(self) -> str:
        return f"samples[{self.index}]" + (f" ({self.name})" if self.name else "")

    def __str__(self) -> str:
        if self.ok:
            return f"{self.label}: as expected"
        return f"{self.label}: " + "; ".join(self.differences)


@dataclass
class OutputChange:
    """A sample record whose output an edit changes: `differences` reads "where: before → after"."""

    index: int
    name: str
    differences: list[str]
    before: dict  # sample_output form, or {"rejected": reason}
    after: dict

    @property
    def label(self) -> str:
        return f"samples[{self.index}]" + (f" ({self.name})" if self.name else "")

    def __str__(self) -> str:
        return f"{self.label}: " + "; ".join(self.differences)


def _outcome(convert, record: object, ref: str) -> dict:
    try:
        return sample_output(convert(record, ref))
    except RecordError as e:
        return {"rejected": str(e)}


def check_samples(doc: dict, *, id_salt: str = "") -> list[SampleResult]:
    """Convert every sample of the document with its rules and compare with what each expects.
    Raises MappingError when the document is not valid."""
    converter = compile_mapping(doc, id_salt=id_salt)
    results = []
    for i, sample in enumerate(doc.get("samples", [])):
        name = str(sample.get("name", ""))
        expect = sample["expect"]
        outcome = _outcome(converter.convert, sample["record"], f"samples[{i}]")
        rejected = outcome.get("rejected")
        output = None if rejected is not None else outcome
        differences: list[str] = []
        if "rejected" in expect:
            if rejected is None:
                differences.append(f"expected the record to be refused ({expect['rejected']!r}), but it was converted")
            elif expect["rejected"].lower() not in rejected.lower():
                differences.append(f"refused for another reason: expected {expect['rejected']!r}, got {rejected!r}")
        elif rejected is not None:
            differences.append(f"refused: {rejected}")
        else:
            for key in _COMPARED:
                for where, want, got in diff(expect.get(key, _EMPTY[key]), outcome.get(key, _EMPTY[key]), key):
                    if got is _ABSENT:
                        differences.append(f"{where}: missing (expected {_show(want)})")
                    elif want is _ABSENT:
                        differences.append(f"{where}: not expected, got {_show(got)}")
                    else:
                        differences.append(f"{where}: expected {_show(want)}, got {_show(got)}")
        results.append(SampleResult(i, name, not differences, differences, output, rejected))
    return results


def compare_outputs(old_doc: dict, new_doc: dict, *, id_salt: str = "") -> list[OutputChange]:
    """Convert the old document's sample records with the old and with the new rules; one OutputChange per
    sample whose output differs. Raises MappingError when either document is not valid."""
    old = compile_mapping(old_doc, id_salt=id_salt).convert
    new = compile_mapping(new_doc, id_salt=id_salt).convert
    changes = []
    for i, sample in enumerate(old_doc.get("samples", [])):
        ref = f"samples[{i}]"
        before, after = _outcome(old, sample["record"], ref), _outcome(new, sample["record"], ref)
        differences = []
        if "rejected" in before or "rejected" in after:
            if "rejected" not in after:
                differences.append(f"no longer refused (was: {before['rejected']})")
            elif "rejected" not in before:
                differences.append(f"now refused: {after['rejected']}")
            elif before["rejected"] != after["rejected"]:
                differences.append(f"refused for another reason: {before['rejected']!r} → {after['rejected']!r}")
        else:
            for key in _COMPARED:
                for where, was, now in diff(before.get(key, _EMPTY[key]), after.get(key, _EMPTY[key]), key):
                    differences.append(f"{where}: {_show(was, 'absent')} → {_show(now, 'absent')}")
        if differences:
            changes.append(OutputChange(i, str(sample.get("name", "")), differences, before, after))
    return changes


def _same(a: object, b: object) -> bool:
    """JSON equality: 2 and 2.0 are the same number, but true is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return type(a) is type(b) and a == b


def diff(want: object, got: object, where: str = "") -> list[tuple[str, object, object]]:
    """Where two JSON values differ: (path, wanted, got), with _ABSENT for a missing key or list item."""
    out: list[tuple[str, object, object]] = []
    _diff(want, got, where, out)
    return out


def _diff(want: object, got: object, where: str, out: list) -> None:
    if isinstance(want, dict) and isinstance(got, dict):
        for key in want:
            path = f"{where}.{key}" if where else str(key)
            if key in got:
                _diff(want[key], got[key], path, out)
            else:
                out.append((path, want[key], _ABSENT))
        for key in got:
            if key not in want:
                out.append((f"{where}.{key}" if where else str(key), _ABSENT, got[key]))
    elif isinstance(want, list) and isinstance(got, list):
        for i in range(max(len(want), len(got))):
            path = f"{where}[{i}]"
            if i >= len(got):
                out.append((path, want[i], _ABSENT))
            elif i >= len(want):
                out.append((path, _ABSENT, got[i]))
            else:
                _diff(want[i], got[i], path, out)
    elif not _same(want, got):
        out.append((where, want, got))


def _show(value: object, absent: str = "nothing") -> str:
    return absent if value is _ABSENT else json_excerpt(value, 120)
