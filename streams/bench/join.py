"""`drivecoach bench join` without a broker: the pure join against only validating the messages, and the join
state each vehicle holds."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import numpy as np

from schemas.messages import SegmentMessage
from schemas.taxonomy import View
from streams.joiner.join import (
    JoinRules,
    Step,
    VehicleJoinState,
    WindowManifest,
    is_expired,
    observe_tick,
    receive,
    windows_to_load,
)
from streams.settings import Settings


@dataclass(frozen=True)
class JoinBench:
    segments: int
    clips: int
    cpu_s: float
    parse_cpu_s: float  # baseline: only validating the same segment references, no join

    @property
    def segments_per_s(self) -> float:
        return self.segments / self.cpu_s

    @property
    def ratio_to_parse(self) -> float:
        """Join cost relative to just validating the messages (how much the join adds per segment)."""
        return self.cpu_s / self.parse_cpu_s


def synthetic_segments(
    vehicles: int, per_vehicle: int, seed: int = 0
) -> list[tuple[str, dict[str, float | str]]]:
    """Both cameras' 10-s segments per vehicle, device-clock jitter, interleaved by end time as a fleet sends them."""
    rng = np.random.default_rng(seed)
    out = []
    for v in range(vehicles):
        for camera, skew in ((View.ROAD, 0.0), (View.DRIVER, float(rng.uniform(-0.5, 0.5)))):
            for k in range(per_vehicle):
                start = 1_760_000_000.0 + 10.0 * k + skew + float(rng.uniform(-0.05, 0.05))
                out.append(
                    (
                        f"veh-{v:04d}",
                        {
                            "segment_id": f"v{v}-{camera.value}-{k}",
                            "camera": camera.value,
                            "start_ts": start,
                            "end_ts": start + 10.0,
                            "video_uri": "file:///x",
                        },
                    )
                )
    out.sort(key=lambda kv: float(kv[1]["end_ts"]))
    return out


def bench_join(settings: Settings, *, vehicles: int = 50, per_vehicle: int = 40) -> JoinBench:
    """Per-segment cost of the pure join, as the Faust agent calls it: each upload received 1 s after it ends (the
    other camera's topic read as far), windows loaded and emitted on the way, the trips ended by the idle time."""
    rules = JoinRules.from_settings(settings)
    raw = synthetic_segments(vehicles, per_vehicle)

    started = time.process_time()
    messages = [
        (
            vehicle,
            SegmentMessage.model_validate(
                {
                    **fields,
                    "fleet_id": "fleet-bench",
                    "vehicle_id": vehicle,
                    "fps": 2.0,
                    "width": 64,
                    "height": 36,
                    "codec": "mp4v",
                }
            ),
        )
        for vehicle, fields in raw
    ]
    parse_cpu = time.process_time() - started

    states: dict[str, VehicleJoinState] = {}
    manifests: dict[tuple[str, float], WindowManifest] = {}
    clips = 0
    started = time.process_time()

    def keep(vehicle: str, step: Step) -> None:
        nonlocal clips
        clips += len(step.plans)
        manifests.update({(vehicle, m.start): m for m in step.manifests})
        states[vehicle] = step.state

    for vehicle, message in messages:
        state = states.get(vehicle) or VehicleJoinState(fleet_id="fleet-bench", vehicle_id=vehicle)
        arrived = message.end_ts + 1.0
        other = View.DRIVER if message.camera is View.ROAD else View.ROAD
        loaded = {w: manifests.get((vehicle, w)) for w in windows_to_load(state, message, rules)}
        keep(
            vehicle,
            receive(
                observe_tick(state, other, arrived, rules).state,
                message,
                arrived=arrived,
                rules=rules,
                manifests=loaded,
            ),
        )
    for vehicle, state in list(states.items()):
        end = max(state.camera_clock.values()) + rules.vehicle_idle_s
        keep(vehicle, observe_tick(observe_tick(state, View.ROAD, end, rules).state, View.DRIVER, end, rules))
    cpu = time.process_time() - started
    return JoinBench(segments=len(messages), clips=clips, cpu_s=cpu, parse_cpu_s=parse_cpu)


@dataclass(frozen=True)
class JoinStateBench:
    """Bytes the joiner keeps per vehicle: the table value (JSON, also each changelog record) while it drives, and
    after it has been idle; and the window manifests in the blob store per hour of driving."""

    driving_s: float
    segment_s: float
    table_bytes_max: int
    table_bytes_mean: float
    table_bytes_idle: int  # after the idle time: the state is deleted (0), a tombstone in the changelog
    idle_s: float
    manifest_bytes_per_hour: float
    windows_per_hour: float


def bench_join_state(
    settings: Settings, *, driving_s: float = 3600.0, segment_s: float = 10.0, idle_s: float = 86400.0
) -> JoinStateBench:
    """One vehicle drives for `driving_s` uploading each camera's segment 1 s after it ends (real time), then is idle
    for `idle_s` while the joiner's timer ticks; the state's JSON is measured after every record."""
    rules = JoinRules.from_settings(settings)
    t0 = 1_760_000_000.0
    state: VehicleJoinState | None = None
    manifests: dict[float, WindowManifest] = {}
    sizes: list[int] = []

    def keep(step: Step) -> None:
        nonlocal state
        manifests.update({m.start: m for m in step.manifests})
        state = None if is_expired(step.state, rules) else step.state
        sizes.append(len(state.model_dump_json()) if state is not None else 0)

    k = 0
    while k * segment_s < driving_s:
        for camera in View:
            start = t0 + k * segment_s
            message = SegmentMessage(
                fleet_id="fleet-bench",
                vehicle_id="veh-0",
                driver_id="drv-0",
                camera=camera,
                segment_id=f"{camera.value}-{k}",
                start_ts=start,
                end_ts=start + segment_s,
                fps=2.0,
                width=64,
                height=36,
                codec="mp4v",
                video_uri=f"file:///blobs/uploads/veh-0/{camera.value}-{k}.mp4",
            )
            current = state or VehicleJoinState(fleet_id="fleet-bench", vehicle_id="veh-0")
            loaded = {w: manifests.get(w) for w in windows_to_load(current, message, rules)}
            keep(receive(current, message, arrived=start + segment_s + 1.0, rules=rules, manifests=loaded))
        k += 1
    driving = list(sizes)
    last = t0 + k * segment_s + 1.0
    tick = max(settings.tick_s, 1.0)
    at = last
    while (
        state is not None and at < last + idle_s
    ):  # the timer ticks a waiting vehicle's topics until it expires
        at += tick
        for camera in View:
            if state is not None:
                keep(observe_tick(state, camera, at, rules))
    store = sum(
        len(json.dumps({"segments": [s.model_dump(mode="json") for s in m.segments]}))
        for m in manifests.values()
    )
    hours = driving_s / 3600.0
    return JoinStateBench(
        driving_s=driving_s,
        segment_s=segment_s,
        table_bytes_max=max(driving),
        table_bytes_mean=sum(driving) / len(driving),
        table_bytes_idle=0 if state is None else len(state.model_dump_json()),
        idle_s=idle_s,
        manifest_bytes_per_hour=store / hours,
        windows_per_hour=len(manifests) / hours,
    )
