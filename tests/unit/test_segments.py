"""Every kind of bad upload is refused with its own dead-letter reason; a good one becomes a claim-checked ref."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from streams.errors import BadSegment
from streams.infra.blobs import LocalBlobStore
from streams.joiner.segments import TimeLimits, claim_check, parse_segment

NOW = 1_760_000_000.0


def message(**changes: object) -> bytes:
    base = {
        "schema_version": 1,
        "fleet_id": "f",
        "vehicle_id": "v",
        "camera": "road",
        "segment_id": "s1",
        "start_ts": NOW - 10,
        "end_ts": NOW,
        "fps": 10,
        "width": 320,
        "height": 180,
        "codec": "mp4v",
        "video_uri": "file:///nowhere.mp4",
    }
    return json.dumps({k: v for k, v in {**base, **changes}.items() if v is not None}).encode()


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "malformed_json"),
        (b"\xff\xfe", "malformed_json"),
        (b"[1, 2]", "malformed_json"),
        (message(schema_version=7), "unknown_schema_version"),
        (message(schema_version=None), "unknown_schema_version"),
        (message(end_ts=NOW - 20), "invalid_segment"),
        (message(camera="cabin"), "invalid_segment"),
        (message(video_b64="AAAA"), "invalid_segment"),
        (message(video_uri=None), "invalid_segment"),
        (message(start_ts=NOW + 3600, end_ts=NOW + 3610), "future_timestamp"),
        (b"x" * 2000, "oversized"),
        (message(start_ts=float("nan")), "invalid_timestamp"),
        (message(end_ts=float("inf")), "invalid_timestamp"),
        (message(start_ts=float("-inf")), "invalid_timestamp"),
        (message(start_ts=0.0), "segment_too_long"),  # epoch 0 to now: the join's work must not follow it
        (message(start_ts=NOW - 301), "segment_too_long"),
        (message(start_ts=NOW - 15 * 86400, end_ts=NOW - 15 * 86400 + 10), "too_old"),
        (message(fps=float("nan")), "invalid_segment"),
    ],
)
def test_each_bad_upload_has_its_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(BadSegment) as err:
        parse_segment(raw, max_bytes=1000, now=NOW, arrived=NOW + 5, limits=TimeLimits())
    assert err.value.reason == reason


def test_a_small_clock_lead_is_tolerated() -> None:
    assert parse_segment(message(end_ts=NOW + 200), max_bytes=10_000, now=NOW).end_ts == NOW + 200
    # Hours or days late is not wrong: only older than the horizon is (the arrival time decides, not the wall clock).
    week_old = message(start_ts=NOW - 7 * 86400, end_ts=NOW - 7 * 86400 + 300)
    assert parse_segment(week_old, max_bytes=10_000, now=NOW, arrived=NOW).duration == 300
    assert (
        parse_segment(
            message(start_ts=NOW - 10, end_ts=NOW - 9),
            max_bytes=10_000,
            now=NOW,
            arrived=NOW + 30 * 86400,
            limits=TimeLimits(max_segment_age_s=31 * 86400),
        ).duration
        == 1
    )


def test_a_five_minute_segment_a_little_over_five_minutes_is_joined() -> None:
    """Encoder timing makes a 5-min segment 300.2 s (hypothesis found it): imprecise is not wrong."""
    over = message(start_ts=NOW - 300.2, end_ts=NOW)
    assert parse_segment(over, max_bytes=10_000, now=NOW, arrived=NOW).duration == pytest.approx(300.2)


def test_claim_checks_are_verified_and_inline_video_is_spilled(tmp_path: Path) -> None:
    blobs = LocalBlobStore(tmp_path)
    with pytest.raises(BadSegment) as err:
        claim_check(parse_segment(message(), max_bytes=10_000), blobs)
    assert err.value.reason == "missing_blob"
    video = base64.b64encode(b"tiny video").decode()
    inline = parse_segment(message(video_uri=None, video_b64=video), max_bytes=10_000)
    kept = claim_check(inline, blobs)
    assert kept.video_b64 is None and kept.video_uri is not None
    assert blobs.path(kept.video_uri).read_bytes() == b"tiny video"
    with pytest.raises(BadSegment) as err:
        claim_check(parse_segment(message(video_uri=None, video_b64="not base64!"), max_bytes=10_000), blobs)
    assert err.value.reason == "invalid_segment"


def test_the_video_probe_refuses_what_cannot_be_opened_or_decoded(tmp_path: Path) -> None:
    from streams.infra.video import probe_video
    from streams.simulate import make_scenarios, write_segments
    from tests.broken_video import corrupt_stream, garbage, truncated, write_mjpg

    good = write_mjpg(tmp_path / "good.avi")
    mp4 = write_segments(make_scenarios(4, 1, duration=6.0)[0], tmp_path / "sim", segment_s=6.0)[0].path
    probe_video(good)
    probe_video(
        truncated(good, tmp_path / "cut.avi")
    )  # the first frames are fine: found while building the clip
    for path, reason in (
        (garbage(tmp_path / "garbage.mp4"), "corrupt_video"),
        (truncated(mp4, tmp_path / "cut.mp4"), "corrupt_video"),  # index at the end, cut off
        (corrupt_stream(good, tmp_path / "stream.avi"), "undecodable_video"),
    ):
        with pytest.raises(BadSegment) as err:
            probe_video(path)
        assert err.value.reason == reason, path.name


def test_bad_segment_survives_the_trip_through_a_process_pool() -> None:
    import pickle

    err = pickle.loads(pickle.dumps(BadSegment("corrupt_video", "x.mp4: no container")))
    assert (err.reason, err.detail) == ("corrupt_video", "x.mp4: no container")
