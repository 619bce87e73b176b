"""The cameras' own footage of a clip, for review: which part of which segment plays when, what a browser can play,
and the byte ranges a player asks for. Pure functions; the console's routes (video.py) do the I/O.

A clip's window rarely matches its uploads: a 60-s window may start 20 s into one road segment and end 10 s into
the next, and the driver camera's segments start elsewhere. `plan` lays each camera's segments on the clip's
timeline, trimmed to the window, so one player per camera can play the window across segment boundaries in step
with the other.
"""

from __future__ import annotations

from dataclasses import dataclass

# What Chromium, Firefox and Safari all play in a <video>: H.264 (and AV1, VP8/9 in WebM). MPEG-4 Part 2 ("mp4v"),
# GIF, MJPEG... are transcoded to VP9 WebM first (video.py).
PLAYABLE_FOURCCS = {
    "avc1": "video/mp4",
    "h264": "video/mp4",
    "av01": "video/mp4",
    "vp80": "video/webm",
    "vp90": "video/webm",
}
TRANSCODED_TYPE = "video/webm"


@dataclass(frozen=True)
class Stretch:
    """One upload of one camera: where it lies in time (epoch seconds)."""

    camera: str
    start_ts: float
    end_ts: float
    video_uri: str


@dataclass(frozen=True)
class Piece:
    """Play `video_uri` from `offset` s for `length` s, at `at` s on the clip's timeline."""

    camera: str
    index: int  # its place among the camera's pieces: the URL names it, never the segment's id or blob
    video_uri: str
    at: float
    offset: float
    length: float


def plan(clip_start: float, clip_end: float, stretches: list[Stretch]) -> dict[str, list[Piece]]:
    """Each camera's pieces in time order, trimmed to [clip_start, clip_end). A segment overlapping the one before
    (a camera's clock jumped, or an upload was cut twice) plays from where the one before ends, so no second of the
    window plays twice."""
    pieces: dict[str, list[Piece]] = {}
    for camera in sorted({s.camera for s in stretches}):
        covered = clip_start
        for s in sorted((s for s in stretches if s.camera == camera), key=lambda s: (s.start_ts, s.end_ts)):
            begin, end = max(s.start_ts, covered), min(s.end_ts, clip_end)
            if end - begin <= 1e-3:
                continue
            mine = pieces.setdefault(camera, [])
            mine.append(
                Piece(camera, len(mine), s.video_uri, begin - clip_start, begin - s.start_ts, end - begin)
            )
            covered = end
    return pieces


def media_type(fourcc: str, head: bytes) -> str | None:
    """The type a browser plays this video as, from its codec and its container's first bytes; None when it must
    be transcoded (H.264 in an AVI or MKV plays in no <video>: the container counts too)."""
    wanted = PLAYABLE_FOURCCS.get(fourcc.strip().lower())
    if wanted == "video/mp4" and head[4:8] == b"ftyp":
        return wanted
    if wanted == "video/webm" and head[:4] == b"\x1a\x45\xdf\xa3":
        return wanted
    return None


class RangeNotSatisfiable(ValueError):
    """A Range header that asks for no byte of the file (HTTP 416)."""


def byte_range(header: str | None, size: int, *, most: int = 4 << 20) -> tuple[int, int] | None:
    """The first range of an HTTP `Range: bytes=...` header as (start, end inclusive), at most `most` bytes (a
    player asks again for the rest); None without a header (the whole file). Ranges beyond the file are clipped;
    one that starts past its end, or a malformed header, raises RangeNotSatisfiable."""
    if header is None:
        return None
    unit, _, spec = header.partition("=")
    first = spec.split(",")[0].strip()
    start_text, dash, end_text = first.partition("-")
    if unit.strip().lower() != "bytes" or not dash:
        raise RangeNotSatisfiable(f"not a byte range: {header[:80]!r}")
    try:
        if start_text == "":  # the last N bytes
            suffix = int(end_text)
            start, end = max(size - suffix, 0), size - 1
        else:
            start = int(start_text)
            end = int(end_text) if end_text else size - 1
    except ValueError as err:
        raise RangeNotSatisfiable(f"not a byte range: {header[:80]!r}") from err
    if start < 0 or start >= size or end < start:
        raise RangeNotSatisfiable(f"bytes {start}-{end} of a {size}-byte file")
    return start, min(end, size - 1, start + most - 1)
