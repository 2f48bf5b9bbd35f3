from __future__ import annotations

import orjson
from django import template

register = template.Library()


@register.filter
def json_script_safe(value) -> str:
    """JSON for an HTML attribute value (Django's autoescape turns quotes and < > & into entities)."""
    return orjson.dumps(value, default=str).decode()
