"""A video that fails while its clip is built is dead-lettered with the arrival probe's reason (`corrupt_video`,
`undecodable_video`), so the reason does not depend on DRIVECOACH_PROBE_ON_ARRIVAL; a video that plays at first and
stops is `truncated_video`. Good videos are never probed again."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

import streams.builder.clip as clip_module
from schemas.messages import SegmentRef
from streams.builder.clip import build_clip_frames
from streams.errors import BadSegment
from streams.infra.video import probe_video
from tests.broken_video import corrupt_stream, garbage, truncated, write_mjpg


def _ref(name: str, camera: str, start: float, end: float) -> SegmentRef:
    return SegmentRef(segment_id=name, camera=camera, start_ts=start, end_ts=end, video_uri=f"file:///{name}")


def _still_image(tmp_path: Path) -> Path:
    image = tmp_path / "frame.png"
    assert cv2.imwrite(str(image), np.random.default_rng(1).integers(0, 255, (24, 32, 3), dtype=np.uint8))
    return image.rename(tmp_path / "still.mp4")


def _one_frame(tmp_path: Path) -> Path:
    path = tmp_path / "one.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (32, 24))
    writer.write(np.full((24, 32, 3), 90, np.uint8))
    writer.release()
    return path


def _cut_mp4(tmp_path: Path) -> Path:
    from streams.simulate import make_scenarios, write_segments

    mp4 = write_segments(make_scenarios(4, 1, duration=6.0)[0], tmp_path / "sim", segment_s=6.0)[0].path
    return truncated(mp4, tmp_path / "cut.mp4")  # the MP4 index is at the end: cut off


BROKEN = {  # file maker -> the reason on arrival and in the builder alike
    "garbage": (lambda tmp: garbage(tmp / "garbage.avi"), "corrupt_video"),
    "cut-mp4": (_cut_mp4, "corrupt_video"),
    "still-image": (_still_image, "corrupt_video"),
    "one-frame": (_one_frame, "corrupt_video"),
    "bad-stream": (
        lambda tmp: corrupt_stream(write_mjpg(tmp / "d.avi", seconds=5.0, size=(32, 24)), tmp / "stream.avi"),
        "undecodable_video",
    ),
}


@pytest.mark.parametrize("kind", list(BROKEN))
def test_the_builder_gives_a_broken_video_the_arrival_probes_reason(kind: str, tmp_path: Path) -> None:
    make, reason = BROKEN[kind]
    video = make(tmp_path)
    with pytest.raises(BadSegment) as refused:  # on arrival, with DRIVECOACH_PROBE_ON_ARRIVAL=true
        probe_video(video)
    assert refused.value.reason == reason

    road = write_mjpg(tmp_path / "road.avi", seconds=5.0)
    clip = build_clip_frames(
        0.0,
        5.0,
        [(_ref("r", "road", 0, 5), road), (_ref(kind, "driver", 0, 5), video)],
        fps=2.0,
        max_frames=128,
        max_pixels=16384,
    )
    assert [(f.segment.segment_id, f.reason, f.detail) for f in clip.faults] == [
        (kind, reason, refused.value.detail)
    ]
    # The clip is built without it, as if the joiner had refused it: a black driver panel, the road whole.
    assert [v.value for v in clip.views] == ["road"]
    assert not clip.frames[:, -1].any()
    assert clip.frames[:, 0].any(axis=(1, 2)).all()


def test_a_one_frame_file_whose_frame_decodes_is_still_left_out(tmp_path: Path) -> None:
    """Its one frame lands on a sampled time, so the builder sees a truncated video; the probe, asked then, says it
    is no video (`corrupt_video`), and its frame is left out, as when the joiner refuses it on arrival."""
    clip = build_clip_frames(
        0.0,
        1.0,
        [
            (_ref("r", "road", 0, 1), write_mjpg(tmp_path / "road.avi", seconds=1.0)),
            (_ref("one", "driver", 0.2, 1.0), _one_frame(tmp_path)),  # frame at 0.2 s, sampled at 0.25 s
        ],
        fps=2.0,
        max_frames=128,
        max_pixels=16384,
    )
    assert [(f.segment.segment_id, f.reason) for f in clip.faults] == [("one", "corrupt_video")]
    assert [v.value for v in clip.views] == ["road"] and not clip.frames[:, -1].any()


def test_a_video_that_plays_and_stops_is_truncated_and_keeps_its_frames(tmp_path: Path) -> None:
    cut = truncated(write_mjpg(tmp_path / "d.avi", seconds=10.0, size=(32, 24)), tmp_path / "cut.avi", 0.5)
    probe_video(cut)  # passes on arrival: its first frames play
    clip = build_clip_frames(
        0.0,
        10.0,
        [
            (_ref("r", "road", 0, 10), write_mjpg(tmp_path / "road.avi", seconds=10.0)),
            (_ref("d", "driver", 0, 10), cut),
        ],
        fps=2.0,
        max_frames=128,
        max_pixels=16384,
    )
    assert [(f.segment.segment_id, f.reason) for f in clip.faults] == [("d", "truncated_video")]
    driver_panel = clip.frames[:, -1]
    assert driver_panel[:6].any() and not driver_panel[-4:].any()  # its frames until it stops, black after
    assert [v.value for v in clip.views] == ["road", "driver"]


def test_good_videos_are_decoded_once_and_never_probed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    probed: list[Path] = []
    monkeypatch.setattr(clip_module, "probe_video", probed.append)
    clip = build_clip_frames(
        0.0,
        5.0,
        [
            (_ref("r", "road", 0, 5), write_mjpg(tmp_path / "road.avi", seconds=5.0)),
            (_ref("d", "driver", 0, 5), write_mjpg(tmp_path / "driver.avi", seconds=5.0, size=(32, 24))),
        ],
        fps=2.0,
        max_frames=128,
        max_pixels=16384,
    )
    assert clip.faults == () and probed == []
    bad = garbage(tmp_path / "garbage.avi")
    build_clip_frames(
        0.0,
        5.0,
        [(_ref("r", "road", 0, 5), tmp_path / "road.avi"), (_ref("g", "driver", 0, 5), bad)],
        fps=2.0,
        max_frames=128,
        max_pixels=16384,
    )
    assert probed == [bad]  # only the video that failed


def test_a_video_the_probe_passes_keeps_the_builders_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Frames that stop decoding past the probe's two: `undecodable_video`, the builder's own reason."""
    monkeypatch.setattr(clip_module, "probe_video", lambda _path: None)
    bad = garbage(tmp_path / "garbage.avi")
    clip = build_clip_frames(
        0.0,
        5.0,
        [
            (_ref("r", "road", 0, 5), write_mjpg(tmp_path / "road.avi", seconds=5.0)),
            (_ref("g", "driver", 0, 5), bad),
        ],
        fps=2.0,
        max_frames=128,
        max_pixels=16384,
    )
    assert [(f.reason, f.detail) for f in clip.faults] == [("undecodable_video", "cannot open garbage.avi")]
