"""Hypothesis strategies for the join: what a vehicle records, and how a real fleet uploads it.

Footage: trips of both cameras cut into segments of 1 s to 5 min (device cut points wobble), with missing pieces,
a dead camera now and then, a driver per trip, a driver change inside a trip, trips without a driver id.
Arrival: per trip one of the patterns fleets show: every segment uploaded in real time with latency jitter, the
whole trip in one burst after it ends, real time with an outage (seconds to beyond the vehicle-idle time), a backlog
uploaded hours late (after later trips), one camera lagging the other by seconds to minutes; duplicates re-sent.
Ticks are placed where the joiner's timer would send them: after each upload, once the settle time and once the
idle time have passed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from hypothesis import strategies as st

from schemas.messages import SegmentMessage, SegmentRef
from schemas.taxonomy import View
from streams.joiner.join import JoinRules

RULES = JoinRules()  # the production defaults: 64-s windows, 20-s grace, 30-s settle, 10-min idle
T0 = 1_760_000_000.0  # event times near today's
PATTERNS = ("realtime", "burst", "outage", "backlog", "lagging")


def seg(camera: str, start: float, end: float, n: int = 0, driver: str | None = "d") -> SegmentRef:
    return SegmentRef(
        segment_id=f"{camera}-{start}-{n}",
        camera=View(camera),
        start_ts=start,
        end_ts=end,
        video_uri=f"file:///{camera}/{start}",
        driver_id=driver,
    )


def upload(ref: SegmentRef, vehicle: str = "v") -> SegmentMessage:
    """The claim-checked upload a segment ref came from (what `streams.joiner.join.receive` takes)."""
    return SegmentMessage(
        fleet_id="f",
        vehicle_id=vehicle,
        driver_id=ref.driver_id,
        camera=ref.camera,
        segment_id=ref.segment_id,
        start_ts=ref.start_ts,
        end_ts=ref.end_ts,
        fps=10,
        width=64,
        height=36,
        codec="mjpg",
        video_uri=ref.video_uri,
    )


Event = tuple[float, View, SegmentMessage | None]  # (arrival time, camera topic, upload or None for a tick)


@dataclass(frozen=True)
class Fleet:
    """One vehicle's footage and the two camera topics as a fleet filled them, each in arrival order."""

    segments: list[SegmentRef]
    topics: dict[View, list[Event]]
    patterns: list[str]

    def in_arrival_order(self) -> list[Event]:
        return sorted(self.topics[View.ROAD] + self.topics[View.DRIVER], key=lambda e: (e[0], e[1].value))

    def interleaved(self, rng: random.Random) -> list[Event]:
        """One way a consumer may read the two topics: each in order, any mix between them."""
        road, driver, out = list(self.topics[View.ROAD]), list(self.topics[View.DRIVER]), []
        while road or driver:
            side = road if road and (not driver or rng.random() < 0.5) else driver
            out.append(side.pop(0))
        return out


def trip_segments(rng: random.Random, start: float, duration: float, trip: int) -> list[SegmentRef]:
    length = rng.choice([1.0, 5.0, 10.0, 10.0, 30.0, 60.0, 300.0, round(rng.uniform(1, 300), 2)])
    drivers = [rng.choice([f"drv-{trip}", f"drv-{trip % 2}", None])]
    change_at = start + rng.uniform(0, duration) if rng.random() < 0.25 else None  # a driver change mid-trip
    dead = rng.choice([None, None, None, None, "road", "driver"])
    out = []
    for camera in ("road", "driver"):
        if camera == dead:
            continue
        t, k = start + rng.uniform(-0.5, 0.5), 0
        while t < start + duration:
            end = min(t + length + rng.uniform(-0.2, 0.2), start + duration + 0.5)
            if end - t < 0.2:
                break
            driver = drivers[0] if change_at is None or t < change_at else f"drv-{trip}b"
            if rng.random() > 0.05:  # now and then a camera did not record a piece
                out.append(seg(camera, round(t, 3), round(end, 3), trip * 10_000 + k, driver))
            t, k = end + rng.choice([0.0, 0.0, 0.0, rng.uniform(0, 0.8)]), k + 1
    return out


def arrivals(
    rng: random.Random,
    segments: list[SegmentRef],
    pattern: str,
    trip_end: float,
    later: float,
    rules: JoinRules,
) -> list[tuple[float, SegmentRef]]:
    """When each segment of one trip reaches the broker (event times are device clock; arrival is upload time)."""
    out = []
    outage = (
        rng.uniform(segments[0].start_ts, trip_end),
        rng.choice([5.0, 20.0, 120.0, rules.vehicle_idle_s * 1.5]),
    )
    lag = {View.ROAD: 0.0, View.DRIVER: rng.choice([0.0, 30.0, 180.0, 900.0])}
    if rng.random() < 0.5:
        lag = {View.ROAD: lag[View.DRIVER], View.DRIVER: 0.0}
    for s in sorted(segments, key=lambda s: s.end_ts):
        realtime = s.end_ts + rng.uniform(0.3, 3.0)
        if pattern == "realtime":
            at = realtime
        elif pattern == "burst":
            at = trip_end + 5 + 0.01 * len(out)
        elif pattern == "outage":
            start, length = outage
            at = start + length + rng.uniform(0, 5) if start <= realtime < start + length else realtime
        elif pattern == "backlog":
            at = later + 0.01 * len(out)
        else:
            at = realtime + lag[s.camera]
        out.append((at, s))
    return out


@st.composite
def fleets(
    draw, rules: JoinRules = RULES, patterns: tuple[str, ...] = PATTERNS, duplicates: bool = True
) -> Fleet:
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    trips = rng.randint(1, 3)
    t = T0 + rng.uniform(0, 64)
    plan = []
    for trip in range(trips):
        duration = rng.choice([3.0, 40.0, 180.0, rng.uniform(1, 900)])
        plan.append((t, duration, trip))
        t += duration + rng.choice([2.0, 30.0, 400.0, 3 * 3600.0])
    last_end = t
    segments, timed, chosen = [], [], []
    for start, duration, trip in plan:
        own = trip_segments(rng, start, duration, trip)
        if not own:
            continue
        pattern = draw(st.sampled_from(patterns))
        chosen.append(pattern)
        later = last_end + rng.uniform(3600, 6 * 3600)  # a backlog arrives hours after the last trip
        segments += own
        timed += arrivals(rng, own, pattern, start + duration, later, rules)
    if duplicates:
        for _ in range(rng.randint(0, 3) if timed else 0):  # re-sent: the same upload again, later
            at, s = rng.choice(timed)
            timed.append((at + rng.choice([0.5, 60.0, 7200.0]), s))
    topics: dict[View, list[Event]] = {View.ROAD: [], View.DRIVER: []}
    for at, s in timed:
        topics[s.camera].append((at, s.camera, upload(s)))
    ends = [at for at, _ in timed] or [T0]
    for camera in View:  # where the joiner's timer ticks: the settle and the idle time after each upload
        ticks = {round(at + d, 3) for at in ends for d in (rules.settle_s + 0.5, rules.vehicle_idle_s + 0.5)}
        topics[camera] += [(at, camera, None) for at in ticks]
        topics[camera].sort(key=lambda e: (e[0], e[2] is None))
    return Fleet(segments, topics, chosen)
