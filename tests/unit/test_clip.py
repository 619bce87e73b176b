"""Frame sampling and stacking: 2 FPS, even counts, the frame cap, the 28-px grid within the pixel budget."""

import numpy as np
import pytest

from streams.builder.clip import GRID, StackGeometry, sample_times, stack, stack_geometry


def test_two_fps_sampling_centres_frames_in_their_slots():
    times = sample_times(10.0, 20.0, 2.0, 128)
    assert len(times) == 20
    assert times[0] == pytest.approx(10.25) and times[-1] == pytest.approx(19.75)


@pytest.mark.parametrize(("duration", "expected"), [(64, 128), (100, 128), (3.4, 6), (1.0, 2), (7.0, 14)])
def test_frame_counts_are_even_and_capped(duration, expected):
    times = sample_times(0, duration, 2.0, 128)
    assert len(times) == expected and len(times) % 2 == 0
    assert all(0 <= t < duration for t in times)
    assert times == sorted(times)


@pytest.mark.parametrize(
    ("road", "driver", "budget"),
    [
        ((320, 180), (160, 120), 16384),
        ((1280, 720), (176, 144), 16384),
        ((960, 540), (480, 270), 16384),
        ((1280, 720), (1280, 720), 50176),
        ((640, 480), (640, 480), 3136),
    ],
)
def test_stack_geometry_is_on_the_grid_within_budget(road, driver, budget):
    g = stack_geometry(road, driver, budget)
    assert g.width % GRID == 0 and g.height % GRID == 0
    assert g.width * g.height <= budget
    road_share = g.road_height / g.height
    ideal = (road[1] / road[0]) / (road[1] / road[0] + driver[1] / driver[0])
    assert abs(road_share - ideal) < 0.05


def test_paper_budget_gives_112_by_140_for_16_9_over_4_3():
    assert stack_geometry((320, 180), (160, 120), 16384) == StackGeometry(112, 60, 80, 320 / 180, 160 / 120)


def test_stack_puts_road_on_top_and_blacks_out_a_missing_view():
    g = StackGeometry(56, 28, 28, road_aspect=160 / 90, driver_aspect=160 / 120)  # shaped for these frames
    red = np.zeros((90, 160, 3), np.uint8)
    red[..., 0] = 255
    blue = np.zeros((120, 160, 3), np.uint8)
    blue[..., 2] = 255
    out = stack(red, blue, g)
    assert out.shape == (56, 56, 3)
    assert (out[:28, :, 0] == 255).all() and (out[28:, :, 2] == 255).all()
    assert (stack(red, None, g)[28:] == 0).all()


def test_broken_video_is_a_clear_decode_error_not_a_crash(tmp_path) -> None:
    from streams.builder.clip import decode_at
    from streams.errors import VideoDecodeError
    from streams.simulate import make_scenarios, write_segments

    s = make_scenarios(4, 1, duration=6.0)[0]
    good = write_segments(s, tmp_path, segment_s=6.0)[0]
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(good.path.read_bytes()[: good.path.stat().st_size // 2])
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(bytes(range(256)) * 64)
    for path in (truncated, garbage, tmp_path / "missing.mp4"):
        with pytest.raises(VideoDecodeError):
            decode_at(path, 0.0, [0.5, 1.5])
    assert len(decode_at(good.path, 0.0, [0.5, 1.5])) == 2


def test_a_truncated_or_undecodable_segment_is_reported_and_the_rest_of_the_clip_is_built(tmp_path) -> None:
    from schemas.messages import SegmentRef
    from streams.builder.clip import build_clip_frames
    from streams.errors import VideoDecodeError
    from tests.broken_video import corrupt_stream, truncated, write_mjpg

    def ref(name: str, camera: str, start: float, end: float) -> SegmentRef:
        return SegmentRef(
            segment_id=name, camera=camera, start_ts=start, end_ts=end, video_uri=f"file:///{name}"
        )

    road = write_mjpg(tmp_path / "road.avi", seconds=10.0)
    driver = write_mjpg(tmp_path / "driver.avi", seconds=5.0, size=(32, 24))
    cut = truncated(driver, tmp_path / "cut.avi", 0.5)
    clip = build_clip_frames(
        0.0,
        10.0,
        [
            (ref("r", "road", 0, 10), road),
            (ref("d1", "driver", 0, 5), driver),
            (ref("d2", "driver", 5, 10), cut),
        ],
        fps=2.0,
        max_frames=128,
        max_pixels=16384,
    )
    assert [(f.segment.segment_id, f.reason) for f in clip.faults] == [("d2", "truncated_video")]
    road_h = clip.frames.shape[1] - 1
    driver_panel = clip.frames[:, -1]  # the bottom row belongs to the driver view
    assert driver_panel[:12].any() and not driver_panel[-4:].any()  # frames stop partway into d2: black after
    assert clip.frames[:, :road_h].any(axis=(1, 2, 3)).all()  # the road is whole

    broken = corrupt_stream(driver, tmp_path / "stream.avi")
    clip = build_clip_frames(
        0.0,
        5.0,
        [(ref("r", "road", 0, 10), road), (ref("d", "driver", 0, 5), broken)],
        fps=2.0,
        max_frames=128,
        max_pixels=16384,
    )
    assert [(f.segment.segment_id, f.reason) for f in clip.faults] == [("d", "undecodable_video")]
    with pytest.raises(VideoDecodeError):
        build_clip_frames(
            0.0, 5.0, [(ref("d", "driver", 0, 5), broken)], fps=2.0, max_frames=128, max_pixels=16384
        )
