"""Simulated fleet trips: road-facing and driver-facing dashcam video with known safety events.

Everything is a pure function of the seed: `make_scenarios` draws the trips and their ground truth,
`render_road` / `render_driver` draw one frame of a trip at a time t (seconds from its start), and
`write_segments` encodes the frames with OpenCV into device segments of realistic length, with 1 Hz telemetry
(speed, longitudinal acceleration, yaw rate, with sensor noise and dropouts) true to the events, the way a dashcam
uploads them. The cues are deliberately large (a lead car that fills the view, a big stop sign, a phone at
the ear) because the stacked clip is only 112 px wide and the demo model is tiny.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from schemas.messages import DetectedEvent, TelemetrySample
from schemas.prompts import describe, format_turn1
from schemas.taxonomy import EventType, View, reference_instruction, view_of

ROAD_EVENTS = (
    EventType.FOLLOWING_DISTANCE,
    EventType.FORWARD_COLLISION_RISK,
    EventType.LANE_DEPARTURE,
    EventType.ROLLING_STOP,
    EventType.HARSH_TURN,
)
DRIVER_EVENTS = (
    EventType.PHONE_USE,
    EventType.DISTRACTION,
    EventType.DROWSINESS,
    EventType.NO_SEATBELT,
    EventType.EATING_DRINKING,
)
SIMULATED_EVENTS = ROAD_EVENTS + DRIVER_EVENTS
WHOLE_TRIP_EVENTS = frozenset({EventType.NO_SEATBELT})

ROAD_SIZE = (320, 180)  # width, height: a small forward camera
DRIVER_SIZE = (160, 120)  # an in-cabin camera, lower resolution and frame rate

Color = tuple[int, int, int]


@dataclass(frozen=True)
class Look:
    """Per-trip appearance, so no two trips look identical and the model must learn the cues, not the scene."""

    sky: Color
    grass: Color
    asphalt: Color
    car: Color
    skin: Color
    hair: Color
    shirt: Color
    cabin: Color
    side: int  # +1 / -1: which way the drift, turn, glance or phone goes
    lead_car: bool  # a distant car ahead in normal driving
    speed: float  # lane-dash speed


@dataclass(frozen=True)
class Scenario:
    scenario_id: str
    fleet_id: str
    vehicle_id: str
    driver_id: str
    start_ts: float  # epoch seconds, true time
    duration: float
    events: tuple[DetectedEvent, ...]
    look: Look = field(repr=False)

    @property
    def instruction(self) -> str:
        return reference_instruction([e.type for e in self.events])

    @property
    def truth_turn1(self) -> str:
        return format_turn1(list(self.events), describe(list(self.events)))

    def active(self, event_type: EventType, t: float) -> float | None:
        """Progress 0..1 through the event at time t, or None when it is not happening."""
        for e in self.events:
            if e.type is event_type and e.start <= t <= e.end:
                return (t - e.start) / max(e.end - e.start, 1e-6)
        return None


@dataclass(frozen=True)
class SimSegment:
    scenario_id: str
    fleet_id: str
    vehicle_id: str
    driver_id: str
    camera: View
    segment_id: str
    start_ts: float  # on the camera's own (possibly skewed) clock
    end_ts: float
    fps: float
    width: int
    height: int
    codec: str
    path: Path
    telemetry: tuple[TelemetrySample, ...] = ()  # on the camera's clock, like its timestamps


def _color(rng: np.random.Generator, base: Color, spread: int) -> Color:
    return tuple(int(np.clip(c + rng.integers(-spread, spread + 1), 0, 255)) for c in base)  # type: ignore[return-value]


def _look(rng: np.random.Generator) -> Look:
    skins = [(241, 194, 125), (224, 172, 105), (198, 134, 66), (141, 85, 36), (255, 219, 172)]
    cars = [(40, 60, 170), (30, 30, 30), (200, 200, 205), (20, 110, 60), (120, 40, 120)]
    return Look(
        sky=_color(rng, (150, 190, 235), 25),
        grass=_color(rng, (70, 120, 60), 20),
        asphalt=_color(rng, (90, 90, 95), 12),
        car=cars[int(rng.integers(len(cars)))],
        skin=skins[int(rng.integers(len(skins)))],
        hair=_color(rng, (45, 35, 25), 20),
        shirt=_color(rng, (120, 140, 185), 45),
        cabin=_color(rng, (55, 55, 65), 12),
        side=1 if rng.random() < 0.5 else -1,
        lead_car=bool(rng.random() < 0.5),
        speed=float(rng.uniform(0.8, 1.6)),
    )


def _events(rng: np.random.Generator, duration: float) -> tuple[DetectedEvent, ...]:
    chosen: list[EventType] = []
    if rng.random() < 0.6:
        chosen.append(ROAD_EVENTS[int(rng.integers(len(ROAD_EVENTS)))])
    if rng.random() < 0.6:
        chosen.append(DRIVER_EVENTS[int(rng.integers(len(DRIVER_EVENTS)))])
    out = []
    for t in chosen:
        if t in WHOLE_TRIP_EVENTS:
            start, end = 0.0, duration
        else:
            length = float(rng.uniform(0.35, 0.55)) * duration
            start = float(rng.uniform(0.1 * duration, duration - length - 0.05 * duration))
            start, end = round(start), round(start + length)
        out.append(DetectedEvent(type=t, view=view_of(t), start=start, end=end))
    return tuple(sorted(out, key=lambda e: (e.start, e.type.value)))


def make_scenarios(
    seed: int,
    count: int,
    *,
    fleet_id: str = "fleet-demo",
    vehicles: int = 4,
    duration: float = 20.0,
    start_ts: float = 1_760_000_000.0,
    gap_s: float = 40.0,
    window_s: float = 64.0,
) -> list[Scenario]:
    """`count` trips spread round-robin over `vehicles`; a vehicle's trips are at least `gap_s` apart, and start on
    the join's window grid (`window_s`, from the epoch), so a trip shorter than a window is one clip."""
    period = math.ceil((duration + gap_s) / window_s) * window_s
    start_ts = math.ceil(start_ts / window_s) * window_s
    out = []
    for i in range(count):
        rng = np.random.default_rng([seed, i])
        vehicle, trip = i % vehicles, i // vehicles
        out.append(
            Scenario(
                # The trip length is in the id: segment ids derive from it, and the same id must mean the same footage.
                scenario_id=f"{fleet_id}-{seed}-{duration:g}s-{i:04d}",
                fleet_id=fleet_id,
                vehicle_id=f"veh-{vehicle:03d}",
                driver_id=f"drv-{(vehicle * 7 + seed) % 1000:03d}",
                start_ts=start_ts
                + trip * period
                + 1.0
                + vehicle * 0.37,  # clear of the window start: camera skew
                duration=duration,
                events=_events(rng, duration),
                look=_look(rng),
            )
        )
    return out


