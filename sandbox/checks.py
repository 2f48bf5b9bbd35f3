"""The sandbox's per-batch validation: mParticle's batch rules, written from mParticle's documentation of the
Events API, so that the client's batch builder is checked against an independent reading of
the rules. No Django imports."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from feeds.mparticle.schema import (
    ATT_AUTHORIZATION_STATUSES,
    CUSTOM_EVENT_TYPES,
    DEVICE_INFO_BOOLEANS,
    DEVICE_INFO_INTEGERS,
    DEVICE_INFO_TEXT,
    DEVICE_PLATFORMS,
    ENVIRONMENTS,
    EVENT_TYPES,
    IDENTITY_KEYS,
    MAX_USER_ATTRIBUTE_LIST_ENTRIES,
    PRODUCT_ACTIONS,
    PROMOTION_ACTIONS,
    PROMOTION_FIELDS,
    UUID_DEVICE_IDS,
    UUID_PATTERN,
)
from feeds.words import json_excerpt, json_type

MAX_PROBLEMS_PER_MESSAGE = 10
_UUID = re.compile(UUID_PATTERN)


# -- per-batch validation ------------------------------------------------------------------------------------
# Our own checker, written from the contract, so that the client's batch builder is checked against an
# independent reading of the rules. A problem is (location inside the batch, what is wrong).

Problem = tuple[str, str]


def validate_batch(batch: Any) -> list[Problem]:
    if not isinstance(batch, dict):
        return [("", f"batch must be an object, got {json_type(batch)}")]
    problems: list[Problem] = []

    if "environment" not in batch:
        problems.append(("environment", "is required (production or development)"))
    elif batch["environment"] not in ENVIRONMENTS:
        problems.append(
            ("environment", f"value must be production or development, got {json_excerpt(batch['environment'], 60)}")
        )

    request_id = batch.get("source_request_id")
    if request_id is not None and not isinstance(request_id, str):
        problems.append(("source_request_id", f"value must be a string, got {json_type(request_id)}"))

    identities = batch.get("user_identities")
    if identities is not None:
        if not isinstance(identities, dict):
            problems.append(("user_identities", f"value must be an object, got {json_type(identities)}"))
        else:
            for key, value in identities.items():
                if key not in IDENTITY_KEYS:
                    problems.append((f"user_identities.{key}", "is not a known identity type"))
                elif value is not None and not isinstance(value, str):
                    problems.append((f"user_identities.{key}", f"value must be a string, got {json_type(value)}"))

    attributes = batch.get("user_attributes")
    if attributes is not None:
        if not isinstance(attributes, dict):
            problems.append(("user_attributes", f"value must be an object, got {json_type(attributes)}"))
        else:
            for key, value in attributes.items():
                _check_user_attribute(f"user_attributes.{key}", value, problems)

    deleted = batch.get("deleted_user_attributes")
    if deleted is not None and (not isinstance(deleted, list) or not all(isinstance(n, str) for n in deleted)):
        problems.append(("deleted_user_attributes", "value must be a list of strings"))

    mpid = batch.get("mpid")
    if mpid is not None and (not isinstance(mpid, int) or isinstance(mpid, bool)):
        problems.append(("mpid", f"value must be an integer, got {json_type(mpid)}"))

    _check_device_info(batch.get("device_info"), problems)
    device_id = batch.get("mp_deviceid")
    if device_id is not None and not _is_uuid(device_id):
        problems.append(("mp_deviceid", f"value must be a UUID, got {json_excerpt(device_id, 60)}"))
    ip = batch.get("ip")
    if ip is not None and not _is_ip(ip):
        problems.append(("ip", f"value must be an IPv4 or IPv6 address, got {json_excerpt(ip, 60)}"))
    partners = batch.get("partner_identities")
    if partners is not None:
        if not isinstance(partners, dict):
            problems.append(("partner_identities", f"value must be an object, got {json_type(partners)}"))
        else:
            for name, value in partners.items():
                if not _is_scalar(value):
                    problems.append((f"partner_identities.{name}", f"value must be a string, got {json_type(value)}"))
    _check_context(batch.get("context"), problems)

    events = batch.get("events")
    if events is not None:
        if not isinstance(events, list):
            problems.append(("events", f"value must be an array, got {json_type(events)}"))
        else:
            for i, event in enumerate(events):
                _check_event(f"events[{i}]", event, problems)
    return problems


def _check_device_info(info: Any, problems: list[Problem]) -> None:
    """device_info as the schema has it: known keys only, each of its type; the advertising and vendor ids
    UUIDs."""
    if info is None:
        return
    if not isinstance(info, dict):
        problems.append(("device_info", f"value must be an object, got {json_type(info)}"))
        return
    for key, value in info.items():
        where = f"device_info.{key}"
        if value is None:
            continue
        if key in UUID_DEVICE_IDS:
            if not _is_uuid(value):
                problems.append((where, f"value must be a UUID, got {json_excerpt(value, 60)}"))
        elif key in DEVICE_INFO_TEXT:
            if not _is_scalar(value):
                problems.append((where, f"value must be a string, got {json_type(value)}"))
        elif key in DEVICE_INFO_INTEGERS:
            if not isinstance(value, int) or isinstance(value, bool):
                problems.append((where, f"value must be an integer, got {json_type(value)}"))
        elif key in DEVICE_INFO_BOOLEANS:
            if not isinstance(value, bool):
                problems.append((where, f"value must be a boolean, got {json_type(value)}"))
        elif key == "platform":
            if value not in DEVICE_PLATFORMS:
                problems.append((where, f"value is not a platform: {json_excerpt(value, 60)}"))
        elif key == "att_authorization_status":
            if value not in ATT_AUTHORIZATION_STATUSES:
                problems.append((where, f"value is not an ATT status: {json_excerpt(value, 60)}"))
        else:
            problems.append((where, "is not a known device_info field"))


def _check_context(context: Any, problems: list[Problem]) -> None:
    if context is None:
        return
    if not isinstance(context, dict):
        problems.append(("context", f"value must be an object, got {json_type(context)}"))
        return
    plan = context.get("data_plan")
    if plan is None:
        return
    if not isinstance(plan, dict):
        problems.append(("context.data_plan", f"value must be an object, got {json_type(plan)}"))
        return
    for key in plan:
        if key not in ("plan_id", "plan_version"):
            problems.append((f"context.data_plan.{key}", "is not a known data_plan field"))
    plan_id = plan.get("plan_id")
    if plan_id is None:
        problems.append(("context.data_plan.plan_id", "is required"))
    elif not isinstance(plan_id, str) or not plan_id:
        problems.append(("context.data_plan.plan_id", "value must be a non-empty string"))
    version = plan.get("plan_version")
    if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
        problems.append(("context.data_plan.plan_version", f"value must be an integer, got {json_type(version)}"))


def _is_uuid(value: Any) -> bool:
    return isinstance(value, str) and _UUID.fullmatch(value) is not None


def _is_ip(value: Any) -> bool:
    if not isinstance(value, str) or "%" in value or "/" in value:
        return False
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _check_user_attribute(where: str, value: Any, problems: list[Problem]) -> None:
    if _is_scalar(value):
        return
    if isinstance(value, list):
        if not all(isinstance(entry, str) for entry in value):
            problems.append((where, "value must be a scalar or a list of strings; the list holds non-strings"))
        elif len(value) > MAX_USER_ATTRIBUTE_LIST_ENTRIES:
            problems.append((where, f"list has {len(value)} entries, at most {MAX_USER_ATTRIBUTE_LIST_ENTRIES}"))
        return
    problems.append((where, f"value must be a scalar or a list of strings, got {json_type(value)}"))


def _check_event(where: str, event: Any, problems: list[Problem]) -> None:
    if not isinstance(event, dict):
        problems.append((where, f"value must be an object, got {json_type(event)}"))
        return
    event_type = event.get("event_type")
    known_type = isinstance(event_type, str) and event_type in EVENT_TYPES
    if event_type is None:
        problems.append((f"{where}.event_type", "is required"))
    elif not known_type:
        problems.append((f"{where}.event_type", f"value is not a known event type: {json_excerpt(event_type, 60)}"))

    data = event.get("data")
    if data is None:
        problems.append((f"{where}.data", "is required"))
        return
    if not isinstance(data, dict):
        problems.append((f"{where}.data", f"value must be an object, got {json_type(data)}"))
        return
    where = f"{where}.data"

    stamp = data.get("timestamp_unixtime_ms")
    if stamp is not None and (not isinstance(stamp, int) or isinstance(stamp, bool)):
        problems.append((f"{where}.timestamp_unixtime_ms", f"value must be an integer, got {json_type(stamp)}"))
    message_id = data.get("source_message_id")
    if message_id is not None and not isinstance(message_id, str):
        problems.append((f"{where}.source_message_id", f"value must be a string, got {json_type(message_id)}"))
    _check_custom_attributes(f"{where}.custom_attributes", data.get("custom_attributes"), problems)

    if event_type == "custom_event":
        _check_name(f"{where}.event_name", data.get("event_name"), problems)
        custom_type = data.get("custom_event_type")
        if custom_type is None:
            problems.append((f"{where}.custom_event_type", "is required"))
        elif custom_type not in CUSTOM_EVENT_TYPES:
            problems.append(
                (f"{where}.custom_event_type", f"value is not a custom event type: {json_excerpt(custom_type, 60)}")
            )
    elif event_type == "screen_view":
        _check_name(f"{where}.screen_name", data.get("screen_name"), problems)
    elif event_type == "commerce_event":
        _check_commerce(where, data, problems)


def _check_commerce(where: str, data: dict[str, Any], problems: list[Problem]) -> None:
    present = [k for k in ("product_action", "promotion_action", "product_impressions") if data.get(k) is not None]
    if len(present) != 1:
        found = ", ".join(present) or "none"
        problems.append(
            (where, f"needs exactly one of product_action, promotion_action, product_impressions (found {found})")
        )
    action = data.get("product_action")
    if action is not None:
        if not isinstance(action, dict):
            problems.append((f"{where}.product_action", f"value must be an object, got {json_type(action)}"))
        else:
            if action.get("action") is None:
                problems.append((f"{where}.product_action.action", "is required"))
            elif action["action"] not in PRODUCT_ACTIONS:
                problems.append(
                    (
                        f"{where}.product_action.action",
                        f"value is not a product action: {json_excerpt(action['action'], 60)}",
                    )
                )
            products = action.get("products")
            if products is not None:
                if not isinstance(products, list):
                    problems.append(
                        (f"{where}.product_action.products", f"value must be an array, got {json_type(products)}")
                    )
                else:
                    for i, product in enumerate(products):
                        at = f"{where}.product_action.products[{i}]"
                        if not isinstance(product, dict):
                            problems.append((at, f"value must be an object, got {json_type(product)}"))
                        else:
                            _check_custom_attributes(
                                f"{at}.custom_attributes", product.get("custom_attributes"), problems
                            )
    promotion = data.get("promotion_action")
    if promotion is not None:
        _check_promotion_action(f"{where}.promotion_action", promotion, problems)
    impressions = data.get("product_impressions")
    if impressions is not None:
        if not isinstance(impressions, list):
            problems.append((f"{where}.product_impressions", f"value must be an array, got {json_type(impressions)}"))
        else:
            for i, impression in enumerate(impressions):
                _check_impression(f"{where}.product_impressions[{i}]", impression, problems)


def _check_promotion_action(where: str, promotion: Any, problems: list[Problem]) -> None:
    if not isinstance(promotion, dict):
        problems.append((where, f"value must be an object, got {json_type(promotion)}"))
        return
    for key in promotion:
        if key not in ("action", "promotions"):
            problems.append((f"{where}.{key}", "is not a known promotion_action field"))
    if promotion.get("action") is None:
        problems.append((f"{where}.action", "is required"))
    elif promotion["action"] not in PROMOTION_ACTIONS:
        problems.append(
            (f"{where}.action", f"value is not a promotion action: {json_excerpt(promotion['action'], 60)}")
        )
    promotions = promotion.get("promotions")
    if promotions is None:
        return
    if not isinstance(promotions, list):
        problems.append((f"{where}.promotions", f"value must be an array, got {json_type(promotions)}"))
        return
    for i, one in enumerate(promotions):
        at = f"{where}.promotions[{i}]"
        if not isinstance(one, dict):
            problems.append((at, f"value must be an object, got {json_type(one)}"))
            continue
        for key, value in one.items():
            if key not in PROMOTION_FIELDS:
                problems.append((f"{at}.{key}", "is not a known promotion field"))
            elif not (isinstance(value, str) if key in ("id", "name") else _is_scalar(value)):
                problems.append((f"{at}.{key}", f"value must be a string, got {json_type(value)}"))


def _check_impression(where: str, impression: Any, problems: list[Problem]) -> None:
    if not isinstance(impression, dict):
        problems.append((where, f"value must be an object, got {json_type(impression)}"))
        return
    for key in impression:
        if key not in ("product_impression_list", "products"):
            problems.append((f"{where}.{key}", "is not a known product impression field"))
    name = impression.get("product_impression_list")
    if name is None:
        problems.append((f"{where}.product_impression_list", "is required"))
    elif not isinstance(name, str):
        problems.append((f"{where}.product_impression_list", f"value must be a string, got {json_type(name)}"))
    products = impression.get("products")
    if products is None:
        problems.append((f"{where}.products", "is required"))
    elif not isinstance(products, list):
        problems.append((f"{where}.products", f"value must be an array, got {json_type(products)}"))
    else:
        for i, product in enumerate(products):
            at = f"{where}.products[{i}]"
            if not isinstance(product, dict):
                problems.append((at, f"value must be an object, got {json_type(product)}"))
            else:
                _check_custom_attributes(f"{at}.custom_attributes", product.get("custom_attributes"), problems)


def _check_custom_attributes(where: str, attributes: Any, problems: list[Problem]) -> None:
    if attributes is None:
        return
    if not isinstance(attributes, dict):
        problems.append((where, f"value must be an object, got {json_type(attributes)}"))
        return
    for key, value in attributes.items():
        if not _is_scalar(value):
            problems.append(
                (f"{where}.{key}", f"value must be a scalar (string, number, boolean or null), got {json_type(value)}")
            )


def _check_name(where: str, value: Any, problems: list[Problem]) -> None:
    if value is None:
        problems.append((where, "is required"))
    elif not isinstance(value, str) or not value.strip():
        problems.append((where, "value must be a non-empty string"))


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def path_message(where: str, problem: str) -> str:
    """An /events message: Path '<location in the batch>': problem."""
    return f"Path '{where}': {problem}" if where else problem


def bulk_message(index: int, problems: list[Problem]) -> str:
    """One message per bad batch of a bulk request. It starts with Path '[n]' because clients match on that."""
    parts = [f"at '{where}': {problem}" if where else problem for where, problem in problems[:MAX_PROBLEMS_PER_MESSAGE]]
    more = len(problems) - MAX_PROBLEMS_PER_MESSAGE
    if more > 0:
        parts.append(f"and {more} more")
    return f"Path '[{index}]': " + "; ".join(parts)
