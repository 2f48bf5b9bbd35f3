"""Readers that stream source records.

A source is built from a job's settings and read from a cursor: `source.read(cursor)` yields `Item`s, each
carrying the `position` to resume from to read what comes after it. The engine stores the position of the last
item of each chunk with the chunk's deliveries (one transaction), so a run resumes exactly where it stopped, and
a finished run hands its last position to the job so that the next scheduled run reads only what is new.
Positions are small JSON values (dicts of numbers and strings); `None` means "from the beginning".
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(slots=True)
class Item:
    """One thing read from a source: a record (a dict), or `error` when the raw input could not be read."""

    ref: str  # where, for people: "orders.csv:12" (file and line), "orders:id=42" (row key), "inbox:17"
    record: dict | None = None
    error: str = ""
    excerpt: str = ""
    position: Any = None  # resume from here to read what comes after this item


def with_last_position(items: Iterator[Item], final: Callable[[Item], Any]) -> Iterator[Item]:
    """The items, the last one's position replaced by final(item): one item is held back until the next one (or
    the end) is known. For sources where what follows the last item is resumed from elsewhere than its own
    position (the next page's link, the next run's start)."""
    held = None
    for item in items:
        if held is not None:
            yield held
        held = item
    if held is not None:
        held.position = final(held)
        yield held


class SourceError(Exception):
    """The source as a whole cannot be read (missing file, refused query, unreachable API); for people."""


class Source(Protocol):
    def read(self, cursor: Any = None) -> Iterator[Item]: ...
