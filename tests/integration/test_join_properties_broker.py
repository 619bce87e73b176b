"""The join's oracle property through the real broker and a real joiner process (fewer examples than the pure
tests): the arrival patterns of real fleets (tests/strategies.py: real time with jitter, bursts, outages, backlogs
hours late, one camera lagging by minutes, duplicates, driver changes, segments of 1 s to 5 min) of several
vehicles, published with their arrival times as the records' timestamps, give exactly the oracle's clips in their
newest revisions, and nothing is dead-lettered. The two topics are read in no fixed order relative to each other.

The generated timeline is shifted so that it ended more than the vehicle-idle time ago: the joiner replays it as
it would a backlog after an outage, and its own ticks (at wall time) then close every trip."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.messages import SegmentMessage
from streams.infra.blobs import LocalBlobStore
from streams.infra.processes import settings_env, start_command, stop_process
from streams.infra.topics import ensure_topics, topic_for
from streams.joiner.join import JoinRules, expected_clips
from streams.producer import make_producer
from streams.settings import Settings
from tests.broken_video import write_mjpg
from tests.footage import Emitted, footage_violations, revision_violations
from tests.integration.harness import read_topic, wait_for_clips
from tests.strategies import RULES, Fleet, fleets

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def joiner(
    broker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Settings, dict, dict[str, str]]]:
    home = tmp_path_factory.mktemp("join-properties")
    settings = Settings(
        home=home,
        kafka_bootstrap=broker.bootstrap,
        topic_prefix=f"p{uuid.uuid4().hex[:6]}.",
        one_record_per_batch=True,
    )
    assert JoinRules.from_settings(settings) == RULES  # the production defaults, as the pure tests use
    ensure_topics(broker.bootstrap, settings)
    blobs = LocalBlobStore(settings.blobs)
    # One real video per camera, as long as the longest segment; every segment claims it.
    videos = {
        camera: blobs.put_file(
            f"uploads/{camera}.avi", write_mjpg(home / f"{camera}.avi", seconds=302.0, fps=1.0, size=size)
        )
        for camera, size in (("road", (48, 28)), ("driver", (32, 28)))
    }
    log = home / "joiner.log"
    proc = start_command(["joiner"], settings_env(settings), log)
    try:
        yield settings, {"joiner": (proc, log)}, videos
    finally:
        stop_process(proc)


@settings(
    max_examples=3,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(st.lists(fleets(), min_size=3, max_size=3))
def test_through_the_broker_real_upload_patterns_give_the_oracles_clips(
    joiner, vehicles: list[Fleet]
) -> None:
    settings_, procs, videos = joiner
    run = uuid.uuid4().hex[:6]
    last = max(at for fleet in vehicles for at, _, m in fleet.in_arrival_order() if m is not None)
    # Ended over the idle time ago; whole windows, so the clips are those of the generated times, moved.
    shift = math.floor((time.time() - RULES.vehicle_idle_s - 60 - last) / RULES.clip_max_s) * RULES.clip_max_s
    records: list[tuple[float, SegmentMessage]] = []
    want: dict[str, tuple] = {}
    footage: dict[str, list] = {}  # per vehicle, its segments as recorded (moved)
    for i, fleet in enumerate(vehicles):
        vehicle = f"veh-{run}-{i}"
        records += [
            (
                at + shift,
                m.model_copy(
                    update={
                        "vehicle_id": vehicle,
                        "video_uri": videos[m.camera.value],
                        "start_ts": m.start_ts + shift,
                        "end_ts": m.end_ts + shift,
                    }
                ),
            )
            for at, _, m in fleet.in_arrival_order()
            if m is not None
        ]
        moved = [
            s.model_copy(update={"start_ts": s.start_ts + shift, "end_ts": s.end_ts + shift})
            for s in fleet.segments
        ]
        footage[vehicle] = moved
        want |= {
            p.clip_id: _key(p.driver_id, p.start_ts, p.end_ts, p.views, p.segments, p.revision)
            for p in expected_clips(moved, RULES, fleet_id="f", vehicle_id=vehicle)
        }
    producer = make_producer(settings_.kafka_bootstrap or "", settings_)
    for at, m in sorted(records, key=lambda r: r[0]):
        producer.send(
            topic_for(m.camera, settings_),
            key=m.vehicle_id.encode(),
            value=m.model_dump_json().encode(),
            timestamp_ms=round(at * 1000),
        )
    producer.flush()
    producer.close()

    got: dict[str, tuple] = {}
    deadline, stable_since = time.monotonic() + 240, None
    while time.monotonic() < deadline:
        newest: dict[str, dict] = {}
        ours = [
            c
            for c in wait_for_clips(settings_, set(), procs, timeout_s=0, topic="clip-plans")
            if c["vehicle_id"] in footage
        ]
        for c in ours:
            if (
                c["vehicle_id"].startswith(f"veh-{run}-")
                and c["revision"] >= newest.get(c["clip_id"], c)["revision"]
            ):
                newest[c["clip_id"]] = c
        now = {
            k: _key(c["driver_id"], c["start_ts"], c["end_ts"], c["views"], c["segments"], c["revision"])
            for k, c in newest.items()
        }
        stable_since = stable_since if now == got and stable_since is not None else time.monotonic()
        got = now
        if got == want and time.monotonic() - stable_since > 5:
            break
        time.sleep(1)
    assert set(got) == set(want), (
        f"missing {len(set(want) - set(got))}, unexpected {len(set(got) - set(want))}"
    )
    assert got == want
    # The same clips against an oracle that sees the whole footage and shares no code with the join
    # (tests/footage.py): every second in exactly one clip of its driver, one window per clip, revisions only grow.
    for vehicle, segments in footage.items():
        mine = [Emitted.of_message(c) for c in newest.values() if c["vehicle_id"] == vehicle]
        assert footage_violations(segments, mine, RULES, eps=1e-3) == [], vehicle
    assert revision_violations([Emitted.of_message(c) for c in ours], RULES) == []
    dead = [
        d
        for name in ("telematics.road.dlq", "telematics.driver.dlq")
        for d in read_topic(
            settings_.kafka_bootstrap or "", settings_.topic(name), settings_.partitions, idle_s=0.3
        )
        if f"veh-{run}-" in (d.get("key") or "")
    ]
    assert dead == []  # late is not wrong: nothing of a well-formed upload goes to a dead-letter topic


def _key(driver, start, end, views, segments, revision) -> tuple:
    ids = tuple(s.segment_id if hasattr(s, "segment_id") else s["segment_id"] for s in segments)
    return (
        driver,
        round(start, 3),
        round(end, 3),
        tuple(str(getattr(v, "value", v)) for v in views),
        ids,
        revision,
    )
