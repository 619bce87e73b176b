"""The cameras' own footage served to the clip page: each piece's bytes by HTTP range request from the blob store,
transcoded once to WebM (VP8, by OpenCV) where the browser cannot play the camera's codec, and for the driver camera
always, with its faces blurred (privacy.py), unless the viewer may see them. The plan of what plays when is
footage.py's."""

from __future__ import annotations

import hashlib
import tempfile
import threading
from pathlib import Path

import cv2

from streams.console.footage import TRANSCODED_TYPE, media_type
from streams.console.privacy import Box, blur_view, cover, detect_faces
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


DETECT_HZ = (
    4.0  # faces are looked for this often in a video; each detection covers privacy.WINDOW_S around it
)
BLUR_VERSION = "faces-v1"  # part of a blurred transcoding's key: a new detector or margin makes new ones


def playable(blobs: BlobStore, uri: str, *, blurred: bool = False) -> tuple[str, str]:
    """The blob a browser can play for the video at `uri`, and its media type: the upload itself when its codec
    and container play in a <video>, else its WebM transcoding, made on first request and kept in the blob store
    (`footage/<digest>.webm`: a second request, or another console replica, finds it). `blurred`: always a
    transcoding, with the faces blurred (`footage/<digest>.<BLUR_VERSION>.webm`)."""
    if not blurred:
        with blobs.video_source(uri) as source:
            kind = media_type(_fourcc(source), blobs.read_range(uri, 0, 12))
        if kind is not None:
            return uri, kind
    digest = hashlib.sha256(uri.encode()).hexdigest()[:40]
    key = f"footage/{digest}.{BLUR_VERSION}.webm" if blurred else f"footage/{digest}.webm"
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
            _transcode(source, out, blurred=blurred)
            try:
                return blobs.put_file(key, out), TRANSCODED_TYPE
            except BlobConflict:  # another replica stored its own encoding first: the same video, use that
                return target, TRANSCODED_TYPE


def _frame_rate(source: Path) -> float:
    cap = cv2.VideoCapture(str(source))
    try:
        fps = cap.get(cv2.CAP_PROP_FPS)
    finally:
        cap.release()
    return fps if 1 <= fps <= 120 else 25.0


def _face_cover(source: Path, fps: float) -> list[list[Box] | None]:
    """Pass one of a blurred transcoding: the faces to blur in each frame (None: the whole frame), found
    DETECT_HZ times a second; a face covers the frames near it (privacy.cover), so pass two needs them all first."""
    every = max(1, round(fps / DETECT_HZ))
    cap = cv2.VideoCapture(str(source))
    detected: list[tuple[float, list[Box]]] = []
    count = 0
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if count % every == 0:
                detected.append((count / fps, detect_faces(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))))
            count += 1
    finally:
        cap.release()
    return cover(detected, [k / fps for k in range(count)])


def _transcode(source: Path, out: Path, *, blurred: bool = False) -> None:
    fps = _frame_rate(source)
    covers = _face_cover(source, fps) if blurred else []
    cap = cv2.VideoCapture(str(source))
    writer = None
    try:
        frames = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if (
                blurred
            ):  # a frame pass one did not see (a file that decodes differently twice) is blurred whole
                blur_view(frame, covers[frames] if frames < len(covers) else None)
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
