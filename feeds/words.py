"""Words that every part reads and writes alike: true and false, a value's JSON kind, why a connection failed.

One home, so that a source, the mapping, the settings, the Events API client and the sandbox never read or name
the same thing two ways. No Django imports: feeds/mparticle, feeds/mapping and the settings use it.
"""

from __future__ import annotations

from decimal import Decimal

import orjson

TRUE_WORDS = frozenset({"true", "t", "yes", "y", "1", "on"})
FALSE_WORDS = frozenset({"false", "f", "no", "n", "0", "off"})


def truth(text: str) -> bool | None:
    """The one truth table of words (a record's text, a setting, a query parameter): True for TRUE_WORDS, False
    for FALSE_WORDS, in any case and with spaces around; None for any other text."""
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    return None


# JSON's own names of a value's type → the words of a message for people.
_KIND_WORDS = {
    "null": "null",
    "boolean": "a boolean",
    "number": "a number",
    "string": "text",
    "array": "a list",
    "object": "an object",
}


def json_type(value: object) -> str:
    """JSON's name of a value's type ("null", "boolean", "number", "string", "array", "object"), as mParticle's
    messages use it; a value JSON has no name for gets its Python type's."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float, Decimal)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def kind(value: object) -> str:
    """A value's kind in words, with an article, for messages: "a list", "an object", "text", "a number"."""
    name = json_type(value)
    return _KIND_WORDS.get(name) or f"a {name}"


def json_excerpt(value: object, limit: int) -> str:
    """A value as JSON text (its repr() when JSON has no form for it), at most `limit` characters long, for a message."""
    try:
        text = orjson.dumps(value).decode()
    except TypeError:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "…"


def clipped(text: str, limit: int) -> str:
    """`text`, cut to at most `limit` characters with an ellipsis when longer (a result stored in a short column)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def connection_message(error: Exception) -> str:
    """Why a request got no answer, short and free of URLs and headers: it ends up on rows people read."""
    text = str(error)
    if "Connection refused" in text:
        return "the connection was refused"
    if "Name or service not known" in text or "getaddrinfo" in text or "NameResolution" in text:
        return "the host name could not be resolved"
    if "timed out" in text.lower():
        return "it did not answer in time"
    if "RemoteDisconnected" in text or "Connection aborted" in text or "reset" in text.lower():
        return "the connection was closed without an answer"
    return f"the connection failed ({type(error).__name__})"
