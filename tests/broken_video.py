"""Broken video files made on the spot, as cameras and networks break them (no encoder beyond OpenCV here)."""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np


def write_mjpg(
    path: Path, *, seconds: float = 5.0, fps: float = 10.0, size: tuple[int, int] = (64, 48)
) -> Path:
    """A good MJPEG AVI whose frames brighten over time (so a frozen frame is visible)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    for k in range(round(seconds * fps)):
        writer.write(np.full((size[1], size[0], 3), 40 + k * 3 % 200, np.uint8))
    writer.release()
    return path


def truncated(source: Path, out: Path, fraction: float = 0.5) -> Path:
    """An upload cut short: the first `fraction` of the bytes."""
    data = source.read_bytes()
    out.write_bytes(data[: int(len(data) * fraction)])
    return out


def corrupt_stream(avi: Path, out: Path) -> Path:
    """An AVI whose container is intact but whose every compressed frame ('00dc' chunk) is overwritten: it opens,
    and nothing decodes, as with a codec the decoder cannot read."""
    data = bytearray(avi.read_bytes())
    at = data.find(b"00dc")
    while at >= 0:
        size = struct.unpack("<I", data[at + 4 : at + 8])[0]
        if 0 < size <= len(data) - at - 8:
            data[at + 8 : at + 8 + size] = b"Z" * size
        at = data.find(b"00dc", at + 8)
    out.write_bytes(bytes(data))
    return out


def garbage(out: Path) -> Path:
    out.write_bytes(bytes(range(256)) * 64)
    return out
