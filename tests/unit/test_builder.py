"""The clip builder's commit rule: a partition's offset moves only past plans whose clips are acknowledged, in
order, whatever order the builds finish in."""

from __future__ import annotations

from collections import deque
from types import SimpleNamespace

from streams.builder.app import Job, pop_acked_prefix


def _jobs(*acked: bool, first: int = 10) -> deque[Job]:
    return deque(
        Job(record=SimpleNamespace(offset=first + k), plan=None, future=None, acked=a)  # type: ignore[arg-type]
        for k, a in enumerate(acked)
    )


def test_nothing_is_committed_while_the_oldest_plan_is_in_flight() -> None:
    queue = _jobs(False, True, True)  # the two later builds finished first
    assert pop_acked_prefix(queue) is None
    assert [j.record.offset for j in queue] == [10, 11, 12]  # all kept, the later ones too


def test_the_commit_moves_past_the_acknowledged_run_and_stops_at_the_first_in_flight() -> None:
    queue = _jobs(True, True, False, True)
    assert pop_acked_prefix(queue) == 12  # offsets 10 and 11 are done: the next to read is 12
    assert [j.record.offset for j in queue] == [12, 13]
    queue[0].acked = True
    assert pop_acked_prefix(queue) == 14 and not queue


def test_an_empty_partition_commits_nothing() -> None:
    assert pop_acked_prefix(deque()) is None
