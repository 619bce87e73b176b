"""Splitting reviewed data by vehicle: deterministic, stable as the fleet grows, never an empty side."""

from __future__ import annotations


def test_vehicle_splits_are_stable_and_never_leave_a_side_empty() -> None:
    from training.export import assign_splits

    fleet = {f"veh-{i:03d}" for i in range(40)}
    split = assign_splits(fleet, 0.2, seed=0)
    assert split == assign_splits(fleet.copy(), 0.2, seed=0) != assign_splits(fleet, 0.2, seed=1)  # seeded
    assert 0 < sum(s == "eval" for s in split.values()) < 40
    grown = assign_splits(fleet | {f"veh-{i:03d}" for i in range(40, 60)}, 0.2, seed=0)
    assert all(grown[v] == split[v] for v in fleet)  # a growing fleet keeps each vehicle's side
    for small in ({"a", "b"}, {"a", "b", "c", "d"}):
        for fraction in (0.01, 0.99):
            assert set(assign_splits(small, fraction, seed=1).values()) == {"train", "eval"}
