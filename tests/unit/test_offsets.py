"""The joiner's watch on the offsets it is handed."""

from __future__ import annotations

from streams.joiner.offsets import Gap, OffsetWatch


def test_a_jump_in_a_partitions_offsets_is_a_gap_and_a_reassignment_starts_over() -> None:
    watch = OffsetWatch()
    assert watch.observe("road", 0, 20) == (True, None)
    assert watch.observe("road", 0, 21) == (False, None)
    assert watch.observe("road", 1, 7) == (True, None)  # partitions are watched apart
    assert watch.observe("road", 0, 24) == (False, Gap("road", 0, 22, 23))
    assert watch.observe("road", 0, 24) == (False, None)  # a redelivery is no gap
    assert watch.observe("road", 0, 25) == (False, None)
    watch.reset()
    assert watch.observe("road", 0, 3) == (True, None)


def test_a_first_record_past_the_committed_offset_is_a_gap() -> None:
    watch = OffsetWatch()
    assert watch.observe("road", 0, 16, committed=16) == (True, None)
    assert watch.observe("road", 1, 22, committed=16) == (True, Gap("road", 1, 16, 21))
    assert watch.observe("road", 1, 23, committed=16) == (False, None)  # only the first record is compared
    assert watch.observe("driver", 0, 5, committed=None) == (True, None)  # no commit yet: nothing to compare
