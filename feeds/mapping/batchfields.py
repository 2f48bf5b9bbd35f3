"""Batch-level fields beside the identities — `device_info` (the device identities), `mp_deviceid`,
`partner_identities` and `ip` — compiled into one function of the record, and the data plan a mapping names
for `context.data_plan`. https://docs.mparticle.com/developers/server/json-reference/"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable

from feeds.mparticle import schema

from .limits import MAX_VALUE, identity_text
from .specs import value_reader
from .values import MISSING, RecordError, show

UUID = re.compile(schema.UUID_PATTERN)
# mParticle's data plan ids are slugs (lowercase words joined by underscores or dashes).
PLAN_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,99}")
MAX_PARTNER_IDENTITIES = 20  # (our choice) a record's partner ids are a handful, never a dump of an object


def uuid_problem(text: str) -> str | None:
    if UUID.fullmatch(text):
        return None
    return f"{show(text)} is not a UUID (8-4-4-4-12 hexadecimal digits, e.g. 6f1d2c3b-0a4e-4c1e-9b7d-2f0e5a6b7c8d), as mParticle requires here"


def ip_problem(text: str) -> str | None:
    """None when `text` is an IPv4 or IPv6 address as mParticle takes it (no zone index, no prefix)."""
    if "%" not in text and "/" not in text:
        try:
            ipaddress.ip_address(text)
        except ValueError:
            pass
        else:
            return None
    return f"{show(text)} is not an IPv4 or IPv6 address"


def _text(value: object, where: str) -> str:
    text = identity_text(value, where)
    if len(text) > MAX_VALUE:
        raise RecordError(f"{where}: {len(text)} characters, mParticle takes at most {MAX_VALUE}")
    return text


# (mapping key, where, reader, check of the text): one batch-level value of a mapping.
_Rule = tuple[str, str, Callable[[dict], object], Callable[[str], str | None] | None]


def batch_fields_reader(doc: dict) -> Callable[[dict], dict | None] | None:
    """A function of the record giving its batch-level fields (device_info, mp_deviceid, ip,
    partner_identities; None when the record has none); None when the mapping maps none of them, so that the
    common case costs nothing."""
    device: list[_Rule] = [
        (
            key,
            f"device_info.{key}",
            value_reader(spec, f"device_info.{key}", "string"),
            uuid_problem if key in schema.UUID_DEVICE_IDS else None,
        )
        for key, spec in doc.get("device_info", {}).items()
    ]
    partners: list[_Rule] = [
        (name, f"partner_identities.{name}", value_reader(spec, f"partner_identities.{name}", "string"), None)
        for name, spec in doc.get("partner_identities", {}).items()
    ]
    single: list[_Rule] = []
    if "mp_deviceid" in doc:
        single.append(
            ("mp_deviceid", "mp_deviceid", value_reader(doc["mp_deviceid"], "mp_deviceid", "string"), uuid_problem)
        )
    if "ip" in doc:
        single.append(("ip", "ip", value_reader(doc["ip"], "ip", "string"), ip_problem))
    if not device and not partners and not single:
        return None

    def values(rules: list[_Rule], record: dict) -> dict[str, str]:
        out: dict[str, str] = {}
        for key, where, read, check in rules:
            value = read(record)
            if value is MISSING or value is None:
                continue
            text = _text(value, where)
            if check is not None and (problem := check(text)) is not None:
                raise RecordError(f"{where}: {problem}")
            out[key] = text
        return out

    def read(record: dict) -> dict | None:
        fields: dict = {}
        if device and (info := values(device, record)):
            fields["device_info"] = info
        fields.update(values(single, record))
        if partners and (ids := values(partners, record)):
            fields["partner_identities"] = ids
        return fields or None

    return read


def data_plan_context(plan: dict | None) -> dict | None:
    """The batch `context` for a data plan {"plan_id", "plan_version"?} (already valid), or None."""
    if not plan or not plan.get("plan_id"):
        return None
    data_plan: dict = {"plan_id": plan["plan_id"]}
    if plan.get("plan_version") is not None:
        data_plan["plan_version"] = plan["plan_version"]
    return {"data_plan": data_plan}


def data_plan_problems(plan: object, where: str) -> list[str]:
    """What is wrong with a data plan setting {"plan_id": "...", "plan_version": 2} (the version optional)."""
    if not isinstance(plan, dict):
        return [f'{where}: must be an object like {{"plan_id": "web_plan", "plan_version": 2}}']
    errors = []
    unknown = set(plan) - {"plan_id", "plan_version"}
    if unknown:
        errors.append(f"{where}: unknown keys {sorted(unknown)} (allowed: plan_id, plan_version)")
    plan_id = plan.get("plan_id")
    if not isinstance(plan_id, str) or not PLAN_ID.fullmatch(plan_id):
        errors.append(
            f"{where}.plan_id: must be the data plan's id as mParticle shows it: lowercase letters, digits, "
            f"_ and -, at most 100 characters (e.g. web_plan)"
        )
    version = plan.get("plan_version")
    if version is not None and (
        not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= 2**31 - 1
    ):
        errors.append(f"{where}.plan_version: must be a whole number from 1 (or left out: the plan's active version)")
    return errors
