"""The claim-check store: uploads are immutable, re-uploads of the same bytes are harmless; the local directory's
side of the blob-store interface (the S3 side runs against a real S3 API in tests/integration/test_s3_blobs.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from streams.infra.blobs import (
    BlobConflict,
    BlobNotFound,
    LocalBlobStore,
    PresignedVideo,
    S3BlobStore,
    open_blob_store,
    open_blob_store_at,
)
from streams.settings import Settings


def test_uploads_are_immutable(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    a, b = tmp_path / "a.mp4", tmp_path / "b.mp4"
    a.write_bytes(b"trip one")
    b.write_bytes(b"trip two")
    uri = store.put_file("uploads/veh-1/seg-1.mp4", a)
    assert store.put_file("uploads/veh-1/seg-1.mp4", a) == uri
    with pytest.raises(BlobConflict):
        store.put_file("uploads/veh-1/seg-1.mp4", b)
    assert store.path(uri).read_bytes() == b"trip one"


def test_missing_blob_is_a_clear_error(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    with pytest.raises(BlobNotFound, match="does not exist"):
        store.path((tmp_path / "nope.mp4").as_uri())
    with pytest.raises(BlobNotFound, match="scheme"):
        store.path("s3://bucket/key")


def test_immutable_bytes_and_overwritable_bytes(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    uri = store.put_bytes("segments/v/a.mp4", b"inline", immutable=True)
    assert store.put_bytes("segments/v/a.mp4", b"inline", immutable=True) == uri
    with pytest.raises(BlobConflict):
        store.put_bytes("segments/v/a.mp4", b"other", immutable=True)
    frames = store.put_bytes("clips/v/c.r1.npz", b"one")
    before = store.version(frames)
    os.utime(store.path(frames), ns=(1, 1))  # a rewrite within the clock's resolution must still show
    store.put_bytes("clips/v/c.r1.npz", b"two!")
    assert store.get_bytes(frames) == b"two!" and store.version(frames) != before
    assert store.get_key("clips/v/c.r1.npz") == b"two!" and store.get_key("clips/v/none.npz") is None


def test_delete_prefix_takes_exactly_the_prefix(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    for key in (
        "windows/veh-1/0.json",
        "windows/veh-1/64.json",
        "windows/veh-10/0.json",
        "uploads/veh-1/a.mp4",
    ):
        store.put_bytes(key, b"{}")
    assert store.delete_prefix("windows/veh-1/") == 2
    assert store.get_key("windows/veh-10/0.json") == b"{}"
    assert store.delete_prefix("windows/") == 1 and not (store.root / "windows").exists()
    assert store.delete_prefix("windows/") == 0 and store.get_key("uploads/veh-1/a.mp4") == b"{}"
    assert store.delete_prefix("uploads/veh-") == 1 and store.root.is_dir()


def test_list_keys_takes_exactly_the_prefix(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    for key in (
        "footage/ab12.webm",
        "footage/ab12.faces-v1.webm",
        "footage/ab123.webm",
        "footage/ab1/x.webm",
    ):
        store.put_bytes(key, b"v")
    (store.root / "footage/.ab12.webm.7.tmp").write_bytes(b"half")  # a write under way
    assert store.list_keys("footage/ab12.") == ["footage/ab12.faces-v1.webm", "footage/ab12.webm"]
    assert store.list_keys("footage/ab1") == [
        "footage/ab1/x.webm",
        "footage/ab12.faces-v1.webm",
        "footage/ab12.webm",
        "footage/ab123.webm",
    ]
    assert store.list_keys("nothing/here") == []


def test_delete_says_whether_the_blob_was_there_and_stays_in_its_directory(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    uri = store.put_bytes("uploads/v/a.mp4", b"video")
    outside = tmp_path / "secret.txt"
    outside.write_bytes(b"keep")
    assert store.delete(uri) and not store.delete(uri)  # a re-run finds it gone
    for foreign in (outside.as_uri(), store.uri("../secret.txt"), "s3://bucket/uploads/v/a.mp4"):
        with pytest.raises(BlobNotFound, match="not in this store"):
            store.delete(foreign)
    assert outside.read_bytes() == b"keep"


def test_a_local_video_is_decoded_where_it_lies(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    uri = store.put_bytes("uploads/v/a.mp4", b"video")
    with store.video_source(uri) as video:
        assert video == store.path(uri)
    with pytest.raises(BlobNotFound, match="scheme"), store.video_source("s3://bucket/uploads/v/a.mp4"):
        pass


def test_stores_open_from_their_spec(tmp_path: Path) -> None:
    local = open_blob_store_at(str(tmp_path / "a"))
    assert isinstance(local, LocalBlobStore) and open_blob_store_at(local.spec) is local
    assert open_blob_store_at((tmp_path / "b").as_uri()).spec == str((tmp_path / "b").resolve())
    s3 = open_blob_store_at("s3://drivecoach-blobs/fleet/a/", "http://127.0.0.1:9")
    assert isinstance(s3, S3BlobStore)
    assert (s3.bucket, s3.prefix, s3.spec, s3.endpoint) == (
        "drivecoach-blobs",
        "fleet/a",
        "s3://drivecoach-blobs/fleet/a",
        "http://127.0.0.1:9",
    )
    assert s3.uri("clips/c.npz") == "s3://drivecoach-blobs/fleet/a/clips/c.npz"
    with pytest.raises(ValueError, match="directory, file:// or s3://"):
        open_blob_store_at("gs://bucket/x")
    assert isinstance(open_blob_store(Settings(home=tmp_path)), LocalBlobStore)


def test_the_blob_url_setting_is_checked() -> None:
    assert Settings(blob_url="s3://drivecoach-blobs/prod").blob_url == "s3://drivecoach-blobs/prod"
    for bad in ("s3://B", "https://drivecoach-blobs/x", "drivecoach-blobs"):
        with pytest.raises(ValidationError, match="neither s3://bucket/prefix"):
            Settings(blob_url=bad)


def test_a_presigned_video_opens_as_its_url_and_logs_as_its_key() -> None:
    video = PresignedVideo("fleet/uploads/veh-1/seg.mp4")
    video.url = "http://127.0.0.1:9/b/fleet/uploads/veh-1/seg.mp4?X-Amz-Signature=secret"
    assert str(video) == os.fspath(video) == video.url
    assert video.name == "seg.mp4" and "secret" not in repr(video)
