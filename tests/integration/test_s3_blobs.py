"""The S3 blob store against a real S3 API server (moto's, on loopback, through boto3's whole HTTP stack): immutable
uploads by conditional writes, missing objects and foreign claim checks as clear errors, a denied credential, a
server restart mid-run, presigned uploads, and videos decoded by OpenCV straight from presigned URLs."""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path

import boto3
import cv2
import httpx
import numpy as np
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from typer.testing import CliRunner

from schemas.messages import ClipPlanMessage
from schemas.taxonomy import View
from streams.builder.build import build_and_store
from streams.demo import to_messages
from streams.errors import BadSegment
from streams.infra.blobs import (
    BlobConflict,
    BlobNotFound,
    BlobUnavailable,
    LocalBlobStore,
    PresignedVideo,
    S3BlobStore,
    open_blob_store,
    open_blob_store_at,
)
from streams.infra.broker import free_port
from streams.infra.topics import ensure_topics
from streams.joiner.app import probe_blob
from streams.joiner.join import WindowManifest
from streams.joiner.segments import claim_check, parse_segment
from streams.joiner.windows import WindowStore
from streams.settings import Settings
from streams.simulate import make_scenarios, write_segments
from tests.conftest import MotoS3
from tests.integration.harness import read_topic

pytestmark = pytest.mark.integration


@pytest.fixture
def store(s3_server: MotoS3) -> S3BlobStore:
    return S3BlobStore(f"s3://{s3_server.bucket()}/fleet-a", s3_server.endpoint)


@pytest.fixture(scope="module")
def trip(tmp_path_factory: pytest.TempPathFactory):
    """One simulated trip of two 3-s segments per camera, as a dashcam writes them."""
    (s,) = make_scenarios(3, 1, vehicles=1, duration=6.0)
    return s, write_segments(s, tmp_path_factory.mktemp("trip"), segment_s=3.0)


def test_uploads_are_immutable_by_conditional_writes(store: S3BlobStore, tmp_path: Path) -> None:
    a, b = tmp_path / "a.mp4", tmp_path / "b.mp4"
    a.write_bytes(b"trip one")
    b.write_bytes(b"trip two")
    uri = store.put_file("uploads/veh-1/seg-1.mp4", a)
    assert uri == f"s3://{store.bucket}/fleet-a/uploads/veh-1/seg-1.mp4"
    assert store.put_file("uploads/veh-1/seg-1.mp4", a) == uri  # the same bytes again: a no-op
    with pytest.raises(BlobConflict, match="different content"):
        store.put_file("uploads/veh-1/seg-1.mp4", b)
    assert store.get_bytes(uri) == b"trip one"
    # Immutable bytes likewise; plain put_bytes (frames blobs, manifests) overwrites.
    assert store.put_bytes("segments/x.bin", b"inline", immutable=True) == store.put_bytes(
        "segments/x.bin", b"inline", immutable=True
    )
    with pytest.raises(BlobConflict):
        store.put_bytes("segments/x.bin", b"other", immutable=True)
    store.put_bytes("clips/c.npz", b"r1")
    assert store.get_bytes(store.put_bytes("clips/c.npz", b"r2")) == b"r2"


def test_a_multipart_object_is_compared_by_content_not_etag(
    s3_server: MotoS3, store: S3BlobStore, tmp_path: Path
) -> None:
    """A multipart upload's ETag is no MD5 (`...-2`): the store reads the object to tell same from different."""
    data = np.random.default_rng(0).integers(0, 255, 11 << 20, dtype=np.uint8).tobytes()
    same, other = tmp_path / "same.mp4", tmp_path / "other.mp4"
    same.write_bytes(data)
    other.write_bytes(data[:-1] + b"\x00")
    s3_server.client().upload_file(
        str(same),
        store.bucket,
        store.object_key("uploads/big.mp4"),
        Config=TransferConfig(multipart_threshold=5 << 20),
    )
    head = s3_server.client().head_object(Bucket=store.bucket, Key=store.object_key("uploads/big.mp4"))
    assert "-" in head["ETag"]
    assert store.put_file("uploads/big.mp4", same) == store.uri("uploads/big.mp4")
    with pytest.raises(BlobConflict):
        store.put_file("uploads/big.mp4", other)


