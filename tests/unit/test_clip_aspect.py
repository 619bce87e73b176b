"""Each file keeps its own aspect inside its view's panel: a later file of another shape is fitted, not stretched."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from schemas.messages import SegmentRef
from schemas.taxonomy import View
from streams.builder.clip import GRID, StackGeometry, build_clip_frames, stack, stack_geometry


def bright(width: int, height: int) -> np.ndarray:
    return np.full((height, width, 3), 200, np.uint8)


def lit_box(panel: np.ndarray) -> tuple[int, int, int, int]:
    """(left, top, width, height) of the panel's non-black region."""
    rows, cols = np.flatnonzero(panel.max(axis=(1, 2)) > 10), np.flatnonzero(panel.max(axis=(0, 2)) > 10)
    return int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)


@pytest.mark.parametrize(("width", "height"), [(426, 240), (240, 426), (176, 144), (1000, 100)])
def test_a_frame_keeps_its_aspect_in_a_panel_of_another_shape(width: int, height: int) -> None:
    g = StackGeometry(112, 56, 140)  # the driver panel is portrait 112x140; None: it stands for its own shape
    out = stack(None, bright(width, height), g)
    left, top, w, h = lit_box(out[g.road_height :])
    assert w / h == pytest.approx(width / height, rel=0.03, abs=1 / min(w, h))
    assert w == g.width or h == g.driver_height  # as large as fits
    assert abs(left - (g.width - w - left)) <= 1 and abs(top - (g.driver_height - h - top)) <= 1  # centred
    assert not out[: g.road_height].any()


def test_the_426x240_driver_file_after_a_portrait_one_is_letterboxed_not_squeezed() -> None:
    """The issue's case: the driver panel is portrait (a rotated first file); a 426x240 file was squeezed 3.4x."""
    g = stack_geometry((960, 540), (270, 480), 16384)
    panel = stack(bright(960, 540), bright(426, 240), g)[g.road_height :]
    _, _, w, h = lit_box(panel)
    shown, stretch = w / h, (g.width / g.driver_height) / (270 / 480)  # the grid's own rounding of the panel
    assert shown == pytest.approx(426 / 240 * stretch, rel=0.05)
    assert w == g.width and h < g.driver_height / 2  # full width, black above and below


@pytest.mark.parametrize(
    ("road", "driver", "budget"), [((320, 180), (160, 120), 16384), ((320, 180), (160, 120), 4704)]
)
def test_frames_of_the_shape_the_panels_were_made_for_fill_them_as_before(
    road: tuple[int, int], driver: tuple[int, int], budget: int
) -> None:
    """The grid rounds a panel off its view's aspect (56x36 for 16:9 at the demo's budget): no black bars for it."""
    g = stack_geometry(road, driver, budget)
    out = stack(bright(*road), bright(*driver), g)
    assert out.shape == (g.height, g.width, 3) and g.width % GRID == 0 and g.height % GRID == 0
    assert (out > 10).all()


def test_a_clip_across_two_driver_files_of_different_shape_keeps_each_aspect(tmp_path: Path) -> None:
    def write(path: Path, size: tuple[int, int]) -> Path:
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, size)
        for _ in range(40):
            writer.write(np.full((size[1], size[0], 3), 180, np.uint8))
        writer.release()
        return path

    def ref(name: str, camera: View, start: float) -> SegmentRef:
        return SegmentRef(
            segment_id=name, camera=camera, start_ts=start, end_ts=start + 4.0, video_uri=f"file:///{name}"
        )

    road = write(tmp_path / "road.avi", (128, 72))
    portrait = write(tmp_path / "portrait.avi", (48, 96))
    wide = write(tmp_path / "wide.avi", (128, 72))
    clip = build_clip_frames(
        0.0,
        8.0,
        [
            (ref("r1", View.ROAD, 0.0), road),
            (ref("r2", View.ROAD, 4.0), road),
            (ref("d1", View.DRIVER, 0.0), portrait),
            (ref("d2", View.DRIVER, 4.0), wide),
        ],
        fps=2.0,
        max_frames=128,
        max_pixels=16384,
    )
    g = stack_geometry((128, 72), (48, 96), 16384)
    assert clip.frames.shape[1:] == (g.height, g.width, 3)
    first, last = clip.frames[0, g.road_height :], clip.frames[-1, g.road_height :]
    assert (first > 10).all()  # the panel was shaped for the first driver file
    _, _, w, h = lit_box(last)
    stretch = (g.width / g.driver_height) / (48 / 96)
    assert w / h == pytest.approx(128 / 72 * stretch, rel=0.05)  # not 48/96 * stretch, as the stretch gave
    assert w == g.width and h < g.driver_height / 2
