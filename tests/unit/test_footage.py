"""The clip page's footage plan and byte ranges (streams/console/footage.py), without services."""

from __future__ import annotations

import pytest

from streams.console.footage import RangeNotSatisfiable, Stretch, byte_range, media_type, plan


def test_a_window_across_an_upload_boundary_plays_each_piece_once() -> None:
    stretches = [
        Stretch("road", 100.0, 160.0, "a"),
        Stretch("road", 160.0, 220.0, "b"),
        Stretch("driver", 95.0, 130.0, "c"),
        Stretch("driver", 140.0, 200.0, "d"),
    ]
    pieces = plan(130.0, 190.0, stretches)
    road = [(p.video_uri, p.at, p.offset, p.length) for p in pieces["road"]]
    assert road == [("a", 0.0, 30.0, 30.0), ("b", 30.0, 0.0, 30.0)]
    driver = [(p.video_uri, p.at, p.offset, p.length) for p in pieces["driver"]]
    assert driver == [("d", 10.0, 0.0, 50.0)]  # "c" ends where the window starts; 130-140 s is a gap
    assert [p.index for p in pieces["road"]] == [0, 1]


def test_overlapping_uploads_never_play_a_moment_twice() -> None:
    pieces = plan(0.0, 100.0, [Stretch("road", 0.0, 60.0, "a"), Stretch("road", 50.0, 110.0, "b")])["road"]
    assert [(p.at, p.offset, p.length) for p in pieces] == [(0.0, 0.0, 60.0), (60.0, 10.0, 40.0)]
    assert sum(p.length for p in pieces) == 100.0


def test_uploads_outside_the_window_and_no_uploads_give_no_piece() -> None:
    assert plan(100.0, 160.0, [Stretch("road", 0.0, 60.0, "old")]) == {}
    assert plan(100.0, 160.0, []) == {}


def test_media_type_needs_a_playable_codec_in_a_playable_container() -> None:
    mp4 = b"\x00\x00\x00\x20ftypisom"
    assert media_type("avc1", mp4) == "video/mp4"
    assert media_type("mp4v", mp4) is None  # MPEG-4 Part 2: no browser plays it
    assert media_type("avc1", b"RIFF\x00\x00\x00\x00AVI ") is None  # H.264 in an AVI
    assert media_type("VP80", b"\x1a\x45\xdf\xa3rest") == "video/webm"
    assert media_type("", b"GIF89a") is None


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-", (0, 999)),
        ("bytes=0-99", (0, 99)),
        ("bytes=900-5000", (900, 999)),
        ("bytes=-100", (900, 999)),
        ("bytes=-5000", (0, 999)),
        ("bytes=10-20, 30-40", (10, 20)),
    ],
)
def test_byte_ranges(header: str | None, expected: tuple[int, int] | None) -> None:
    assert byte_range(header, 1000) == expected


def test_a_large_range_is_answered_in_parts() -> None:
    assert byte_range("bytes=0-", 10 << 20, most=1 << 20) == (0, (1 << 20) - 1)


@pytest.mark.parametrize(
    "header", ["bytes=1000-", "bytes=5-2", "items=0-1", "bytes=a-b", "bytes", "bytes=-x"]
)
def test_ranges_that_ask_for_no_byte_are_refused(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable):
        byte_range(header, 1000)
