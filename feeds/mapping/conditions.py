"""`when` conditions: a small, safe language (no eval) that decides whether an event rule applies to a record.

    {"field": "type", "equals": "purchase"}        {"field": "type", "in": ["view", "click"]}
    {"field": "coupon", "exists": true}            {"field": "amount", "gt": 0, "lte": 1000}
    {"not": {...}}   {"all": [{...}, {...}]}   {"any": [{...}, {...}]}

Comparisons read CSV text and JSON values alike: "5" equals 5, "yes" equals true. A missing, null or empty
field never equals, is never in a list and never compares; a value that is not a number never compares.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from .values import MISSING, as_bool, getter

COMPARISONS = {"gt": float.__gt__, "gte": float.__ge__, "lt": float.__lt__, "lte": float.__le__}
FIELD_TESTS = ("equals", "in", "exists", *COMPARISONS)
COMBINATORS = ("not", "all", "any")
MAX_DEPTH = 16

Condition = Callable[[dict], bool]


def _is_scalar(value: object) -> bool:
    return isinstance(value, (str, int, float)) and not (isinstance(value, float) and not math.isfinite(value))


def check_condition(cond: object, where: str, errors: list[str], depth: int = 0) -> None:
    """Append every problem with a condition to `errors`, naming where it is."""
    if depth > MAX_DEPTH:
        errors.append(f"{where}: conditions nested more than {MAX_DEPTH} deep")
        return
    if not isinstance(cond, dict) or not cond:
        errors.append(
            f'{where}: a condition is an object such as {{"field": "type", "equals": "purchase"}}, '
            f'or {{"not": ...}}, {{"all": [...]}}, {{"any": [...]}}'
        )
        return
    combinators = [k for k in COMBINATORS if k in cond]
    if combinators:
        if len(cond) != 1:
            errors.append(f"{where}: '{combinators[0]}' must be alone in its object (found {sorted(cond)})")
            return
        name = combinators[0]
        if name == "not":
            check_condition(cond["not"], f"{where}.not", errors, depth + 1)
            return
        items = cond[name]
        if not isinstance(items, list) or not items:
            errors.append(f"{where}.{name}: must be a non-empty list of conditions")
            return
        for i, item in enumerate(items):
            check_condition(item, f"{where}.{name}[{i}]", errors, depth + 1)
        return
    unknown = set(cond) - {"field", *FIELD_TESTS}
    if unknown:
        errors.append(
            f"{where}: unknown keys {sorted(unknown)} (allowed: field with {', '.join(FIELD_TESTS)}; or {', '.join(COMBINATORS)})"
        )
    if not isinstance(cond.get("field"), str) or not cond["field"]:
        errors.append(f"{where}.field: name the field the condition reads")
    tests = [k for k in FIELD_TESTS if k in cond]
    if not tests:
        errors.append(f"{where}: give a test: {', '.join(FIELD_TESTS)}")
    if "equals" in cond and not _is_scalar(cond["equals"]):
        errors.append(f'{where}.equals: must be text, a number or true/false (for null use "exists": false)')
    if "in" in cond:
        values = cond["in"]
        if not isinstance(values, list) or not values or not all(_is_scalar(v) for v in values):
            errors.append(f"{where}.in: must be a non-empty list of texts, numbers or true/false")
    if "exists" in cond and not isinstance(cond["exists"], bool):
        errors.append(f"{where}.exists: must be true or false")
    for name in COMPARISONS:
        if name in cond and (
            isinstance(cond[name], bool) or not isinstance(cond[name], (int, float)) or not math.isfinite(cond[name])
        ):
            errors.append(f"{where}.{name}: must be a number")


# ------------------------------------------------------------------------------------------------ compiling


def _as_text(value: object) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value) if abs(value) < 10**100 else None
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer() and abs(value) < 2**53:
            return str(int(value))
        return repr(value)
    return None


def _as_number(value: object) -> float | int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _member_test(targets: list) -> Callable[[object], bool]:
    """A test of whether a record value equals one of `targets` (texts, numbers, booleans)."""
    texts = frozenset(t for t in targets if isinstance(t, str))
    numbers = frozenset(t for t in targets if isinstance(t, (int, float)) and not isinstance(t, bool))
    bools = frozenset(t for t in targets if isinstance(t, bool))

    def test(value: object) -> bool:
        if texts and _as_text(value) in texts:
            return True
        if numbers:
            number = _as_number(value)
            if number is not None and number in numbers:
                return True
        return bool(bools) and as_bool(value) in bools

    return test


def compile_condition(cond: dict) -> Condition:
    """A function of the record that says whether the (validated) condition holds."""
    if "not" in cond:
        inner = compile_condition(cond["not"])
        return lambda record: not inner(record)
    if "all" in cond:
        parts = [compile_condition(c) for c in cond["all"]]
        return lambda record: all(p(record) for p in parts)
    if "any" in cond:
        parts = [compile_condition(c) for c in cond["any"]]
        return lambda record: any(p(record) for p in parts)

    get = getter(cond["field"])
    tests: list[Callable[[object], bool]] = []
    if "equals" in cond:
        tests.append(_member_test([cond["equals"]]))
    if "in" in cond:
        tests.append(_member_test(cond["in"]))
    for name, compare in COMPARISONS.items():
        if name in cond:
            bound = float(cond[name])

            def test(value: object, compare=compare, bound=bound) -> bool:
                number = _as_number(value)
                if number is None:
                    return False
                try:
                    return compare(float(number), bound)
                except OverflowError:  # an integer too large for a float
                    return compare(math.copysign(math.inf, number), bound)

            tests.append(test)
    wants = cond.get("exists")

    def holds(record: dict) -> bool:
        value = get(record)
        present = value is not MISSING and value is not None and value != ""
        if wants is not None and present != wants:
            return False
        if not present:
            return not tests
        return all(t(value) for t in tests)

    return holds


def fixed_values(cond: object, field: str) -> set | None:
    """The values `field` can have when `cond` holds, if the condition pins it to a list (equals / in,
    possibly inside "all"); None when it does not. Used to count the event names a rule can produce."""
    if not isinstance(cond, dict):
        return None
    if cond.get("field") == field:
        found: set | None = None
        if "equals" in cond:
            found = {cond["equals"]}
        if isinstance(cond.get("in"), list):
            values = {v for v in cond["in"] if not isinstance(v, (dict, list))}
            found = values if found is None else found & values
        return found
    if isinstance(cond.get("all"), list):
        for part in cond["all"]:
            found = fixed_values(part, field)
            if found is not None:
                return found
    if isinstance(cond.get("any"), list) and cond["any"]:
        union: set = set()
        for part in cond["any"]:
            found = fixed_values(part, field)
            if found is None:
                return None
            union |= found
        return union
    return None
