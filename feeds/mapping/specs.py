"""Value specs (a field name, or {"field" | "value", "type", "transform", ...}) and name templates, compiled
into functions of the record."""

from __future__ import annotations

import string
from collections.abc import Callable

from .timestamps import parse_zone, timestamp_parser
from .values import COERCERS, MISSING, RecordError, getter, scalar_text, show

VALUE_TYPES = ("auto", "string", "int", "float", "number", "bool", "timestamp")
TRANSFORMS = ("trim", "lower", "upper", "decimal_comma")


def _decimal_comma(text: str) -> str:
    """A number written with a decimal comma ("1.234,56", "12,5", "1 234,56") as Python reads numbers: the
    dots and spaces that group thousands go, the comma becomes the decimal point."""
    return text.replace(".", "").replace(" ", "").replace("\xa0", "").replace("\u202f", "").replace(",", ".")


_TRANSFORM_FUNCS: dict[str, Callable[[str], str]] = {
    "trim": str.strip,
    "lower": str.lower,
    "upper": str.upper,
    "decimal_comma": _decimal_comma,
}


def value_reader(spec: object, where: str, default_type: str = "auto") -> Callable[[dict], object]:
    """Compile a value spec into a function of the record that returns the value, None (a JSON null) or
    MISSING. `default_type` applies when the spec does not give a type."""
    if isinstance(spec, str):
        spec = {"field": spec}
    assert isinstance(spec, dict)
    finish = finisher(spec, where, default_type)
    if "value" in spec:
        constant = finish(spec["value"])
        return lambda record: constant

    get = getter(spec["field"])
    if finish is _as_is:
        path = spec["field"]
        if "." not in path:

            def read_plain(record: dict) -> object:
                value = record.get(path, MISSING)
                return MISSING if value == "" else value

            return read_plain

        def read_nested(record: dict) -> object:
            value = get(record)
            return MISSING if value == "" else value

        return read_nested

    def read(record: dict) -> object:
        return finish(get(record))

    return read


def _as_is(value: object) -> object:
    return MISSING if value == "" else value


def _compose(steps: list[Callable[[str], str]]) -> Callable[[str], str] | None:
    if not steps:
        return None
    if len(steps) == 1:
        return steps[0]
    if len(steps) == 2:
        first, second = steps
        return lambda text: second(first(text))

    def apply(text: str) -> str:
        for step in steps:
            text = step(text)
        return text

    return apply


def finisher(spec: dict, where: str, default_type: str = "auto") -> Callable[[object], object]:
    """The part of a value spec that applies to a value once read: transforms, default, required, split,
    type. Returns the value, None or MISSING."""
    kind_name = spec.get("type", default_type)
    transforms = spec.get("transform", [])
    if isinstance(transforms, str):
        transforms = [transforms]
    transform = _compose([_TRANSFORM_FUNCS[t] for t in transforms])
    required = spec.get("required", False)
    separator = spec.get("split")
    field_name = spec.get("field")
    if kind_name == "timestamp":
        fmt = spec.get("format", "auto")
        zone = parse_zone(spec["timezone"]) if "timezone" in spec else None

        parse = timestamp_parser(fmt, zone)

        def coerce(value: object, where: str) -> object:
            try:
                return parse(value)
            except (ValueError, TypeError, OverflowError) as e:
                raise RecordError(f"{where}: {show(value)} is not a time in format {fmt} ({e})") from None

    else:
        coerce = COERCERS.get(kind_name)  # type: ignore[assignment]
    if transform is None and not required and separator is None and coerce is None and "default" not in spec:
        return _as_is

    def finish(value: object) -> object:
        original = value
        if transform is not None and isinstance(value, str):
            value = transform(value)
        if value is MISSING or value is None or value == "":
            if default is not MISSING:
                return default
            if required:
                what = f"field '{field_name}'" if field_name else "the value"
                raise RecordError(f"{where}: {what} is missing or empty")
            return MISSING if value is not None else None
        if separator is not None and isinstance(value, str):
            return [part for part in (p.strip() for p in value.split(separator)) if part]
        if coerce is None:
            return value
        try:
            return coerce(value, where)
        except RecordError as e:
            if original != value:  # say what the record holds, not what the transforms made of it
                raise RecordError(str(e).replace(show(value), show(original), 1)) from None
            raise

    default: object = MISSING
    if "default" in spec and spec["default"] is not None:
        default = finish(spec["default"])
    return finish


def parse_template(text: str) -> list[tuple[str, str | None]]:
    """Split "{category} Viewed" into (literal, field) pairs. Raises ValueError with a reason for people."""
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as e:
        raise ValueError(f"{e} (write {{{{ and }}}} for literal braces)") from None
    parts: list[tuple[str, str | None]] = []
    for literal, field, spec, conversion in parsed:
        if field is not None:
            if not field:
                raise ValueError("a placeholder {} needs a field name, e.g. {category}")
            if spec or conversion:
                raise ValueError(f"{{{field}...}}: only plain {{field}} placeholders are supported (no ! or :)")
        parts.append((literal, field))
    return parts


def template_reader(text: str, where: str) -> Callable[[dict], str]:
    """A name built from fields: every placeholder must have a value, or the record is refused."""
    parts = [(literal, getter(field) if field is not None else None, field) for literal, field in parse_template(text)]

    def render(record: dict) -> str:
        out = []
        for literal, get, field in parts:
            out.append(literal)
            if get is not None:
                value = get(record)
                if value is MISSING or value is None or value == "":
                    raise RecordError(f"{where}: field '{field}' is missing or empty (needed for {text!r})")
                out.append(scalar_text(value, f"{where}: field '{field}'"))
        return "".join(out)

    return render


def template_fields(text: str) -> list[str]:
    return [field for _, field in parse_template(text) if field is not None]


def is_template(text: str) -> bool:
    return "{" in text or "}" in text
