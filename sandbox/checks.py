"""The sandbox's per-batch validation: mParticle's batch rules, written from mParticle's documentation of the
Events API, so that the client's batch builder is checked against an independent reading of
the rules. No Django imports."""

from __future__ import annotations

from typing import Any

from feeds.mparticle.schema import (
    CUSTOM_EVENT_TYPES,
    ENVIRONMENTS,
    EVENT_TYPES,
    IDENTITY_KEYS,
    MAX_USER_ATTRIBUTE_LIST_ENTRIES,
    PRODUCT_ACTIONS,
)
from feeds.words import json_excerpt, json_type

MAX_PROBLEMS_PER_MESSAGE = 10


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

    events = batch.get("events")
    if events is not None:
        if not isinstance(events, list):
            problems.append(("events", f"value must be an array, got {json_type(events)}"))
        else:
            for i, event in enumerate(events):
                _check_event(f"events[{i}]", event, problems)
    return problems


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
    if promotion is not None and not isinstance(promotion, dict):
        problems.append((f"{where}.promotion_action", f"value must be an object, got {json_type(promotion)}"))
    impressions = data.get("product_impressions")
    if impressions is not None and not isinstance(impressions, list):
        problems.append((f"{where}.product_impressions", f"value must be an array, got {json_type(impressions)}"))


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
