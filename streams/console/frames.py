"""The clip page's frames: the stored stacked frames (road on top, driver below) as JPEG, one per request."""

from __future__ import annotations

import io
from functools import lru_cache

import cv2
import numpy as np

from schemas.frames import load_frames
from streams.infra.blobs import BlobNotFound, BlobStore


@lru_cache(maxsize=8)
def _frames(blobs: BlobStore, frames_uri: str, version: str) -> np.ndarray:
    """A page asks for every frame of one clip in a row: keep a few clips' frames decoded (the blob's version, its
    mtime or ETag, keys a rewrite)."""
    return load_frames(io.BytesIO(blobs.get_bytes(frames_uri)))  # type: ignore[arg-type]  # np.load takes a file


def frame_jpeg(blobs: BlobStore, frames_uri: str, index: int, *, quality: int = 85) -> bytes | None:
    """Frame `index` as JPEG, or None when the clip has no such frame; BlobNotFound when the blob is gone."""
    frames = _frames(blobs, frames_uri, blobs.version(frames_uri))
    if not 0 <= index < len(frames):
        return None
    ok, data = cv2.imencode(
        ".jpg", cv2.cvtColor(frames[index], cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:
        raise ValueError(f"frame {index} of {frames_uri} does not encode as JPEG")
    return data.tobytes()


__all__ = ["BlobNotFound", "frame_jpeg"]
