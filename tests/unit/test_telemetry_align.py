"""A clip's telemetry (schemas/telemetry.py, issue 19 item 1): its segments' samples placed on the clip's time base
as the builder places their frames (on the clock of the segment that carried them), one camera's only, each
reading once; and read at the frame times with dropouts left missing, never zero. Through the builder, the clip
frames file carries the per-frame readings, and files without them load as before."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.frames import encode_frames, load_frames_file
from schemas.messages import ClipMessage, SegmentRef, TelemetrySample
from schemas.taxonomy import View
from schemas.telemetry import FRAME_COLUMNS, MAX_GAP_S, clip_telemetry, per_frame
from streams.builder.clip import build_clip_frames, sample_times
from streams.simulate import make_scenarios, telemetry, write_segments

T0 = 1_760_000_000.0
SKEW = 0.25  # the driver camera's clock ahead of the road camera's, as streams.simulate writes it


def ref(
    sid: str, camera: View, start: float, end: float, samples: tuple[TelemetrySample, ...] = ()
) -> SegmentRef:
    return SegmentRef(
        segment_id=sid,
        camera=camera,
        start_ts=start,
        end_ts=end,
        video_uri=f"file:///{sid}",
        telemetry=samples,
    )


def ramp(a: float, b: float, *, clock: float = 0.0, speed0: float = 30.0, **fixed: float) -> tuple:
    """1-Hz samples over trip seconds [a, b] on a clock `clock` ahead of the road camera's; speed rises 1 km/h/s."""
    return tuple(
        TelemetrySample(t=T0 + clock + t, speed_kmh=speed0 + t, **fixed) for t in range(int(a), int(b) + 1)
    )


def trip(*, road: bool = True, driver: bool = True, camera_speed: dict[View, float] | None = None) -> list:
    """Two 5-s segments per camera over trip seconds [0, 10], the driver's on its skewed clock. Both cameras carry
    the vehicle's telemetry (`camera_speed` gives each camera's own first speed, to tell whose was taken)."""
    speeds = camera_speed or {View.ROAD: 30.0, View.DRIVER: 30.0}
    out = []
    for camera, clock, carries in ((View.ROAD, 0.0, road), (View.DRIVER, SKEW, driver)):
        for k in range(2):
            a, b = 5.0 * k, 5.0 * (k + 1)
            samples = ramp(a, b, clock=clock, speed0=speeds[camera]) if carries else ()
            out.append(ref(f"{camera.value}-{k}", camera, T0 + clock + a, T0 + clock + b, samples))
    return out


# --- clip_telemetry -------------------------------------------------------------------------------------------


def test_the_road_cameras_samples_on_the_clip_time_base_each_reading_once() -> None:
    segments = trip(camera_speed={View.ROAD: 30.0, View.DRIVER: 130.0})
    got = clip_telemetry(T0, T0 + 10.25, segments)
    # The boundary sample both road segments carry (t = 5) once; the driver's copy of the readings not at all.
    assert [s.t for s in got] == [float(k) for k in range(11)]
    assert [s.speed_kmh for s in got] == [30.0 + k for k in range(11)]


def test_without_road_telemetry_the_driver_cameras_samples_keep_its_clock_skew() -> None:
    """The driver view's frames are placed by the driver camera's clock (0.25 s ahead), and so is its telemetry:
    at clip time 0.25 + k the driver panel shows trip second k, and the sample says what the vehicle did then."""
    got = clip_telemetry(T0, T0 + 10.25, trip(road=False))
    assert [s.t for s in got] == [SKEW + k for k in range(11)]
    assert [s.speed_kmh for s in got] == [30.0 + k for k in range(11)]
    # A driver-only clip starts on the driver camera's clock: its samples fall on the clip's whole seconds.
    alone = [s for s in trip(road=False) if s.camera is View.DRIVER]
    assert [s.t for s in clip_telemetry(T0 + SKEW, T0 + SKEW + 10, alone)] == [float(k) for k in range(11)]


