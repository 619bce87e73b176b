"""The clip frames file (`clips/<vehicle>/<clip>.r<revision>.npz`): written by the clip builder, read by the worker,
the console and the training export. A standard .npz that `np.load` reads: `frames` (T, H, W, 3) uint8 RGB,
`times` (T,) seconds from the clip start and, in files written since issue 18, `driver_top` (the first row of the
driver view, below the road view: where the console blurs faces). Files without it are read as before.

Since issue 19, a clip whose segments carried telemetry also has `telemetry` (T, 3) float32: the vehicle's
`schemas.telemetry.FRAME_COLUMNS` (speed km/h, longitudinal acceleration m/s^2, yaw rate deg/s) at each frame's
time, resampled from the clip's samples by `schemas.telemetry.per_frame` (NaN: no reading near that frame), so a
reader of the frames needs no second source to know what the vehicle did in each. Files without it load with
`telemetry` None."""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from schemas.telemetry import FRAME_COLUMNS


def encode_frames(
    frames: np.ndarray,
    times: np.ndarray,
    driver_top: int | None = None,
    telemetry: np.ndarray | None = None,
) -> bytes:
    """Deflated at level 1: np.savez_compressed's fixed level took a third of clip building for a few percent
    smaller files (measured with `drivecoach bench clip`). `telemetry`: (T, 3), one row per frame."""
    buf = io.BytesIO()
    arrays = [("frames", frames), ("times", times)]
    if driver_top is not None:
        arrays.append(("driver_top", np.asarray(driver_top, dtype=np.int32)))
    if telemetry is not None:
        rows = np.asarray(telemetry, dtype=np.float32)
        if rows.shape != (len(frames), len(FRAME_COLUMNS)):
            raise ValueError(f"telemetry of shape {rows.shape} for {len(frames)} frames")
        arrays.append(("telemetry", rows))
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for name, array in arrays:
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)
    return buf.getvalue()


def load_frames_bytes(data: bytes) -> np.ndarray:
    """The frames (T, H, W, 3) uint8 of a clip frames file's bytes (a blob read from any store)."""
    with np.load(io.BytesIO(data)) as loaded:
        return np.asarray(loaded["frames"])


def load_frames(path: Path) -> np.ndarray:
    """The frames (T, H, W, 3) uint8 of a clip frames file."""
    with np.load(path) as data:
        return np.asarray(data["frames"])


@dataclass(frozen=True)
class FramesFile:
    frames: np.ndarray  # (T, H, W, 3) uint8 RGB
    times: np.ndarray  # (T,) seconds from the clip start
    driver_top: int | None  # the driver view's first row; None: not recorded (files written before issue 18)
    telemetry: np.ndarray | None = None  # (T, 3) float32 FRAME_COLUMNS per frame; None: none recorded


def load_frames_file(path: Path) -> FramesFile:
    """Everything in a clip frames file: what the console needs to blur the driver view."""
    with np.load(path) as data:
        frames = np.asarray(data["frames"])
        times = np.asarray(data["times"]) if "times" in data else np.arange(len(frames), dtype=np.float32)
        top = int(data["driver_top"]) if "driver_top" in data else None
        telemetry = np.asarray(data["telemetry"]) if "telemetry" in data else None
    return FramesFile(frames, times, top, telemetry)
