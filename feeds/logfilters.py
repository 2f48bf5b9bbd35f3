"""Keep credential-link tokens out of the logs: Django and the development server log request paths."""

from __future__ import annotations

import logging
import re

_TOKEN_PATH = re.compile(r"(/connect/)[^/\s\"']+")


def redact(text: str) -> str:
    return _TOKEN_PATH.sub(r"\1…", text)


class RedactLinkTokens(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "/connect/" in message:
            record.msg, record.args = redact(message), ()
        return True