def test_a_camera_that_tells_the_whole_clip_wins_over_one_that_tells_part() -> None:
    road = [
        ref("r0", View.ROAD, T0, T0 + 5, ramp(0, 5, speed0=30)),
        ref("r1", View.ROAD, T0 + 5, T0 + 10),  # uploaded without telemetry
    ]
    driver = [
        ref("d0", View.DRIVER, T0 + SKEW, T0 + SKEW + 5, ramp(0, 5, clock=SKEW, speed0=130)),
        ref("d1", View.DRIVER, T0 + SKEW + 5, T0 + SKEW + 10, ramp(5, 10, clock=SKEW, speed0=130)),
    ]
    got = clip_telemetry(T0, T0 + 10.25, road + driver)
    assert [(s.t, s.speed_kmh) for s in got] == [(SKEW + k, 130.0 + k) for k in range(11)]
    # Neither whole: the road camera's part.
    partial_driver = [driver[0], driver[1].model_copy(update={"telemetry": ()})]
    got = clip_telemetry(T0, T0 + 10.25, road + partial_driver)
    assert [(s.t, s.speed_kmh) for s in got] == [(float(k), 30.0 + k) for k in range(6)]
    # Nobody's: none.
    bare = [s.model_copy(update={"telemetry": ()}) for s in road + driver]
    assert clip_telemetry(T0, T0 + 10.25, bare) == []


def test_only_samples_inside_the_clip_both_ends_included() -> None:
    """A segment reaching beyond the clip (into the next window's clip) gives this clip only its own seconds."""
    long = ref("r", View.ROAD, T0 - 3, T0 + 13, ramp(-3, 13))
    got = clip_telemetry(T0, T0 + 10, [long])
    assert [s.t for s in got] == [float(k) for k in range(11)]
    assert got[0].speed_kmh == 30.0 and got[-1].speed_kmh == 40.0
    assert clip_telemetry(T0 + 20, T0 + 30, [long]) == []


def test_duplicate_and_resent_segments_count_once_whatever_the_order() -> None:
    segments = trip()
    resent = segments[0].model_copy(update={"segment_id": "road-0-again"})  # a re-sent upload under a new id
    recut = segments[1].model_copy(update={"segment_id": "road-1-recut", "end_ts": T0 + 8})
    every = [*segments, resent, recut, segments[2]]
    want = clip_telemetry(T0, T0 + 10.25, segments)
    for order in (every, list(reversed(every)), sorted(every, key=lambda s: s.segment_id)):
        assert clip_telemetry(T0, T0 + 10.25, order) == want
    # Two readings for one time: the one of the segment that starts first (road-0, at 0 s), whichever arrived first.
    later = ref("road-x", View.ROAD, T0 + 2, T0 + 6, (TelemetrySample(t=T0 + 5, speed_kmh=99.0),))
    for order in ([*segments, later], [later, *segments]):
        assert [s.speed_kmh for s in clip_telemetry(T0, T0 + 10.25, order) if s.t == 5.0] == [35.0]


def test_unreadable_values_are_missing_and_survive_the_clip_message_unchanged() -> None:
    """NaN and infinity are spelled None: the clip's JSON (and Postgres's JSONB) has no NaN, so a clip read back
    from the topic equals the one built."""
    samples = (
        TelemetrySample(t=T0, speed_kmh=50.0, accel_ms2=float("nan"), yaw_rate_dps=float("inf")),
        TelemetrySample(t=T0 + 1, speed_kmh=51.0, lat=48.1, lon=11.5, speed_limit_kmh=50.0),
        TelemetrySample(t=float("nan"), speed_kmh=99.0),  # no time: nowhere on the clip
    )
    got = clip_telemetry(T0, T0 + 2, [ref("r", View.ROAD, T0, T0 + 2, samples)])
    assert got == [
        TelemetrySample(t=0.0, speed_kmh=50.0),
        TelemetrySample(t=1.0, speed_kmh=51.0, lat=48.1, lon=11.5, speed_limit_kmh=50.0),
    ]
    clip = ClipMessage(
        clip_id="c",
        fleet_id="f",
        vehicle_id="v",
        start_ts=T0,
        end_ts=T0 + 2,
        views=[View.ROAD],
        segments=[],
        frames_uri="file:///c.npz",
        num_frames=4,
        frame_width=28,
        frame_height=28,
        sample_fps=2.0,
        telemetry=got,
    )
    assert ClipMessage.model_validate_json(clip.model_dump_json()).telemetry == got


