"""Readers that stream source records. Each yields `Item`s in a stable order so that a run can resume by
skipping the items it already consumed (its checkpoint)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Item:
    """One thing read from a source: a record (a dict), or `error` when the raw input could not be read."""

    ref: str  # where: "orders.csv:12" (line), or a record key
    record: dict | None = None
    error: str = ""
    excerpt: str = ""


class SourceError(Exception):
    """The source as a whole cannot be read (missing file, unreadable format); written for people."""
