"""A source from a job's (or run's) settings: the engine's entry points, read from the registry of source kinds
(feeds.sources.registry), where every kind is declared."""

from __future__ import annotations

from feeds.sources.registry import build_source, drop_forwarded, has_new, is_incremental, source_root

__all__ = ["build_source", "drop_forwarded", "has_new", "is_incremental", "source_root"]