def test_simulated_trip_segments_give_the_trips_own_telemetry(tmp_path: Path) -> None:
    """The simulator's segments (both cameras, 5-s pieces, the driver's clock 0.25 s ahead) give the trip's 1-Hz
    readings once, on the road camera's clock: what one camera recorded over the whole trip."""
    s = make_scenarios(5, 1, duration=12.0)[0]
    # Telemetry only: the video is not read here.
    segments = [
        ref(
            f"{camera.value}-{k}",
            camera,
            s.start_ts + clock + t0,
            s.start_ts + clock + min(t0 + 5, 12),
            telemetry(s, t0, min(t0 + 5.0, 12.0), clock_offset=clock),
        )
        for camera, clock in ((View.ROAD, 0.0), (View.DRIVER, SKEW))
        for k, t0 in enumerate((0.0, 5.0, 10.0))
    ]
    got = clip_telemetry(s.start_ts, s.start_ts + 12 + SKEW, segments)
    whole = telemetry(s, 0.0, 12.0)
    assert [(x.t, x.speed_kmh, x.accel_ms2) for x in got] == [
        (pytest.approx(w.t - s.start_ts), w.speed_kmh, w.accel_ms2) for w in whole
    ]


# --- per_frame ------------------------------------------------------------------------------------------------


def test_interpolation_is_exact_on_a_linear_ramp() -> None:
    samples = [
        TelemetrySample(t=float(t), speed_kmh=10.0 + 3.0 * t, accel_ms2=-0.5 * t, yaw_rate_dps=2.0 - t)
        for t in range(11)
    ]
    times = [0.0, 0.25, 0.5, 3.75, 9.9, 10.0]
    got = per_frame(samples, times)
    want = np.array([[10.0 + 3.0 * t, -0.5 * t, 2.0 - t] for t in times], dtype=np.float32)
    assert got.dtype == np.float32 and got.shape == (len(times), len(FRAME_COLUMNS))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    assert FRAME_COLUMNS == ("speed_kmh", "accel_ms2", "yaw_rate_dps")


def test_a_dropped_sample_is_bridged_a_dropout_is_missing_never_zero() -> None:
    samples = [
        TelemetrySample(
            t=float(t),
            speed_kmh=50.0,
            # the IMU misses t = 3 (one sample: bridged) and t = 6..9 (a dropout: not)
            accel_ms2=None if t in (3, 6, 7, 8, 9) else 1.0,
            yaw_rate_dps=float("nan") if t >= 6 else 4.0,
        )
        for t in range(13)
    ]
    times = [3.0, 6.0, 6.5, 7.0, 7.5, 8.0, 9.0, 12.0]
    got = per_frame(samples, times)
    assert (got[:, 0] == 50.0).all()  # speed did not drop out
    accel = dict(zip(times, got[:, 1].tolist(), strict=True))
    assert accel[3.0] == 1.0  # between t = 2 and 4
    # t = 5 and 10 are the dropout's edges: a reading is held up to half MAX_GAP_S beyond them, no further.
    assert accel[6.0] == 1.0 and accel[9.0] == 1.0
    assert all(math.isnan(accel[t]) for t in (6.5, 7.0, 7.5, 8.0))
    assert got[0, 2] == 4.0 and got[1, 2] == 4.0 and np.isnan(got[2:, 2]).all()  # no yaw after t = 5
    assert (got[~np.isnan(got)] != 0).all()  # nothing missing was read as zero


def test_the_clips_edges_hold_the_nearest_reading_only_briefly() -> None:
    samples = [TelemetrySample(t=t, speed_kmh=v) for t, v in ((1.0, 20.0), (2.0, 30.0))]
    got = per_frame(samples, [-0.5, 0.0, 1.5, 3.0, 3.25, 3.5])[:, 0]
    assert math.isnan(got[0]) and got[1] == 20.0 and got[2] == 25.0 and got[3] == 30.0 and got[4] == 30.0
    assert math.isnan(got[5])
    assert np.isnan(per_frame([], [0.0, 0.5])).all() and per_frame(samples, []).shape == (0, 3)


@st.composite
def readings(draw: st.DrawFn) -> list[TelemetrySample]:
    """Irregular sample times (gaps from 0.1 to 6 s), each column present or missing on its own."""
    gaps = draw(st.lists(st.floats(0.1, 6.0), min_size=0, max_size=25))
    value = st.one_of(st.none(), st.just(float("nan")), st.floats(-100, 100))
    return [
        TelemetrySample(t=round(t, 3), speed_kmh=draw(value), accel_ms2=draw(value), yaw_rate_dps=draw(value))
        for t in itertools.accumulate(gaps, initial=0.0)
    ]


