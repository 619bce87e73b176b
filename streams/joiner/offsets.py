"""Watching the input offsets a consumer is handed, per partition: the camera topics are neither compacted nor
written in transactions, so every offset from where reading started is a record, and a jump means records this
process was never given (the joiner logs it and counts it in `drivecoach_input_offset_gaps`)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Gap:
    topic: str
    partition: int
    first_missing: int
    last_missing: int


@dataclass
class OffsetWatch:
    next_offset: dict[tuple[str, int], int] = field(default_factory=dict)

    def observe(
        self, topic: str, partition: int, offset: int, committed: int | None = None
    ) -> tuple[bool, Gap | None]:
        """(whether this is the partition's first record since the last assignment, the gap before it if any).

        `committed`: the group's committed offset for the partition (the next record to read), where reading began
        after the assignment; a first record past it means the records in between were skipped, which is where a
        fetch-before-seek race acts (streams/faust_seek.py)."""
        key = (topic, partition)
        expected = self.next_offset.get(key)
        self.next_offset[key] = max(offset + 1, expected or 0)
        if expected is None:
            skipped = committed is not None and offset > committed
            return True, Gap(
                topic, partition, committed, offset - 1
            ) if skipped and committed is not None else None
        return False, Gap(topic, partition, expected, offset - 1) if offset > expected else None

    def reset(self) -> None:
        """A new assignment: each partition starts again wherever its committed offset says."""
        self.next_offset.clear()
