"""Retention's decisions (streams/retention/policy.py) from plain values: what expires when, what protection keeps,
which uploads no clip needs, which frames blobs a clip left."""

from __future__ import annotations

import pytest

from streams.retention.policy import (
    DAY_S,
    ClipDecision,
    ClipState,
    Periods,
    decide,
    footage_prefix,
    frames_uris,
    segment_video_due,
)

NOW = 1_800_000_000.0


def _clip(
    age_days: float, *, protected: bool = False, video_gone: bool = False, has_results: bool = True
) -> ClipState:
    return ClipState("c", NOW - age_days * DAY_S, protected, video_gone, has_results)


@pytest.mark.parametrize(
    ("periods", "clip", "expected"),
    [
        (Periods(), _clip(10_000), ClipDecision(False, False, False)),  # no period: kept forever
        (Periods(30, 60), _clip(29.9), ClipDecision(False, False, False)),
        (Periods(30, 60), _clip(30), ClipDecision(True, False, False)),  # on the day: gone
        (Periods(30, 60), _clip(45), ClipDecision(True, False, False)),
        (Periods(30, 60), _clip(61), ClipDecision(True, True, True)),
        (Periods(30, 60), _clip(61, video_gone=True), ClipDecision(False, True, True)),
        (Periods(30, 60), _clip(61, video_gone=True, has_results=False), ClipDecision(False, False, True)),
        (
            Periods(30, 60),
            _clip(61, protected=True),
            ClipDecision(False, False, False),
        ),  # hold or open coaching
        (Periods(None, 7), _clip(10), ClipDecision(False, True, False)),  # results go, video (and row) stay
        (Periods(90, 7), _clip(10), ClipDecision(False, True, False)),  # results before video
        (Periods(0, None), _clip(0.001), ClipDecision(True, False, False)),
    ],
)
def test_each_part_goes_on_its_own_period_and_the_row_after_both(
    periods: Periods, clip: ClipState, expected: ClipDecision
) -> None:
    assert decide(periods, clip, NOW) == expected


def test_a_negative_period_is_refused_when_made() -> None:
    with pytest.raises(ValueError, match="video_days must be 0 or more"):
        Periods(video_days=-1)


@pytest.mark.parametrize(
    ("clips", "segment_age", "due"),
    [
        ([_clip(40), _clip(35)], 40, True),
        ([_clip(40), _clip(5)], 40, False),  # another clip still needs the upload
        ([_clip(40), _clip(40, protected=True)], 40, False),  # held by a protected clip
        ([_clip(40, video_gone=True)], 40, True),
        ([], 40, True),  # no clip links it: its own end decides
        ([], 5, False),
    ],
)
def test_an_upload_goes_when_no_clip_needs_it(clips: list[ClipState], segment_age: float, due: bool) -> None:
    assert segment_video_due(Periods(30, None), NOW - segment_age * DAY_S, clips, NOW) is due


def test_an_upload_is_kept_forever_without_a_video_period() -> None:
    assert not segment_video_due(Periods(None, 1), 0.0, [], NOW)


def test_frames_cover_every_revision_and_every_answer() -> None:
    uris = frames_uris(
        "s3://b/clips/veh/c1.r3.npz", 3, ["s3://b/clips/veh/c1.r2.npz", "file:///elsewhere.npz"]
    )
    assert uris == [
        "s3://b/clips/veh/c1.r3.npz",  # the current frames first: their deletion marks the video gone
        "s3://b/clips/veh/c1.r1.npz",
        "s3://b/clips/veh/c1.r2.npz",
        "file:///elsewhere.npz",
    ]
    assert frames_uris("file:///blobs/clips/x.npz", 2) == [
        "file:///blobs/clips/x.npz"
    ]  # no revision in the name


def test_the_footage_prefix_is_a_digest_of_the_upload() -> None:
    prefix = footage_prefix("s3://b/uploads/v/seg.mp4")
    assert prefix.startswith("footage/") and prefix.endswith(".") and len(prefix) == len("footage/.") + 40
    assert prefix != footage_prefix("s3://b/uploads/v/seg2.mp4")