def test_missing_and_foreign_claim_checks_are_clear_errors(store: S3BlobStore, tmp_path: Path) -> None:
    missing = store.uri("uploads/veh-1/never-uploaded.mp4")
    for read in (store.check, store.get_bytes, store.version):
        with pytest.raises(BlobNotFound, match="does not exist"):
            read(missing)
    assert store.get_key("windows/none.json") is None
    with pytest.raises(BlobNotFound, match="in bucket 'other-bucket'"):
        store.check("s3://other-bucket/fleet-a/uploads/x.mp4")
    with pytest.raises(BlobNotFound, match="scheme 'file'"):
        store.check((tmp_path / "x.mp4").as_uri())
    with pytest.raises(BlobNotFound, match="scheme 's3'"):
        LocalBlobStore(tmp_path).check(missing)
    # Through the joiner's claim check: a dead letter with the reason, not a crash.
    raw = json.dumps(
        {
            "schema_version": 1,
            "fleet_id": "fleet-a",
            "vehicle_id": "veh-1",
            "camera": "road",
            "segment_id": "gone",
            "start_ts": 100.0,
            "end_ts": 110.0,
            "fps": 10,
            "width": 320,
            "height": 180,
            "codec": "mp4v",
            "video_uri": missing,
        }
    ).encode()
    with pytest.raises(BadSegment) as err:
        claim_check(parse_segment(raw, max_bytes=10_000), store)
    assert err.value.reason == "missing_blob" and "does not exist" in err.value.detail


@pytest.mark.parametrize("kind", ["s3", "local"])
def test_byte_ranges_read_only_what_is_asked(store: S3BlobStore, tmp_path: Path, kind: str) -> None:
    """What the clip page's video players ask for: a few bytes of a large upload, never the whole of it."""
    blobs = store if kind == "s3" else LocalBlobStore(tmp_path / "blobs")
    data = bytes(range(256)) * 4096  # 1 MiB
    uri = blobs.put_bytes(f"ranges/{uuid.uuid4().hex}.bin", data)
    assert blobs.size(uri) == len(data)
    assert blobs.read_range(uri, 1000, 24) == data[1000:1024]
    assert blobs.read_range(uri, len(data) - 5, 100) == data[-5:]  # fewer at the end
    assert blobs.read_range(uri, 0, 0) == b""
    with pytest.raises(BlobNotFound):
        blobs.size(blobs.uri("ranges/none.bin"))
    with pytest.raises(BlobNotFound):
        blobs.read_range(blobs.uri("ranges/none.bin"), 0, 10)


