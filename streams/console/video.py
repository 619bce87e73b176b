"""The cameras' own footage served to the clip page: each piece's bytes by HTTP range request from the blob store,
transcoded once to WebM (VP8, by OpenCV) where the browser cannot play the camera's codec. The plan of what plays
when is footage.py's."""

from __future__ import annotations

import hashlib
import tempfile
import threading
from pathlib import Path

import cv2

from streams.console.footage import TRANSCODED_TYPE, media_type
from streams.infra.blobs import BlobConflict, BlobNotFound, BlobStore

_transcoding: dict[str, threading.Lock] = {}
_guard = threading.Lock()


class FootageUnreadable(Exception):
    """The camera's video cannot be decoded (a broken upload the join let through without arrival probes)."""


def _fourcc(path: Path) -> str:
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise FootageUnreadable(f"{path.name}: no readable video")
        return int(cap.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode(errors="replace")
    finally:
        cap.release()


def playable(blobs: BlobStore, uri: str) -> tuple[str, str]:
    """The blob a browser can play for the video at `uri`, and its media type: the upload itself when its codec
    and container play in a <video>, else its WebM transcoding, made on first request and kept in the blob store
    (`footage/<digest>.webm`: a second request, or another console replica, finds it)."""
    with blobs.video_source(uri) as source:
        kind = media_type(_fourcc(source), blobs.read_range(uri, 0, 12))
    if kind is not None:
        return uri, kind
    key = f"footage/{hashlib.sha256(uri.encode()).hexdigest()[:40]}.webm"
    with _guard:
        lock = _transcoding.setdefault(key, threading.Lock())
    with (
        lock
    ):  # one transcoding per video in this process; a replica racing us writes the same key (see below)
        target = blobs.uri(key)
        try:
            blobs.check(target)
            return target, TRANSCODED_TYPE
        except BlobNotFound:
            pass
        with blobs.video_source(uri) as source, tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "footage.webm"
            _transcode(source, out)
            try:
                return blobs.put_file(key, out), TRANSCODED_TYPE
            except BlobConflict:  # another replica stored its own encoding first: the same video, use that
                return target, TRANSCODED_TYPE


def _transcode(source: Path, out: Path) -> None:
    cap = cv2.VideoCapture(str(source))
    writer = None
    try:
        fps = cap.get(cv2.CAP_PROP_FPS)
        fps = fps if 1 <= fps <= 120 else 25.0
        frames = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if writer is None:
                height, width = frame.shape[:2]
                writer = cv2.VideoWriter(str(out), cv2.VideoWriter.fourcc(*"VP80"), fps, (width, height))
                if not writer.isOpened():
                    raise FootageUnreadable("this OpenCV build cannot write VP8 WebM")
            writer.write(frame)
            frames += 1
        if frames == 0:
            raise FootageUnreadable(f"{source.name}: no frame decodes")
    finally:
        cap.release()
        if writer is not None:
            writer.release()