# --- road view -------------------------------------------------------------------------------------------------


def _road_geometry(s: Scenario, t: float) -> tuple[float, float, float]:
    """(lateral offset, curvature, tilt in degrees) of the road at t."""
    side = s.look.side
    offset = curve = tilt = 0.0
    if (p := s.active(EventType.LANE_DEPARTURE, t)) is not None:
        offset = side * 0.9 * math.sin(math.pi * p)
    if (p := s.active(EventType.HARSH_TURN, t)) is not None:
        ramp = min(1.0, 3 * p, 3 * (1 - p))
        curve, tilt = side * 1.2 * ramp, side * 10.0 * ramp
    return offset, curve, tilt


def _lead_distance(s: Scenario, t: float) -> tuple[float | None, bool]:
    """Distance (m) to the car ahead, None when there is none, and whether its brake lights are on."""
    if (p := s.active(EventType.FORWARD_COLLISION_RISK, t)) is not None:
        return max(3.5, 40.0 - 50.0 * p), True
    if s.active(EventType.FOLLOWING_DISTANCE, t) is not None:
        return 7.0 + 0.5 * math.sin(t), False
    if s.look.lead_car:
        return 45.0 + 5.0 * math.sin(t / 3.0), False
    return None, False


def render_road(s: Scenario, t: float, size: tuple[int, int] = ROAD_SIZE) -> np.ndarray:
    """One RGB frame of the forward camera at trip time t."""
    w, h = size
    look = s.look
    img: np.ndarray = np.empty((h, w, 3), dtype=np.uint8)
    horizon = int(0.42 * h)
    img[:horizon] = look.sky
    img[horizon:] = look.grass
    offset, curve, tilt = _road_geometry(s, t)

    def centre(depth: float) -> float:  # depth 0 at the horizon, 1 at the bottom edge
        return w / 2 + curve * (1 - depth) ** 2 * 0.5 * w - offset * depth * 0.35 * w

    rows = np.arange(horizon + 1, h)
    depths = (rows - horizon) / (h - horizon)
    left = [(centre(d) - d * 0.45 * w, r) for d, r in zip(depths, rows, strict=True)]
    right = [(centre(d) + d * 0.45 * w, r) for d, r in zip(depths, rows, strict=True)]
    road = np.array([*left, *reversed(right)], dtype=np.int32)
    cv2.fillPoly(img, [road], look.asphalt)
    for u in (-0.95, 0.95):
        line = np.array(
            [(centre(d) + u * d * 0.45 * w, r) for d, r in zip(depths, rows, strict=True)], dtype=np.int32
        )
        cv2.polylines(img, [line], False, (235, 235, 235), max(1, w // 160))
    for d, r in zip(depths, rows, strict=True):  # centre dashes that stream towards the camera
        if ((1.0 / max(d, 0.05)) * 0.8 + look.speed * t * 2.0) % 1.0 < 0.5:
            x = centre(d)
            half = max(1.0, d * w / 120)
            img[r, int(max(0, x - half)) : int(min(w, x + half + 1))] = (250, 215, 60)

    distance, braking = _lead_distance(s, t)
    if distance is not None:
        depth = min(1.0, 6.0 / distance)
        car_w = depth * 0.55 * w
        car_h = car_w * 0.7
        bottom = horizon + depth * (h - horizon) * 0.95
        cx = centre(depth)
        x0, x1, y0, y1 = int(cx - car_w / 2), int(cx + car_w / 2), int(bottom - car_h), int(bottom)
        cv2.rectangle(img, (x0, y0), (x1, y1), look.car, -1)
        cv2.rectangle(
            img,
            (x0 + int(car_w * 0.15), y0 + int(car_h * 0.1)),
            (x1 - int(car_w * 0.15), y0 + int(car_h * 0.4)),
            (25, 30, 40),
            -1,
        )
        lamp = (255, 30, 20) if braking else (140, 20, 20)
        radius = max(1, int(car_w * (0.09 if braking else 0.05)))
        for lx in (x0 + int(car_w * 0.12), x1 - int(car_w * 0.12)):
            cv2.circle(img, (lx, y0 + int(car_h * 0.6)), radius, lamp, -1)

    if (p := s.active(EventType.ROLLING_STOP, t)) is not None:
        distance = max(2.5, 14.0 * (1 - p))
        depth = min(1.0, 5.0 / distance)
        radius = max(4, int(depth * 0.34 * h))
        cx = int(centre(depth) + s.look.side * (0.5 * depth * 0.45 * w + radius + 0.05 * w))
        cy = int(horizon + depth * 0.3 * (h - horizon) - radius)
        cv2.line(img, (cx, cy), (cx, min(h - 1, cy + 3 * radius)), (120, 120, 120), max(1, radius // 5))
        octagon = np.array(
            [
                (
                    cx + radius * math.cos(math.pi / 8 + k * math.pi / 4),
                    cy + radius * math.sin(math.pi / 8 + k * math.pi / 4),
                )
                for k in range(8)
            ],
            dtype=np.int32,
        )
        cv2.fillPoly(img, [octagon], (210, 20, 25))
        cv2.polylines(img, [octagon], True, (255, 255, 255), max(1, radius // 6))

    if tilt:
        rot = cv2.getRotationMatrix2D((w / 2, h / 2), tilt, 1.3)
        img = cv2.warpAffine(img, rot, (w, h), borderMode=cv2.BORDER_REFLECT)
    cv2.putText(img, f"{s.start_ts + t:.1f}", (4, h - 5), cv2.FONT_HERSHEY_PLAIN, 0.7, (255, 255, 255), 1)
    return img


# --- driver view -----------------------------------------------------------------------------------------------


def driver_head(s: Scenario, t: float) -> tuple[int, int]:
    """The centre of the driver's head in the 160x120 drawing at trip time t: turned aside in a distraction,
    drooping when drowsy. Also the truth the face-blur benchmark scores against (`bench faces`)."""
    turned = s.active(EventType.DISTRACTION, t) is not None
    drowsy = s.active(EventType.DROWSINESS, t)
    nod = int(16 + 3 * math.sin(6 * math.pi * drowsy)) if drowsy is not None else 0  # the head droops
    return 80 + (20 * s.look.side if turned else 0), 52 + nod


HEAD_HALF_AXES = (22, 28)  # the head's ellipse, facing the camera, in the 160x120 drawing


def render_driver(s: Scenario, t: float, size: tuple[int, int] = DRIVER_SIZE) -> np.ndarray:
    """One RGB frame of the in-cabin camera at trip time t (drawn at 160x120 and scaled)."""
    look, side = s.look, s.look.side
    img: np.ndarray = np.empty((120, 160, 3), dtype=np.uint8)
    img[:] = look.cabin
    cv2.rectangle(
        img, (0 if side > 0 else 110, 8), (50 if side > 0 else 160, 60), _mix(look.cabin, (200, 210, 225)), -1
    )
    cv2.ellipse(img, (80, 122), (58, 38), 0, 180, 360, look.shirt, -1)
    if s.active(EventType.NO_SEATBELT, t) is None:
        cv2.line(img, (50, 82), (116, 120), (20, 20, 22), 13)
        cv2.line(img, (50, 82), (116, 120), (90, 90, 95), 3)

    turned = s.active(EventType.DISTRACTION, t) is not None
    drowsy = s.active(EventType.DROWSINESS, t)
    head = driver_head(s, t)
    cv2.ellipse(img, (head[0], head[1] + 26), (11, 10), 0, 0, 360, look.skin, -1)  # neck
    if turned:
        cv2.ellipse(img, head, (19, 27), 0, 0, 360, look.skin, -1)
        cv2.ellipse(img, (head[0] - 7 * side, head[1] - 3), (17, 27), 0, 0, 360, look.hair, -1)
        cv2.circle(img, (head[0] + 12 * side, head[1] - 4), 3, (255, 255, 255), -1)
    else:
        cv2.ellipse(img, head, HEAD_HALF_AXES, 0, 0, 360, look.skin, -1)
        cv2.ellipse(img, (head[0], head[1] - 18), (23, 13), 0, 180, 360, look.hair, -1)
        blink = (t % 4.0) < 0.15
        closed = drowsy is not None or blink
        for dx in (-9, 9):
            eye = (head[0] + dx, head[1] - 3)
            if closed:
                cv2.line(img, (eye[0] - 6, eye[1] + 1), (eye[0] + 6, eye[1] + 1), (30, 20, 20), 3)
            else:
                cv2.ellipse(img, eye, (5, 3), 0, 0, 360, (255, 255, 255), -1)
                cv2.circle(img, eye, 2, (20, 20, 30), -1)
        cv2.line(img, (head[0] - 6, head[1] + 13), (head[0] + 6, head[1] + 13), (150, 60, 60), 2)

    if s.active(EventType.PHONE_USE, t) is not None:
        ear = (head[0] + 27 * side, head[1])
        cv2.circle(img, (ear[0] + 5 * side, ear[1] + 22), 11, look.skin, -1)  # hand
        cv2.rectangle(img, (ear[0] - 9, ear[1] - 20), (ear[0] + 9, ear[1] + 20), (15, 15, 15), -1)
        cv2.rectangle(img, (ear[0] - 6, ear[1] - 17), (ear[0] + 6, ear[1] + 17), (40, 230, 90), -1)
    if (p := s.active(EventType.EATING_DRINKING, t)) is not None:
        mouth = (head[0] + 4 * side, head[1] + 20 - int(6 * abs(math.sin(6 * math.pi * p))))
        cv2.rectangle(img, (mouth[0] - 12, mouth[1] - 5), (mouth[0] + 12, mouth[1] + 26), (245, 140, 20), -1)
        cv2.rectangle(img, (mouth[0] - 12, mouth[1] - 5), (mouth[0] + 12, mouth[1] + 1), (255, 255, 255), -1)
        cv2.circle(img, (mouth[0], mouth[1] + 30), 11, look.skin, -1)

    if size != (160, 120):
        img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
    return img


def _mix(a: Color, b: Color) -> Color:
    return tuple((x + y) // 2 for x, y in zip(a, b, strict=True))  # type: ignore[return-value]


# --- telemetry -------------------------------------------------------------------------------------------------


G = 9.80665  # m/s^2
COMFORT_BRAKE_MS2 = 2.5  # slowing for a stop sign as drivers do (0.25 g: under every harsh-braking threshold)
COMFORT_ACCEL_MS2 = 1.5  # pulling away again (0.15 g)
LATE_BRAKE_MS2 = 0.5 * G  # braking late for the car ahead: harsh under every published threshold
ROLL_KMH = 8.0  # a rolling stop's slowest: never a full stop


def _dip(cruise: float, floor: float, dt: float, *, brake: float, accel: float) -> float:
    """Speed `dt` s from the slowest moment of a slow-down to `floor` km/h: braking at `brake` m/s^2 before it,
    pulling away at `accel` after, never above `cruise`."""
    rate = brake if dt < 0 else accel
    return min(cruise, floor + rate * 3.6 * abs(dt))


def speed_kmh(s: Scenario, t: float) -> float:
    """The vehicle's speed at trip time t: a cruise that matches the lane dashes' pace (40-80 km/h); slowing at a
    driver's pace to a roll (ROLL_KMH, never a stop) at the middle of a rolling stop, and pulling away after it;
    braking hard the moment a forward collision risk begins, to half the cruise (over 1.1 s at least, so a 1 Hz
    sample sees it), then pulling away. Slowing
    and pulling away may reach beyond the event's window, as they do on a road. The video does not depend on it."""
    cruise = 50.0 * s.look.speed
    speed = cruise
    for e in s.events:
        if e.type is EventType.ROLLING_STOP:
            slowest = (e.start + e.end) / 2
            dip = _dip(cruise, ROLL_KMH, t - slowest, brake=COMFORT_BRAKE_MS2, accel=COMFORT_ACCEL_MS2)
            speed = min(speed, dip)
        elif e.type is EventType.FORWARD_COLLISION_RISK:
            floor = 0.5 * cruise
            slowest = e.start + (cruise - floor) / 3.6 / LATE_BRAKE_MS2
            speed = min(
                speed, _dip(cruise, floor, t - slowest, brake=LATE_BRAKE_MS2, accel=COMFORT_ACCEL_MS2)
            )
    return speed


HARSH_TURN_G = (
    0.5  # a harsh turn's peak lateral acceleration: over every published threshold (motion_rules.py)
)
SPEED_NOISE_KMH = 0.3  # the sensors' noise, one standard deviation
ACCEL_NOISE_MS2 = 0.05
YAW_NOISE_DPS = 0.3
IMU_DROPOUT = 0.03  # share of samples whose accelerometer and gyro readings are missing


def accel_ms2(s: Scenario, t: float, h: float = 0.05) -> float:
    """The vehicle's longitudinal acceleration at trip time t: the slope of `speed_kmh`."""
    return (speed_kmh(s, t + h) - speed_kmh(s, t - h)) / 3.6 / (2 * h)


def yaw_rate_dps(s: Scenario, t: float) -> float:
    """The vehicle's yaw rate at trip time t: in a harsh turn, what a lateral acceleration of HARSH_TURN_G needs at
    this speed (omega = a / v), ramped in and out like the road's curve and to the same side; else straight."""
    if (p := s.active(EventType.HARSH_TURN, t)) is None:
        return 0.0
    ramp = min(1.0, 3 * p, 3 * (1 - p))
    return s.look.side * math.degrees(HARSH_TURN_G * G * ramp / max(speed_kmh(s, t) / 3.6, 1.0))


def _sensor_rng(s: Scenario, t: float) -> np.random.Generator:
    """The noise of one reading: a function of the trip and the trip time only, so the sample at a segment
    boundary, which both segments carry, reads the same in each."""
    return np.random.default_rng(zlib.crc32(f"{s.scenario_id}:{t:.3f}".encode()))


def telemetry(s: Scenario, t0: float, t1: float, *, clock_offset: float = 0.0) -> tuple[TelemetrySample, ...]:
    """1 Hz samples over trip times [t0, t1], both ends included so consecutive segments cover the trip; `t` on a
    device clock that reads `s.start_ts + clock_offset` at the trip's start. Speed, longitudinal acceleration and
    yaw rate are the trip's (`speed_kmh`, `accel_ms2`, `yaw_rate_dps`) plus sensor noise; IMU_DROPOUT of the
    samples miss their accelerometer and gyro readings (a dropout, None). Speed never drops out: it is the
    distance's source, and the segments of one trip must add up to it."""
    times = [t0 + i for i in range(math.ceil(t1 - t0 - 1e-9))] + [t1]
    samples = []
    for t in times:
        rng = _sensor_rng(s, t)
        speed, accel, yaw = rng.normal(0.0, (SPEED_NOISE_KMH, ACCEL_NOISE_MS2, YAW_NOISE_DPS))
        dropout = rng.random() < IMU_DROPOUT
        samples.append(
            TelemetrySample(
                t=round(s.start_ts + clock_offset + t, 3),
                speed_kmh=round(max(0.5, speed_kmh(s, t) + speed), 2),  # a roll stays a roll
                accel_ms2=None if dropout else round(accel_ms2(s, t) + accel, 3),
                yaw_rate_dps=None if dropout else round(yaw_rate_dps(s, t) + yaw, 2),
            )
        )
    return tuple(samples)


# --- device segments -------------------------------------------------------------------------------------------


def write_segments(
    s: Scenario,
    out_dir: Path,
    *,
    road_fps: float = 10.0,
    driver_fps: float = 8.0,
    road_size: tuple[int, int] = ROAD_SIZE,
    driver_size: tuple[int, int] = DRIVER_SIZE,
    segment_s: float = 10.0,
    driver_clock_skew_s: float = 0.25,
) -> list[SimSegment]:
    """Encode the trip as each camera would upload it: MPEG-4 files of `segment_s` seconds.

    The driver camera's clock runs `driver_clock_skew_s` ahead, as unsynchronised devices do; its segment
    timestamps carry that skew while the pictures show true time.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    segments: list[SimSegment] = []
    cameras = (
        (View.ROAD, road_fps, road_size, render_road, 0.0),
        (View.DRIVER, driver_fps, driver_size, render_driver, driver_clock_skew_s),
    )
    for camera, fps, (w, h), render, skew in cameras:
        pieces = max(1, math.ceil(s.duration / segment_s - 1e-9))
        for k in range(pieces):
            t0, t1 = k * segment_s, min(s.duration, (k + 1) * segment_s)
            frames = max(1, round((t1 - t0) * fps))
            path = out_dir / f"{s.vehicle_id}-{camera.value}-{k:02d}.mp4"
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, (w, h))
            if not writer.isOpened():
                raise RuntimeError(f"OpenCV cannot write MPEG-4 video to {path}")
            for i in range(frames):
                writer.write(cv2.cvtColor(render(s, t0 + i / fps, (w, h)), cv2.COLOR_RGB2BGR))
            writer.release()
            segments.append(
                SimSegment(
                    scenario_id=s.scenario_id,
                    fleet_id=s.fleet_id,
                    vehicle_id=s.vehicle_id,
                    driver_id=s.driver_id,
                    camera=camera,
                    segment_id=f"{s.scenario_id}-{camera.value}-{k:02d}",
                    start_ts=round(s.start_ts + t0 + skew, 3),
                    end_ts=round(s.start_ts + t0 + frames / fps + skew, 3),
                    fps=fps,
                    width=w,
                    height=h,
                    codec="mpeg4",
                    path=path,
                    telemetry=telemetry(s, t0, t0 + frames / fps, clock_offset=skew),
                )
            )
    return segments


__all__ = [
    "HARSH_TURN_G",
    "SIMULATED_EVENTS",
    "Scenario",
    "SimSegment",
    "accel_ms2",
    "make_scenarios",
    "render_driver",
    "render_road",
    "speed_kmh",
    "telemetry",
    "write_segments",
    "yaw_rate_dps",
]