@given(readings(), st.lists(st.floats(-3.0, 160.0), max_size=30))
def test_each_frame_value_is_a_nearby_reading_or_the_line_between_two(samples, times) -> None:
    got = per_frame(samples, times)
    for c, name in enumerate(FRAME_COLUMNS):
        valid = sorted((s.t, v) for s in samples if (v := getattr(s, name)) is not None and math.isfinite(v))
        for i, x in enumerate(times):
            before = [p for p in valid if p[0] <= x]
            after = [p for p in valid if p[0] >= x]
            near = [v for t, v in valid if abs(t - x) <= MAX_GAP_S / 2]
            bridged = before and after and after[0][0] - before[-1][0] <= MAX_GAP_S
            if not near and not bridged:
                assert math.isnan(got[i, c])
                continue
            assert not math.isnan(got[i, c])
            lo, hi = (
                (min(before[-1][1], after[0][1]), max(before[-1][1], after[0][1]))
                if bridged
                else (min(near), max(near))
            )
            assert lo - 1e-3 <= got[i, c] <= hi + 1e-3
    for s in samples:  # at a reading's own time, the reading
        for c, name in enumerate(FRAME_COLUMNS):
            v = getattr(s, name)
            if v is not None and math.isfinite(v):
                assert per_frame(samples, [s.t])[0, c] == np.float32(v)


@given(st.permutations(trip()), st.floats(-2.0, 8.0), st.floats(1.0, 12.0))
def test_the_clips_telemetry_is_a_function_of_its_segments_set(segments, start, length) -> None:
    want = clip_telemetry(T0 + start, T0 + start + length, trip())
    got = clip_telemetry(T0 + start, T0 + start + length, [*segments, *segments[:2]])
    assert got == want
    assert all(0 <= s.t <= length + 1e-6 for s in got) and [s.t for s in got] == sorted({s.t for s in got})


# --- through the builder and the frames file ------------------------------------------------------------------


def test_built_clips_carry_their_telemetry_in_the_frames_file(tmp_path: Path) -> None:
    s = make_scenarios(7, 1, duration=10.0)[0]
    sims = write_segments(s, tmp_path, segment_s=5.0, road_size=(64, 36), driver_size=(32, 24))
    pairs = [
        (
            ref(g.segment_id, g.camera, g.start_ts, g.end_ts, g.telemetry),
            g.path,
        )
        for g in sims
    ]
    start, end = s.start_ts, s.start_ts + 10.0 + SKEW
    clip = build_clip_frames(start, end, pairs, fps=2.0, max_frames=128, max_pixels=16384)
    want = clip_telemetry(start, end, [r for r, _ in pairs])
    assert list(clip.telemetry) == want and len(want) == 11
    times = [t - start for t in sample_times(start, end, 2.0, 128)]
    assert clip.frame_telemetry is not None
    np.testing.assert_array_equal(clip.frame_telemetry, per_frame(want, times))
    assert not np.isnan(clip.frame_telemetry[:, 0]).any()  # speed is known at every frame

    path = tmp_path / "clip.npz"
    path.write_bytes(clip.to_npz())
    loaded = load_frames_file(path)
    assert loaded.telemetry is not None and loaded.telemetry.dtype == np.float32
    np.testing.assert_array_equal(loaded.telemetry, clip.frame_telemetry)
    assert loaded.driver_top == clip.driver_top and len(loaded.frames) == len(loaded.telemetry)

    # Segments without telemetry: the clip has none, and its file is written as before.
    bare = [(r.model_copy(update={"telemetry": ()}), p) for r, p in pairs]
    plain = build_clip_frames(start, end, bare, fps=2.0, max_frames=128, max_pixels=16384)
    assert plain.telemetry == () and plain.frame_telemetry is None
    path.write_bytes(plain.to_npz())
    assert load_frames_file(path).telemetry is None
    with np.load(path) as data:
        assert sorted(data.files) == ["driver_top", "frames", "times"]


def test_frames_files_without_telemetry_load_as_before(tmp_path: Path) -> None:
    frames = np.zeros((4, 28, 28, 3), dtype=np.uint8)
    times = np.arange(4, dtype=np.float32) / 2
    old = tmp_path / "old.npz"
    np.savez(old, frames=frames, times=times)  # written before issue 18: neither driver_top nor telemetry
    got = load_frames_file(old)
    assert got.telemetry is None and got.driver_top is None and (got.times == times).all()
    with pytest.raises(ValueError, match="telemetry"):
        encode_frames(frames, times, 14, np.zeros((3, 3)))  # one row per frame, or the file is not written
    rows = np.full((4, 3), np.nan, dtype=np.float32)
    rows[1] = (50.0, -1.0, 2.5)
    old.write_bytes(encode_frames(frames, times, 14, rows))
    np.testing.assert_array_equal(load_frames_file(old).telemetry, rows)
