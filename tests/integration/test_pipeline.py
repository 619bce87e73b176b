"""The whole pipeline on real parts: Tansu broker, Faust joiner process, inference worker process, real Postgres.

Simulated vehicles are uploaded as real video segments; the test asserts what lands in Postgres (one clip per
trip, an inference with events and an instruction for each), that an upload arriving after its clip was answered
revises that clip (a second answer, now the current one), that the worker committed every `clips` offset only
after writing, and that malformed uploads went to the dead-letter topic while the rest kept flowing. It runs twice:
with blobs in the local directory and in S3 (moto's S3 API server on loopback), and in both a claim check naming a
missing object is dead-lettered `missing_blob` while the rest flows.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import sessionmaker

from schemas.db import Clip, Event, Inference, Instruction
from schemas.prompts import parse_turn1
from schemas.registry import deploy
from streams.demo import SIMULATED_FLEET_JOIN, expected_clip_extents, to_messages
from streams.inference.engines.base import model_version_of
from streams.inference.worker import committed_offsets
from streams.infra.blobs import open_blob_store
from streams.infra.processes import settings_env, start_command, stop_process
from streams.infra.roles import PIPELINE_GROUP
from streams.infra.topics import ensure_topics
from streams.joiner.join import JoinRules, expected_fleet_clips
from streams.producer import make_producer, publish
from streams.settings import Settings
from streams.simulate import make_scenarios, write_segments
from tests.integration.harness import service_login, stalled_report, wait_until

pytestmark = pytest.mark.integration


def _dlq_records(bootstrap: str, topic: str, partitions: int, timeout_s: float = 30) -> list[dict]:
    """Every record of a topic: read until each partition's position reaches the end offset it had when asked
    (producers here send one record per batch, so Tansu's end offsets are right: docs/knowledge.md)."""
    ends = _end_offsets(bootstrap, topic, partitions)
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    out, deadline = [], time.monotonic() + timeout_s
    try:
        while any(consumer.position(tp) < ends[tp.partition] for tp in tps):
            assert time.monotonic() < deadline, f"{topic}: read {len(out)} records, the end is at {ends}"
            for records in consumer.poll(500).values():
                out += [json.loads(r.value) for r in records]
    finally:
        consumer.close()
    return out


def _end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    ends = consumer.end_offsets(tps)
    consumer.close()
    return {tp.partition: off for tp, off in ends.items()}


def _revisions(messages, settings: Settings) -> dict[str, int]:
    """Each clip the join makes of these uploads, and the revision it ends at."""
    return {p.clip_id: p.revision for p in expected_fleet_clips(messages, JoinRules.from_settings(settings))}


def _wait_for_answers(factory, revisions: dict[str, int], procs, logs: Path, timeout_s: float = 240) -> None:
    """Until every clip is in Postgres at its revision with an answer made on it."""
    deadline = time.monotonic() + timeout_s
    done: set[str] = set()
    while time.monotonic() < deadline and len(done) < len(revisions):
        for proc in procs:
            assert proc.poll() is None, f"a process died; logs in {logs}"
        with factory() as session:
            done = {
                c
                for c, r in session.execute(
                    select(Inference.clip_id, Inference.clip_revision).where(Inference.clip_id.in_(revisions))
                )
                if revisions[c] == r
            }
        time.sleep(1)
    if done != set(revisions):
        pytest.fail(
            f"{len(done)}/{len(revisions)} clips answered at their revision; missing {set(revisions) - done}\n"
            + stalled_report(procs, logs)
        )


@pytest.fixture(params=["local", "s3"])
def blob_settings(request: pytest.FixtureRequest) -> dict[str, str]:
    """Where the run's blobs live: the local directory under its home, or a fresh bucket on the moto S3 server."""
    if request.param == "local":
        return {}
    s3 = request.getfixturevalue("s3_server")
    return {"blob_url": f"s3://{s3.bucket()}/pipeline", "s3_endpoint_url": s3.endpoint}


@pytest.fixture
def worker_database_url(database_url: str) -> Iterator[str]:
    with service_login(database_url, PIPELINE_GROUP) as url:
        yield url


def _fleet(blob_settings: dict[str, str]) -> dict:
    """The S3 run's trips are another fleet's, a day later: its clip and segment ids are not the local run's (the
    session's database is shared)."""
    return {"fleet_id": "fleet-s3", "start_ts": 1_760_086_400.0} if blob_settings else {}


def test_simulated_fleet_flows_from_kafka_to_postgres(
    broker,
    database_url,
    trained_tiny_model: Path,
    tmp_path: Path,
    blob_settings: dict[str, str],
    worker_database_url: str,
    request: pytest.FixtureRequest,
):
    settings = Settings(
        **blob_settings,
        home=tmp_path / "home",
        kafka_bootstrap=broker.bootstrap,
        topic_prefix=f"t{uuid.uuid4().hex[:6]}.",
        database_url=database_url,
        model=str(trained_tiny_model),
        one_record_per_batch=True,
        **SIMULATED_FLEET_JOIN,
        max_new_tokens=120,
    )
    ensure_topics(broker.bootstrap, settings)
    deploy(
        sessionmaker(create_engine(database_url)),
        version=model_version_of(trained_tiny_model),
        path=str(trained_tiny_model),
        demo=True,
    )
    env = settings_env(settings)
    logs = tmp_path / "logs"
    logs.mkdir()
    joiner = start_command(["joiner"], env, logs / "joiner.log")
    builder = start_command(["builder"], env, logs / "builder.log")
    # The worker connects as its own least-privilege login, as deploy/ runs it (issue 17, finding 7).
    worker = start_command(
        ["worker"],
        settings_env(settings.model_copy(update={"database_url": worker_database_url})),
        logs / "worker.log",
    )
    try:
        scenarios = make_scenarios(11, 4, vehicles=2, duration=12.0, **_fleet(blob_settings))
        blobs = open_blob_store(settings)
        messages = []
        for s in scenarios:
            messages += to_messages(write_segments(s, tmp_path / "sim" / s.scenario_id, segment_s=5.0), blobs)
        expected = expected_clip_extents(messages, settings)
        assert len(expected) == len(scenarios)

        producer = make_producer(broker.bootstrap, settings)
        bad = messages[0].model_dump(mode="json") | {
            "segment_id": "broken",
            "end_ts": messages[0].start_ts - 1,
        }
        producer.send(settings.topic("telematics.road"), key=b"veh-000", value=b"{not json").get(10)
        producer.send(
            settings.topic("telematics.driver"), key=b"veh-000", value=json.dumps(bad).encode()
        ).get(10)
        # A claim check of an object that was never put: dead-lettered on arrival, the rest flows.
        road = next(m for m in messages if m.camera.value == "road")
        missing = road.model_copy(
            update={"segment_id": "missing", "video_uri": blobs.uri(f"uploads/{road.vehicle_id}/missing.mp4")}
        )
        # Every segment is uploaded twice: duplicates must change nothing.
        publish(producer, sorted([*messages, *messages, missing], key=lambda m: m.end_ts), settings)
        producer.flush()

        factory = sessionmaker(create_engine(database_url))
        _wait_for_answers(factory, _revisions(messages, settings), [joiner, builder, worker], logs)
        # A re-cut upload of the first trip, arriving after that trip's clip was answered: the clip is rebuilt as a
        # new revision under the same id, answered again, and the newer answer becomes the clip's current one.
        first_road = next(m for m in messages if m.camera.value == "road" and m.vehicle_id == "veh-000")
        # Its id is the trip's own (ids are global: the local run's fleet shares this database, and a segment id
        # another fleet wrote makes the clip unwritable, dead-lettered `unwritable_result`: docs/producers.md).
        late = first_road.model_copy(
            update={"segment_id": f"{first_road.segment_id}-recut", "end_ts": first_road.start_ts + 3}
        )
        if blob_settings:
            # On S3, the late upload arrives while the store refuses the pipeline's credential (moto enforcing
            # IAM: the key is unknown), and then the store restarts: an outage, not bad input. The joiner and the
            # builder say so, retry, and nothing is dead-lettered or lost.
            s3 = request.getfixturevalue("s3_server")
            with s3.enforcing_iam():
                publish(producer, [late], settings)
                wait_until(
                    lambda: "blob store unavailable" in (logs / "joiner.log").read_text(),
                    timeout_s=60,
                    what="the joiner to report the refused credential",
                )
            s3.stop()
            time.sleep(2)
            s3.start()
        else:
            publish(producer, [late], settings)
        producer.close()
        revisions = _revisions([*messages, late], settings)
        (revised,) = [c for c, r in revisions.items() if r != _revisions(messages, settings)[c]]
        _wait_for_answers(factory, revisions, [joiner, builder, worker], logs)

        # Nothing lost, nothing twice: exactly the expected clips at their final revisions, one answer per clip and
        # revision, committed offsets at the end. First: the joiner has published every clip and its revision, and
        # the worker has committed all of them (so all it wrote is in Postgres).
        clips_topic = settings.topic("clips")

        def worker_caught_up() -> bool:
            ends = _end_offsets(broker.bootstrap, clips_topic, 2)
            return (
                sum(ends.values()) >= len(expected) + 1
                and committed_offsets(broker.bootstrap, settings) == ends
            )

        wait_until(worker_caught_up, what="the worker to commit every clip the joiner published")
        with factory() as session:
            clips = list(  # the session's database holds other tests' fleets with these vehicle ids too
                session.scalars(
                    select(Clip).where(
                        Clip.fleet_id.in_({s.fleet_id for s in scenarios}),
                        Clip.vehicle_id.in_({s.vehicle_id for s in scenarios}),
                    )
                )
            )
            assert sorted(c.clip_id for c in clips) == sorted(expected)
            assert {c.clip_id: c.revision for c in clips} == revisions
            ours = Inference.clip_id.in_(expected)  # the session's database is shared with other tests
            assert (
                session.scalar(select(func.count()).select_from(Inference).where(ours)) == len(expected) + 1
            )
            assert (
                session.scalar(select(func.count()).select_from(Instruction).join(Inference).where(ours))
                == len(expected) + 1
            )
            assert sorted(
                session.scalars(select(Inference.clip_revision).where(Inference.clip_id == revised))
            ) == [revisions[revised] - 1, revisions[revised]]
            inferences = list(session.scalars(select(Inference).where(ours)))
            assert all(i.raw_turn1 and i.model_version for i in inferences)
            invalid = [(i.clip_id, i.error, i.raw_turn1) for i in inferences if not i.valid]
            assert invalid == [], invalid  # the trained tiny model answers these simulated trips validly
            stored = {
                i.id: sorted(
                    (e.type, e.start_s, e.end_s)
                    for e in session.scalars(select(Event).where(Event.inference_id == i.id))
                )
                for i in inferences
            }
        for inference in inferences:  # the rows say exactly what the model's turn-1 answer said
            said = parse_turn1(inference.raw_turn1).events if inference.valid else []
            assert stored[inference.id] == sorted((e.type.value, e.start, e.end) for e in said)
        for clip in clips:
            vehicle, start, end = expected[clip.clip_id]
            assert (clip.vehicle_id, clip.start_ts, clip.end_ts) == (
                vehicle,
                pytest.approx(start),
                pytest.approx(end),
            )
            assert set(clip.views) == {"road", "driver"} and clip.num_frames >= 2
            assert clip.frames_uri.startswith(blobs.uri("clips"))  # the frames are in this run's store

        assert committed_offsets(broker.bootstrap, settings) == _end_offsets(broker.bootstrap, clips_topic, 2)
        assert (
            sum(_end_offsets(broker.bootstrap, clips_topic, 2).values()) == len(expected) + 1
        )  # and a revision

        # Exactly the two bad uploads, once each; late, re-sent and revising uploads are not wrong, and the worker
        # dead-lettered no clip.
        dead = {
            name: sorted(
                (d["topic"], d["reason"], d["key"], d["payload"])
                for d in _dlq_records(broker.bootstrap, settings.topic(f"{name}.dlq"), 2)
            )
            for name in ("telematics.road", "telematics.driver", "clip-plans", "clips")
        }
        assert dead == {
            "telematics.road": sorted(
                [
                    (settings.topic("telematics.road"), "malformed_json", "veh-000", "{not json"),
                    (
                        settings.topic("telematics.road"),
                        "missing_blob",
                        road.vehicle_id,
                        missing.model_dump_json(),
                    ),
                ]
            ),
            "telematics.driver": [
                (settings.topic("telematics.driver"), "invalid_segment", "veh-000", json.dumps(bad))
            ],
            "clip-plans": [],
            "clips": [],
        }
    finally:
        stop_process(joiner)
        stop_process(builder)
        stop_process(worker)
