"""The join's oracle property through the real broker and a real joiner process (fewer examples than the pure
tests): random uploads of several vehicles, with gaps, skew, missing pieces, duplicates and disorder, published to
the camera topics give exactly the oracle's clips on the segments the joiner accepted (everything but what it
dead-lettered as `late`; the two topics are read in no fixed order relative to each other)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.messages import SegmentMessage, SegmentRef, clip_id_for
from streams.blobs import LocalBlobStore
from streams.demo import _spawn, _stop, settings_env
from streams.join import expected_clips
from streams.producer import ensure_topics, make_producer
from streams.settings import Settings
from tests.broken_video import write_mjpg
from tests.integration.harness import read_topic, wait_for_clips
from tests.strategies import RULES, fleet_uploads

pytestmark = pytest.mark.integration
T0 = 1_760_200_000.0


@pytest.fixture(scope="module")
def joiner(broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, dict, dict[str, str]]]:
    home = tmp_path_factory.mktemp("join-properties")
    settings = Settings(home=home, kafka_bootstrap=broker.bootstrap, topic_prefix=f"p{uuid.uuid4().hex[:6]}.",
                        one_record_per_batch=True, grace_s=2.0, skew_tolerance_s=RULES.skew_tolerance_s,
                        event_grace_s=RULES.grace_s, clip_max_seconds=RULES.clip_max_s,
                        clip_min_seconds=RULES.clip_min_s)
    ensure_topics(broker.bootstrap, settings)
    blobs = LocalBlobStore(settings.blobs)
    # One real video per camera, long enough for any generated segment; every segment claims it.
    videos = {camera: blobs.put_file(f"uploads/{camera}.avi", write_mjpg(home / f"{camera}.avi", seconds=13.0,
                                                                        fps=4.0, size=size))
              for camera, size in (("road", (64, 36)), ("driver", (48, 36)))}
    log = home / "joiner.log"
    proc = _spawn(["joiner"], settings_env(settings), log)
    try:
        yield settings, {"joiner": (proc, log)}, videos
    finally:
        _stop(proc)


def _message(vehicle: str, ref: SegmentRef, uri: str) -> SegmentMessage:
    return SegmentMessage(fleet_id="fleet-p", vehicle_id=vehicle, camera=ref.camera, segment_id=ref.segment_id,
                          start_ts=T0 + ref.start_ts, end_ts=T0 + ref.end_ts, fps=4, width=64, height=36,
                          codec="mjpg", video_uri=uri)


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(fleet_uploads(), min_size=3, max_size=3))
def test_through_the_broker_the_clips_are_the_oracles_on_what_was_accepted(joiner, uploads) -> None:
    settings_, procs, videos = joiner
    run = uuid.uuid4().hex[:6]
    per_vehicle = {f"veh-{run}-{i}": [_message(f"veh-{run}-{i}", r, videos[r.camera.value]) for r in refs]
                   for i, refs in enumerate(uploads)}
    producer = make_producer(settings_.kafka_bootstrap, settings_)
    order = [m for ms in zip(*[ms + [None] * (40 - len(ms)) for ms in per_vehicle.values()], strict=True)
             for m in ms if m is not None]  # vehicles interleaved, each in its generated arrival order
    for m in order:
        topic = settings_.topic("telematics.road" if m.camera.value == "road" else "telematics.driver")
        producer.send(topic, key=m.vehicle_id.encode(), value=m.model_dump_json().encode())
    producer.flush()
    producer.close()

    published = time.monotonic()
    got: dict[str, tuple] = {}
    want: dict[str, tuple] = {}
    # Late segments are only known once the joiner has read them: settle when the clips match the oracle on what
    # was accepted so far, and nothing has changed for longer than the idle grace plus a tick.
    while time.monotonic() - published < 90:
        late = _late(settings_, set(per_vehicle))
        want = {}
        for vehicle, messages in per_vehicle.items():
            accepted = [m.ref(m.video_uri or "") for m in messages if (vehicle, m.segment_id) not in late]
            for a, b, views in expected_clips(accepted, RULES):
                want[clip_id_for(vehicle, a, b)] = (vehicle, a, b, [v.value for v in views])
        clips = wait_for_clips(settings_, set(), procs, timeout_s=0)
        got = {c["clip_id"]: (c["vehicle_id"], c["start_ts"], c["end_ts"], c["views"])
               for c in clips if c["vehicle_id"] in per_vehicle}
        if got == want and time.monotonic() - published > 3 * settings_.grace_s + 2:
            break
        time.sleep(1)
    assert got == want


def _late(settings_: Settings, vehicles: set[str]) -> set[tuple[str, str]]:
    late = set()
    for name in ("telematics.road.dlq", "telematics.driver.dlq"):
        for d in read_topic(settings_.kafka_bootstrap or "", settings_.topic(name), settings_.partitions, idle_s=0.3):
            payload = json.loads(d["payload"])
            if payload["vehicle_id"] in vehicles:
                assert d["reason"] == "late", d
                late.add((payload["vehicle_id"], payload["segment_id"]))
    return late
