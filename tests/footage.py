"""An oracle for the join that sees the whole footage and shares no code with the join.

Written from the rules (README.md "Join semantics" and the docstring of `streams/joiner/join.py`), not from
`expected_clips`: event time is cut into fixed windows of `clip_max_s` from the epoch; in each window the footage
of one driver (a missing driver id is a driver of its own) makes one clip, from that driver's first covered moment
in the window to the last, both cameras together, naming the cameras that cover any of it; footage of a driver in a
window spanning less than `clip_min_s` makes no clip; clip ids are fixed by vehicle, window and driver; a revision
is the number of segments in the clip and only adds segments. Hence every uploaded second of footage lies in
exactly one clip of its vehicle and driver, whatever the arrival order and however often it was uploaded.

`footage_violations` states every broken rule in words (an empty list: none), so a failing property says what.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from schemas.messages import SegmentRef
from streams.joiner.join import ClipPlan, JoinRules


@dataclass(frozen=True)
class Emitted:
    """A clip as the join emitted it (a plan, or a message on the `clips` topic), reduced to what the rules fix."""

    clip_id: str
    vehicle_id: str
    driver_id: str | None
    start: float
    end: float
    views: frozenset[str]
    segment_ids: frozenset[str]
    revision: int

    @classmethod
    def of_plan(cls, p: ClipPlan) -> Emitted:
        return cls(
            p.clip_id,
            p.vehicle_id,
            p.driver_id,
            p.start_ts,
            p.end_ts,
            frozenset(v.value for v in p.views),
            frozenset(s.segment_id for s in p.segments),
            p.revision,
        )

    @classmethod
    def of_message(cls, m: Mapping[str, Any]) -> Emitted:
        return cls(
            m["clip_id"],
            m["vehicle_id"],
            m["driver_id"],
            m["start_ts"],
            m["end_ts"],
            frozenset(m["views"]),
            frozenset(s["segment_id"] for s in m["segments"]),
            m["revision"],
        )


@dataclass(frozen=True)
class Piece:
    """The part of one segment inside one window."""

    segment_id: str
    camera: str
    driver_id: str | None
    window: float
    start: float
    end: float


def pieces(segments: Iterable[SegmentRef], window_s: float) -> list[Piece]:
    """Every segment (a re-sent upload counts once: same id, same footage) cut at the window grid."""
    unique = {s.segment_id: s for s in segments}
    out = []
    for s in unique.values():
        k = math.floor(s.start_ts / window_s)
        while k * window_s < s.end_ts:
            a, b = max(s.start_ts, k * window_s), min(s.end_ts, (k + 1) * window_s)
            if b > a:
                out.append(Piece(s.segment_id, s.camera.value, s.driver_id, k * window_s, a, b))
            k += 1
    return out


def newest(emitted: Iterable[Emitted]) -> list[Emitted]:
    """The newest revision of each clip id (what the database keeps)."""
    out: dict[str, Emitted] = {}
    for c in emitted:
        if c.clip_id not in out or c.revision >= out[c.clip_id].revision:
            out[c.clip_id] = c
    return list(out.values())


def footage_violations(
    segments: Sequence[SegmentRef], clips: Sequence[Emitted], rules: JoinRules, *, eps: float = 1e-6
) -> list[str]:
    """Every way the newest clips of ONE vehicle break the rules for its complete footage `segments`."""
    assert rules.single_view_clips, "this oracle states the rules with single-view clips (the default)"
    w, problems = rules.clip_max_s, []
    ids = [c.clip_id for c in clips]
    if len(set(ids)) != len(ids):
        problems.append(f"clip ids repeat: {sorted(i for i in set(ids) if ids.count(i) > 1)}")
    if len({c.vehicle_id for c in clips}) > 1:
        problems.append("clips of several vehicles given")

    def window_of(c: Emitted) -> float:
        return math.floor((c.start + eps) / w) * w

    for c in clips:  # each clip lies inside one window, and is at least one sampled frame long
        k = window_of(c)
        if not (k - eps <= c.start and c.end <= k + w + eps):
            problems.append(f"clip {c.clip_id[:8]} [{c.start}, {c.end}] crosses a window boundary")
        if c.end - c.start < rules.clip_min_s - eps:
            problems.append(f"clip {c.clip_id[:8]} is shorter than clip_min_s: {c.end - c.start}")

    by_group: dict[tuple[float, str | None], list[Piece]] = {}
    for p in pieces(segments, w):
        by_group.setdefault((p.window, p.driver_id), []).append(p)
    drivers = {s.segment_id: s.driver_id for s in segments}
    clips_of: dict[tuple[float, str | None], list[Emitted]] = {}
    for c in clips:
        clips_of.setdefault((window_of(c), c.driver_id), []).append(c)
        strangers = sorted(i for i in c.segment_ids if i not in drivers or drivers[i] != c.driver_id)
        if strangers:  # a driver change splits clips; a missing id is never filled in from another trip
            problems.append(
                f"clip {c.clip_id[:8]} of driver {c.driver_id!r} holds other footage: {strangers}"
            )

    for group, own in sorted(by_group.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        start, end = min(p.start for p in own), max(p.end for p in own)
        got = clips_of.get(group, [])
        if end - start < rules.clip_min_s - eps:
            if got:
                problems.append(f"window {group}: a sliver of {end - start:.3f} s made a clip")
            continue
        if len(got) != 1:
            problems.append(
                f"window {group}: {len(got)} clips for one driver's {end - start:.3f} s of footage"
            )
            continue
        (c,) = got
        if abs(c.start - start) > eps or abs(c.end - end) > eps:
            problems.append(f"window {group}: clip spans [{c.start}, {c.end}], the footage [{start}, {end}]")
        if c.views != {p.camera for p in own}:
            problems.append(
                f"window {group}: views {sorted(c.views)}, footage of {sorted({p.camera for p in own})}"
            )
        if c.segment_ids != {p.segment_id for p in own}:
            problems.append(
                f"window {group}: clip lacks {sorted({p.segment_id for p in own} - c.segment_ids)}, "
                f"has extra {sorted(c.segment_ids - {p.segment_id for p in own})}"
            )
        if c.revision != len({p.segment_id for p in own}):
            problems.append(
                f"window {group}: revision {c.revision}, {len({p.segment_id for p in own})} segments"
            )
        for p in own:  # every second of it lies in exactly one clip of its driver
            # Overlap must exceed eps, or half the piece when the piece itself is not much longer than eps (a
            # segment crossing a window boundary by a millisecond leaves a 1-ms piece, whose overlap with the clip
            # holding it rounds to just under a 1-ms eps on timestamps near 1.8e9).
            least = min(eps, (p.end - p.start) / 2)
            holding = [
                x
                for x in clips
                if x.driver_id == p.driver_id and max(p.start, x.start) < min(p.end, x.end) - least
            ]
            if len(holding) != 1 or not (holding[0].start - eps <= p.start and p.end <= holding[0].end + eps):
                problems.append(f"footage {p.segment_id} [{p.start}, {p.end}] lies in {len(holding)} clips")
    for group in clips_of.keys() - by_group.keys():
        problems.append(f"window {group}: a clip without footage of its driver there")
    return problems


def revision_violations(emitted: Sequence[Emitted], rules: JoinRules) -> list[str]:
    """In emission order, each clip id's revisions grow and only add segments, and one id is one vehicle, window
    and driver."""
    problems: list[str] = []
    last: dict[str, Emitted] = {}
    w = rules.clip_max_s
    for c in emitted:
        before = last.get(c.clip_id)
        if before is not None:
            same = (before.vehicle_id, before.driver_id, math.floor(before.start / w))
            if same != (c.vehicle_id, c.driver_id, math.floor(c.start / w)):
                problems.append(f"clip id {c.clip_id[:8]} names two vehicles, windows or drivers")
            if c.revision <= before.revision or not before.segment_ids <= c.segment_ids:
                problems.append(
                    f"clip {c.clip_id[:8]}: revision {before.revision} -> {c.revision} "
                    f"dropped {sorted(before.segment_ids - c.segment_ids)}"
                )
        last[c.clip_id] = c
    return problems
