"""What the log handlers rewrite: credential-link tokens (Django and the servers log request paths) and control
characters (a name or a record's text must not start a forged log line)."""

from __future__ import annotations

import logging
import re

# /connect/<token>/ and the embeddable form's /connect/embed/<token>/ (not /connect/embed/ itself, which has none).
_TOKEN_PATH = re.compile(r"(/connect/(?:embed/)?)(?!embed/)[^/\s\"'?]+")


def redact(text: str) -> str:
    return _TOKEN_PATH.sub(r"\1…", text)


class RedactLinkTokens(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "/connect/" in message:
            record.msg, record.args = redact(message), ()
        return True


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]|\n|\r")


def escape_controls(text: str) -> str:
    return _CONTROL.sub(lambda m: m.group(0).encode("unicode_escape").decode("ascii"), text)


class EscapeControlCharacters(logging.Filter):
    """Line breaks and other control characters in a message are written as escapes (\\n, \\x1b): one record,
    one line. Tracebacks (logged as the record's exception, not its message) keep their lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        escaped = escape_controls(message)
        if escaped != message:
            record.msg, record.args = escaped, ()
        return True
