"""A segment's driven distance from its telemetry, so reports can give event rates per 100 km as well as per hour.

Hours flatter a vehicle stuck in traffic and punish one on the motorway; fleets compare drivers per distance. A
segment carries its telemetry only until the join, so the distance is computed then and travels on its SegmentRef.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from typing import Protocol

from schemas.taxonomy import View

EARTH_RADIUS_KM = 6371.0088  # the IUGG mean radius


class Sample(Protocol):
    """What distance needs of a telemetry sample (`schemas.messages.TelemetrySample` is one)."""

    @property
    def t(self) -> float: ...
    @property
    def lat(self) -> float | None: ...
    @property
    def lon(self) -> float | None: ...
    @property
    def speed_kmh(self) -> float | None: ...


class Stretch(Protocol):
    """What a clip's distance needs of a joined segment (`schemas.messages.SegmentRef` is one)."""

    @property
    def camera(self) -> View: ...
    @property
    def start_ts(self) -> float: ...
    @property
    def end_ts(self) -> float: ...
    @property
    def distance_km(self) -> float | None: ...


def _finite(*values: float) -> bool:
    return all(math.isfinite(v) for v in values)


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance between two fixes in degrees, on a spherical Earth (error below 0.5 %)."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dphi, dlam = phi2 - phi1, math.radians(lon2 - lon1)
    h = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlam / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


def distance_km(samples: Iterable[Sample]) -> float | None:
    """Kilometres driven over `samples`: the haversine path through the GPS fixes (in time order) when there are at
    least two, else the trapezoid integral of speed_kmh over t when there are at least two speeds, else None.

    Samples missing the values a method needs (None or not finite) are skipped; negative speeds count as 0. GPS
    jumps are summed as they come: the devices' fixes are trusted as much as their speeds.
    """
    fixes: list[tuple[float, float, float]] = []
    speeds: list[tuple[float, float]] = []
    for s in samples:
        if s.lat is not None and s.lon is not None and _finite(s.t, s.lat, s.lon):
            fixes.append((s.t, s.lat, s.lon))
        if s.speed_kmh is not None and _finite(s.t, s.speed_kmh):
            speeds.append((s.t, max(s.speed_kmh, 0.0)))
    if len(fixes) >= 2:
        fixes.sort()
        return sum(haversine_km(a[1], a[2], b[1], b[2]) for a, b in itertools.pairwise(fixes))
    if len(speeds) >= 2:
        speeds.sort()
        return sum((b[0] - a[0]) * (a[1] + b[1]) / 2 for a, b in itertools.pairwise(speeds)) / 3600.0
    return None


def clip_distance_km(start_ts: float, end_ts: float, segments: Iterable[Stretch]) -> float | None:
    """Kilometres driven during a clip, counted once: the road camera's segments when every one of them has a
    distance, else the driver camera's, else None. A segment reaching beyond the clip counts by its overlap with the
    clip, so a segment split over two clips is not counted twice. Stored on the clip by the sink, so reports sum
    one column instead of re-deriving it from segments on every query (`drivecoach bench reports`)."""
    by_camera: dict[str, list[Stretch]] = {}
    for s in segments:
        by_camera.setdefault(s.camera.value, []).append(s)
    for camera in ("road", "driver"):
        chosen = by_camera.get(camera, [])
        if not chosen or any(s.distance_km is None or s.end_ts <= s.start_ts for s in chosen):
            continue
        return sum(
            s.distance_km
            * max(min(end_ts, s.end_ts) - max(start_ts, s.start_ts), 0.0)
            / (s.end_ts - s.start_ts)
            for s in chosen
            if s.distance_km is not None
        )
    return None


__all__ = ["EARTH_RADIUS_KM", "Sample", "Stretch", "clip_distance_km", "distance_km", "haversine_km"]
