"""Hypothesis strategies shared by the pure join tests and the same properties through the broker."""

from __future__ import annotations

import random

from hypothesis import strategies as st

from schemas.messages import SegmentMessage, SegmentRef
from schemas.taxonomy import View
from streams.join import JoinRules

RULES = JoinRules(clip_max_s=64, clip_min_s=2, skew_tolerance_s=1.0, grace_s=10.0)


def seg(camera: str, start: float, end: float, n: int = 0) -> SegmentRef:
    return SegmentRef(segment_id=f"{camera}-{start}-{n}", camera=View(camera), start_ts=start, end_ts=end,
                      video_uri=f"file:///{camera}/{start}")


def upload(ref: SegmentRef) -> SegmentMessage:
    """The claim-checked upload a segment ref came from (what `streams.join.receive` takes)."""
    return SegmentMessage(fleet_id="f", vehicle_id="v", driver_id="d", camera=ref.camera, segment_id=ref.segment_id,
                          start_ts=ref.start_ts, end_ts=ref.end_ts, fps=10, width=64, height=36, codec="mjpg",
                          video_uri=ref.video_uri)


@st.composite
def fleet_uploads(draw):
    """Both cameras' segments of one vehicle, with gaps, skew, missing pieces and duplicates, in a random
    arrival order whose disorder stays within the grace period."""
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    segments = []
    for camera in ("road", "driver"):
        t = rng.uniform(0, 3)
        for k in range(rng.randint(0, 14)):
            length = rng.choice([5.0, 10.0, 10.0, rng.uniform(1, 12)])
            if rng.random() < 0.85:
                segments.append(seg(camera, round(t, 2), round(t + length, 2), k))
            t += length + rng.choice([0.0, 0.0, rng.uniform(0, 1.5), rng.uniform(2, 40)])
    arrival = sorted(segments, key=lambda s: s.start_ts + rng.uniform(0, RULES.grace_s) * (rng.random() < 0.5))
    # Disorder bounded by the grace: each segment arrives before the watermark passes its start.
    on_time, latest = [], -1e18
    for s in arrival:
        if s.start_ts - RULES.skew_tolerance_s >= latest - RULES.grace_s:
            on_time.append(s)
            latest = max(latest, s.start_ts)
    for _ in range(rng.randint(0, 3) if on_time else 0):  # re-sent later: after the original
        i = rng.randrange(len(on_time))
        on_time.insert(rng.randint(i + 1, len(on_time)), on_time[i])
    return on_time
