"""Faces in the driver view, blurred in everything people see: the console's frames and footage, the driver's link,
exports (issue 18, item 3). The model still sees the frames unblurred: only what is shown is blurred.

The detector is dlib's HOG frontal-face detector, compiled into dlib itself (no model file to fetch). Picked on
measurements (docs/benchmarks.md, "Face detector"): on the in-cabin footage in ../shared/videos it found the face in
91-100 % of frames with no false detection, where OpenCV's Haar cascades found it in 57-70 %; OpenCV 5.0's wheel
ships no cascades at all and MediaPipe 1.2's no face model.

Fail closed: each detection covers the frames within `WINDOW_S` of it (a face missed in one frame, or turned away
for a moment, is still covered), and a frame with no detection that near has its whole driver view pixelated, since
a face the detector missed must not be shown. The simulator's cartoon drivers are never detected: their driver
views are always pixelated whole. Managers whose role carries `view_unblurred` may see the originals, each time
written to the audit log (pages.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

import cv2
import numpy as np

Box = tuple[int, int, int, int]  # x0, y0, x1, y1: pixels of the image (or view) it was found in

DETECT_WIDTH = 640  # a view is scaled to this width first: the smallest face found is then 80 px, 1/8 of it
MARGIN = 0.35  # each box grows by this share on every side: hair, ears, a chin the HOG box cuts off
WINDOW_S = 1.0  # a detection covers the frames this near it
BLOCKS_PER_FACE = 6  # a face is pixelated to about this many blocks across, then smoothed
BLOCKS_PER_VIEW = 12  # a whole view, when no face was found near the frame


@cache
def _detector() -> Any:
    import dlib

    return dlib.get_frontal_face_detector()


def detect_faces(image: np.ndarray) -> list[Box]:
    """The faces in one RGB image, grown by MARGIN and clipped to it."""
    height, width = image.shape[:2]
    if height < 8 or width < 8:
        return []
    scale = DETECT_WIDTH / width
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    if scale != 1.0:
        gray = cv2.resize(
            gray,
            (DETECT_WIDTH, max(8, round(height * scale))),
            interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
        )
    boxes = []
    for found in _detector()(gray, 0):  # no upsampling: at 640 px as many faces, at 2-3x the speed
        x0, y0, x1, y1 = (
            found.left() / scale,
            found.top() / scale,
            found.right() / scale,
            found.bottom() / scale,
        )
        grow_x, grow_y = (x1 - x0) * MARGIN, (y1 - y0) * MARGIN
        boxes.append(
            (
                max(0, int(x0 - grow_x)),
                max(0, int(y0 - grow_y)),
                min(width, int(np.ceil(x1 + grow_x))),
                min(height, int(np.ceil(y1 + grow_y))),
            )
        )
    return [b for b in boxes if b[2] > b[0] and b[3] > b[1]]


def cover(
    detected: Sequence[tuple[float, list[Box]]], times: Sequence[float], window_s: float = WINDOW_S
) -> list[list[Box] | None]:
    """For each frame time, the boxes to blur: every detection made within `window_s` of it, from the frames
    the detector ran on (`detected`: (time, boxes), any subset of the frames); None where no face was found that
    near, so the whole view is blurred."""
    found = [(t, boxes) for t, boxes in detected if boxes]
    covered: list[list[Box] | None] = []
    for t in times:
        near = [box for when, boxes in found if abs(when - t) <= window_s for box in boxes]
        covered.append(near or None)
    return covered


def pixelate(image: np.ndarray, box: Box | None = None, blocks: int = BLOCKS_PER_FACE) -> None:
    """Pixelate `box` of `image` in place (the whole image when None): a mosaic of `blocks` across, smoothed, so
    no feature survives that a sharpening filter could bring back."""
    x0, y0, x1, y1 = box if box is not None else (0, 0, image.shape[1], image.shape[0])
    region = image[y0:y1, x0:x1]
    height, width = region.shape[:2]
    if height == 0 or width == 0:
        return
    across = max(1, min(blocks, width))
    down = max(1, min(height, round(across * height / width)))
    small = cv2.resize(region, (across, down), interpolation=cv2.INTER_AREA)
    region[:] = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


def blur_view(view: np.ndarray, boxes: list[Box] | None) -> None:
    """Blur one frame's driver view in place: its boxes, or all of it (None)."""
    if boxes is None:
        pixelate(view, None, BLOCKS_PER_VIEW)
        return
    for box in boxes:
        pixelate(view, box)


def blur_frames(frames: np.ndarray, times: Sequence[float], *, top: int = 0) -> np.ndarray:
    """A copy of stacked frames (T, H, W, 3) RGB with the faces of their driver view (rows `top`: and below)
    blurred."""
    out = frames.copy()
    views = out[:, top:]
    detected = [(float(t), detect_faces(view)) for t, view in zip(times, views, strict=True)]
    for view, boxes in zip(views, cover(detected, [float(t) for t in times]), strict=True):
        blur_view(view, boxes)
    return out


__all__ = ["Box", "blur_frames", "blur_view", "cover", "detect_faces", "pixelate"]
