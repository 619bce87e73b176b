"""The pipelined worker's commit points: clips finish out of order, and a partition is committed only up to its
lowest clip still in the pipeline."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from streams.inference.progress import CommitPoints


def test_a_partition_commits_up_to_its_lowest_pending_offset() -> None:
    points: CommitPoints[str] = CommitPoints()
    for offset in (10, 11, 12):
        points.track("p0", offset)
    points.done("p0", 12)
    points.done("p0", 11)
    assert points.ready() == {"p0": 10}  # 10 is still in flight: nothing after it may be committed
    points.committed({"p0": 10})
    assert points.ready() == {}  # nothing moved since
    points.done("p0", 10)
    assert points.ready() == {"p0": 13}
    assert points.pending() == 0


def test_partitions_move_independently_and_a_revoked_one_is_forgotten() -> None:
    points: CommitPoints[str] = CommitPoints()
    points.track("a", 0)
    points.track("b", 5)
    points.done("b", 5)
    assert points.ready() == {"a": 0, "b": 6}
    points.forget(["a"])
    points.done("a", 0)  # a clip of the revoked partition written late: ignored
    assert points.ready() == {"b": 6} and points.point("a") is None


@given(st.integers(min_value=1, max_value=60), st.randoms(use_true_random=False))
def test_no_commit_point_passes_an_offset_not_yet_durable(n: int, rnd: random.Random) -> None:
    points: CommitPoints[str] = CommitPoints()
    for offset in range(n):
        points.track("p", offset)
    durable: set[int] = set()
    for offset in rnd.sample(range(n), n):
        points.done("p", offset)
        durable.add(offset)
        point = points.ready().get("p", points.point("p"))
        assert point is not None and set(range(point)) <= durable  # every offset below the point is durable
        points.committed({"p": point})
    assert points.point("p") == n
