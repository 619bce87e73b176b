"""How far each partition of `clips` may be committed while clips finish out of order.

The pipelined worker has many clips in flight, and a short clip can be written before a long one polled earlier. The
group's offset of a partition may only move up to its lowest offset still in the pipeline: every offset below it is
durably written (or dead-lettered), so a crash replays only what was not. Plain logic, no Kafka: the worker feeds it.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

P = TypeVar(
    "P", bound=Hashable
)  # a partition: kafka's TopicPartition in the worker, anything hashable in tests


@dataclass
class _Partition:
    pending: set[int] = field(default_factory=set)
    end: int = 0  # one past the highest offset tracked: the commit point once nothing is pending
    committed: int = -1  # the last offset handed to `committed` (-1: none yet)


class CommitPoints(Generic[P]):
    """Offsets tracked when polled and marked done when durable; `ready` gives each partition's commit point."""

    def __init__(self) -> None:
        self._parts: dict[P, _Partition] = {}

    def track(self, partition: P, offset: int) -> None:
        part = self._parts.setdefault(partition, _Partition())
        part.pending.add(offset)
        part.end = max(part.end, offset + 1)

    def done(self, partition: P, offset: int) -> None:
        """Durable. An offset of a partition no longer tracked (revoked meanwhile) is ignored."""
        part = self._parts.get(partition)
        if part is not None:
            part.pending.discard(offset)

    def point(self, partition: P) -> int | None:
        """The offset a commit may name: the lowest still pending, or one past the highest tracked."""
        part = self._parts.get(partition)
        if part is None:
            return None
        return min(part.pending) if part.pending else part.end

    def ready(self) -> dict[P, int]:
        """Partitions whose commit point moved since they were last committed."""
        out = {}
        for partition, part in self._parts.items():
            point = min(part.pending) if part.pending else part.end
            if point > part.committed:
                out[partition] = point
        return out

    def committed(self, points: dict[P, int]) -> None:
        for partition, point in points.items():
            if (part := self._parts.get(partition)) is not None:
                part.committed = max(part.committed, point)

    def forget(self, partitions: Iterable[P]) -> None:
        """Partitions revoked: their in-flight clips may still be written (idempotently), but never committed here."""
        for partition in partitions:
            self._parts.pop(partition, None)

    def pending(self) -> int:
        return sum(len(p.pending) for p in self._parts.values())


__all__ = ["CommitPoints"]
