"""The server engine ships clips as video that decodes back to the very same frames."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from streams.openai_engine import encode_lossless


def test_clips_travel_losslessly_at_two_fps(tmp_path: Path) -> None:
    frames = np.random.default_rng(3).integers(0, 256, (6, 112, 140, 3), dtype=np.uint8)
    path = tmp_path / "clip.mkv"
    path.write_bytes(encode_lossless(frames))
    cap = cv2.VideoCapture(str(path))
    decoded = []
    while (got := cap.read())[0]:
        decoded.append(cv2.cvtColor(got[1], cv2.COLOR_BGR2RGB))
    assert cap.get(cv2.CAP_PROP_FPS) == 2.0
    assert np.array_equal(np.stack(decoded), frames)
