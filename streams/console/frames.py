"""The clip page's frames: the stored stacked frames (road on top, driver below) as JPEG, one per request, with the
faces of the driver view blurred unless the viewer may see them (privacy.py)."""

from __future__ import annotations

import io
from functools import lru_cache

import cv2
import numpy as np

from schemas.frames import FramesFile, load_frames_file
from streams.console.privacy import blur_frames
from streams.errors import DrivecoachError
from streams.infra.blobs import BlobNotFound, BlobStore


class FramesUnreadable(DrivecoachError):
    """The clip's frames blob is there but is no frames file: damaged, cut short, or not (T, H, W, 3) uint8."""


@lru_cache(maxsize=8)
def _frames(blobs: BlobStore, frames_uri: str, version: str) -> FramesFile:
    """A page asks for every frame of one clip in a row: keep a few clips' frames decoded (the blob's version, its
    mtime or ETag, keys a rewrite)."""
    data = blobs.get_bytes(frames_uri)
    try:  # a damaged file fails wherever zipfile, zlib or numpy notice it, each with its own errors
        found = load_frames_file(io.BytesIO(data))  # type: ignore[arg-type]  # np.load takes a file
    except Exception as err:
        raise FramesUnreadable(f"{frames_uri} is not a frames file ({type(err).__name__}: {err})") from err
    frames = found.frames
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or 0 in frames.shape[1:3]:
        raise FramesUnreadable(
            f"{frames_uri} holds frames of shape {frames.shape} and type {frames.dtype}, not (T, H, W, 3) uint8"
        )
    if len(found.times) != len(frames):
        raise FramesUnreadable(f"{frames_uri} holds {len(frames)} frames but {len(found.times)} times")
    return found


@lru_cache(maxsize=8)
def _blurred(blobs: BlobStore, frames_uri: str, version: str) -> np.ndarray:
    """The clip's frames with the driver view's faces blurred, made once per clip (every frame of the clip is
    needed to know which faces the frames near each other found). A file without `driver_top` (written before it
    was recorded) is treated as all driver view."""
    found = _frames(blobs, frames_uri, version)
    top = found.driver_top if found.driver_top is not None else 0
    return blur_frames(
        found.frames, [float(t) for t in found.times], top=max(0, min(top, found.frames.shape[1]))
    )


def clip_frames_rgb(blobs: BlobStore, frames_uri: str, *, blurred: bool) -> np.ndarray:
    """All of a clip's frames (T, H, W, 3) RGB, as people may see them: blurred unless `blurred` is False."""
    version = blobs.version(frames_uri)
    return _blurred(blobs, frames_uri, version) if blurred else _frames(blobs, frames_uri, version).frames


def frame_jpeg(
    blobs: BlobStore, frames_uri: str, index: int, *, blurred: bool = True, quality: int = 85
) -> bytes | None:
    """Frame `index` as JPEG, faces blurred unless `blurred` is False, or None when the clip has no such frame;
    BlobNotFound when the blob is gone, FramesUnreadable when it is not a frames file."""
    version = blobs.version(frames_uri)
    if not 0 <= index < len(_frames(blobs, frames_uri, version).frames):
        return None
    frames = clip_frames_rgb(blobs, frames_uri, blurred=blurred)
    try:
        ok, data = cv2.imencode(
            ".jpg", cv2.cvtColor(frames[index], cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
        )
    except cv2.error as err:
        raise FramesUnreadable(f"frame {index} of {frames_uri} does not encode as JPEG: {err}") from err
    if not ok:
        raise FramesUnreadable(f"frame {index} of {frames_uri} does not encode as JPEG")
    return data.tobytes()


__all__ = ["BlobNotFound", "FramesUnreadable", "clip_frames_rgb", "frame_jpeg"]
