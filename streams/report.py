"""The demo's report helpers (the event scoring itself is `schemas.scoring`, shared with training)."""

from __future__ import annotations

from collections import Counter

from schemas.taxonomy import EventType


def event_counts(rows: list[tuple[str, EventType]]) -> dict[str, Counter[EventType]]:
    out: dict[str, Counter[EventType]] = {}
    for who, event_type in rows:
        out.setdefault(who, Counter())[event_type] += 1
    return out