def test_a_denied_credential_is_unavailable_not_missing(
    s3_server: MotoS3, store: S3BlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """moto enforces IAM when asked: a reader's key may GET but not PUT; an unknown key may do nothing. Both are
    BlobUnavailable (the operator's to fix), never BlobNotFound (which would dead-letter every upload)."""
    uri = store.put_bytes("uploads/seen.mp4", b"video")
    iam = s3_server.client("iam")
    user = f"reader-{store.bucket}"
    iam.create_user(UserName=user)
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": f"arn:aws:s3:::{store.bucket}/*"}
        ],
    }
    iam.put_user_policy(UserName=user, PolicyName="read", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    reader = S3BlobStore(store.spec, s3_server.endpoint)  # credentials from the environment, as in production
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAUNKNOWNKEY000000")
    stranger = S3BlobStore(store.spec, s3_server.endpoint)
    with s3_server.enforcing_iam():
        assert reader.get_bytes(uri) == b"video"
        with pytest.raises(BlobUnavailable, match="refused access .*AccessDenied"):
            reader.put_bytes("uploads/new.mp4", b"x")
        with pytest.raises(BlobUnavailable, match="InvalidAccessKeyId"):
            stranger.get_bytes(uri)


def test_a_server_restart_mid_run_is_ridden_out(s3_server: MotoS3, store: S3BlobStore) -> None:
    """The server goes away for 2 s between two writes: the client's retries carry the next ones through."""
    first = store.put_bytes("clips/a.npz", b"a")
    s3_server.stop()
    back = threading.Timer(2.0, s3_server.start)
    back.start()
    try:
        started = time.monotonic()
        second = store.put_bytes("clips/b.npz", b"b")
        assert time.monotonic() - started >= 1.0  # it did wait for the server
        assert (store.get_bytes(first), store.get_bytes(second)) == (b"a", b"b")
    finally:
        back.join()
    # A store that stays away is BlobUnavailable, with the endpoint named (retries cut short here).
    gone = S3BlobStore(store.spec, f"http://127.0.0.1:{free_port()}")
    gone.client = boto3.client(
        "s3", endpoint_url=gone.endpoint, config=Config(retries={"max_attempts": 1}, connect_timeout=1)
    )
    with pytest.raises(BlobUnavailable, match="did not answer"):
        gone.get_bytes(gone.uri("clips/a.npz"))


def test_devices_upload_through_presigned_urls(s3_server: MotoS3, store: S3BlobStore) -> None:
    url, claim = store.presign_put("uploads/veh-9/seg-1.mp4", expires_s=600)
    assert claim == store.uri("uploads/veh-9/seg-1.mp4") and "X-Amz-Signature=" in url
    assert httpx.put(url, content=b"from the device").status_code == 200
    assert store.get_bytes(claim) == b"from the device"


def test_the_presign_command_prints_a_url_and_its_claim_check(s3_server: MotoS3) -> None:
    from streams.cli import app

    bucket = s3_server.bucket()
    result = CliRunner().invoke(
        app,
        ["blobs", "presign", "uploads/veh-3/seg-7.mp4", "--expires-s", "120"],
        env={
            "DRIVECOACH_BLOB_URL": f"s3://{bucket}/fleet-b",
            "DRIVECOACH_S3_ENDPOINT_URL": s3_server.endpoint,
        },
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["claim_check"] == f"s3://{bucket}/fleet-b/uploads/veh-3/seg-7.mp4" and out["expires_s"] == 120
    assert httpx.put(out["url"], content=b"seg").status_code == 200
    assert (
        open_blob_store_at(f"s3://{bucket}/fleet-b", s3_server.endpoint).get_bytes(out["claim_check"])
        == b"seg"
    )


def test_opencv_decodes_straight_from_a_presigned_url(store: S3BlobStore, trip) -> None:
    """No copy: FFmpeg opens the presigned GET URL and seeks with range requests."""
    _, segments = trip
    seg = segments[0]
    uri = store.put_file(f"uploads/{seg.vehicle_id}/{seg.path.name}", seg.path)
    with store.video_source(uri) as video:
        assert isinstance(video, PresignedVideo) and video.name == seg.path.name
        assert str(video).startswith(store.endpoint) and "Signature" not in repr(video)
        cap = cv2.VideoCapture(str(video))
        try:
            assert cap.isOpened()
            frames = 0
            while cap.grab():
                frames += 1
        finally:
            cap.release()
    local = cv2.VideoCapture(str(seg.path))
    assert frames == int(local.get(cv2.CAP_PROP_FRAME_COUNT)) > 0
    local.release()
    probe_blob(store.spec, store.endpoint, uri)  # the joiner's probe, as its pool runs it
    with pytest.raises(BadSegment) as err:  # an object gone after its claim check was admitted
        probe_blob(store.spec, store.endpoint, store.uri("uploads/gone.mp4"))
    assert err.value.reason == "missing_blob"


def test_a_clip_is_built_from_s3_and_its_frames_stored_there(store: S3BlobStore, trip) -> None:
    """The builder's pool function with an S3 spec: segments decoded from presigned URLs, frames blob put back."""
    scenario, segments = trip
    messages = to_messages(segments, store)
    assert all(m.video_uri and m.video_uri.startswith(f"s3://{store.bucket}/") for m in messages)
    plan = ClipPlanMessage(
        clip_id="clip-s3",
        fleet_id=scenario.fleet_id,
        vehicle_id=scenario.vehicle_id,
        window_start=scenario.start_ts,
        start_ts=max(min(m.start_ts for m in messages if m.camera is c) for c in View),
        end_ts=min(max(m.end_ts for m in messages if m.camera is c) for c in View),
        views=list(View),
        segments=[m.ref(m.video_uri or "") for m in messages],
        revision=1,
    )
    built = build_and_store(plan, store.spec, 2.0, 128, 16384, store.endpoint)
    assert built.frames_uri == store.uri(f"clips/{scenario.vehicle_id}/clip-s3.r1.npz") and built.faults == []
    import io

    with np.load(io.BytesIO(store.get_bytes(built.frames_uri))) as data:
        assert data["frames"].shape[0] == built.num_frames >= 2
    missing = plan.model_copy(
        update={
            "segments": [
                *plan.segments[:-1],
                plan.segments[-1].model_copy(update={"video_uri": store.uri("x")}),
            ]
        }
    )
    with pytest.raises(BlobNotFound):
        build_and_store(missing, store.spec, 2.0, 128, 16384, store.endpoint)


def test_window_manifests_live_in_the_store_and_are_cleared_by_prefix(store: S3BlobStore, trip) -> None:
    scenario, segments = trip
    windows = WindowStore(store)
    refs = tuple(m.ref(m.video_uri or "") for m in to_messages(segments, store))
    for start in (0.0, 64.0):
        windows.save(WindowManifest(scenario.vehicle_id, start, refs))
    assert windows.load(scenario.vehicle_id, 64.0) == WindowManifest(scenario.vehicle_id, 64.0, refs)
    windows.clear()
    assert windows.load(scenario.vehicle_id, 0.0) is None
    assert store.get_bytes(refs[0].video_uri)  # the uploads are untouched


def test_the_settings_pick_the_store(s3_server: MotoS3, tmp_path: Path) -> None:
    bucket = s3_server.bucket()
    s3 = open_blob_store(
        Settings(home=tmp_path, blob_url=f"s3://{bucket}/p", s3_endpoint_url=s3_server.endpoint)
    )
    assert isinstance(s3, S3BlobStore) and (s3.bucket, s3.prefix, s3.endpoint) == (
        bucket,
        "p",
        s3_server.endpoint,
    )
    assert open_blob_store_at(s3.spec, s3.endpoint) is s3  # a pool process opens its client once
    local = open_blob_store(Settings(home=tmp_path))
    assert isinstance(local, LocalBlobStore) and local.root == (tmp_path / "blobs").resolve()


def test_simulate_uploads_to_s3_and_publishes_claim_checks(broker, s3_server: MotoS3, tmp_path: Path) -> None:
    """`drivecoach simulate --blob-url s3://... --bootstrap ...`: segments put into the bucket, their claim checks
    written to messages.jsonl and published to the camera topics, keyed by vehicle; no inline video."""
    from schemas.messages import SegmentMessage
    from streams.cli import app

    bucket, prefix = s3_server.bucket(), f"s{uuid.uuid4().hex[:6]}."
    settings = Settings(kafka_bootstrap=broker.bootstrap, topic_prefix=prefix, one_record_per_batch=True)
    ensure_topics(broker.bootstrap, settings)
    result = CliRunner().invoke(
        app,
        ["simulate", "--out", str(tmp_path), "--count", "1", "--vehicles", "1"]
        + ["--blob-url", f"s3://{bucket}/sim", "--bootstrap", broker.bootstrap],
        env={
            "DRIVECOACH_S3_ENDPOINT_URL": s3_server.endpoint,
            "DRIVECOACH_HOME": str(tmp_path / "home"),
            "DRIVECOACH_TOPIC_PREFIX": prefix,
            "DRIVECOACH_ONE_RECORD_PER_BATCH": "true",
        },
    )
    assert result.exit_code == 0, result.output
    lines = (tmp_path / "messages.jsonl").read_text().splitlines()
    messages = [SegmentMessage.model_validate_json(line) for line in lines]
    assert messages and all(m.video_b64 is None for m in messages)
    store = open_blob_store_at(f"s3://{bucket}/sim", s3_server.endpoint)
    for m in messages:
        assert m.video_uri and m.video_uri.startswith(f"s3://{bucket}/sim/uploads/{m.vehicle_id}/")
        store.check(m.video_uri)
    published = [
        SegmentMessage.model_validate(r)
        for name in ("telematics.road", "telematics.driver")
        for r in read_topic(broker.bootstrap, settings.topic(name), settings.partitions)
    ]
    assert sorted(published, key=lambda m: m.segment_id) == sorted(messages, key=lambda m: m.segment_id)
