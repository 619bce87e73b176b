"""The clip page's frames: the stored stacked frames (road on top, driver below) as JPEG, one per request."""

from __future__ import annotations

import io
from functools import lru_cache

import cv2
import numpy as np

from schemas.frames import load_frames
from streams.errors import DrivecoachError
from streams.infra.blobs import BlobNotFound, BlobStore


class FramesUnreadable(DrivecoachError):
    """The clip's frames blob is there but is no frames file: damaged, cut short, or not (T, H, W, 3) uint8."""


@lru_cache(maxsize=8)
def _frames(blobs: BlobStore, frames_uri: str, version: str) -> np.ndarray:
    """A page asks for every frame of one clip in a row: keep a few clips' frames decoded (the blob's version, its
    mtime or ETag, keys a rewrite)."""
    data = blobs.get_bytes(frames_uri)
    try:  # a damaged file fails wherever zipfile, zlib or numpy notice it, each with its own errors
        frames = load_frames(io.BytesIO(data))  # type: ignore[arg-type]  # np.load takes a file
    except Exception as err:
        raise FramesUnreadable(f"{frames_uri} is not a frames file ({type(err).__name__}: {err})") from err
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or 0 in frames.shape[1:3]:
        raise FramesUnreadable(
            f"{frames_uri} holds frames of shape {frames.shape} and type {frames.dtype}, not (T, H, W, 3) uint8"
        )
    return frames


def frame_jpeg(blobs: BlobStore, frames_uri: str, index: int, *, quality: int = 85) -> bytes | None:
    """Frame `index` as JPEG, or None when the clip has no such frame; BlobNotFound when the blob is gone,
    FramesUnreadable when it is not a frames file."""
    frames = _frames(blobs, frames_uri, blobs.version(frames_uri))
    if not 0 <= index < len(frames):
        return None
    try:
        ok, data = cv2.imencode(
            ".jpg", cv2.cvtColor(frames[index], cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
        )
    except cv2.error as err:
        raise FramesUnreadable(f"frame {index} of {frames_uri} does not encode as JPEG: {err}") from err
    if not ok:
        raise FramesUnreadable(f"frame {index} of {frames_uri} does not encode as JPEG")
    return data.tobytes()


__all__ = ["BlobNotFound", "FramesUnreadable", "frame_jpeg"]
