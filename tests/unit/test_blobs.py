"""The claim-check store: uploads are immutable, re-uploads of the same bytes are harmless."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.infra.blobs import BlobConflict, BlobNotFound, LocalBlobStore


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
