"""What retention deletes, decided from plain values: which of a clip's parts expired and are unprotected, which
segments' uploads no clip needs any more, and which blobs a clip's frames left in the store. No I/O here."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from schemas.claim_checks import derived_prefix

DAY_S = 86400.0
BLOB_KINDS = ("frames", "video", "footage")
ROW_KINDS = ("results", "clip")


@dataclass(frozen=True)
class Periods:
    """A fleet's retention in days from a clip's end; None keeps that part forever."""

    video_days: int | None = None
    results_days: int | None = None

    def __post_init__(self) -> None:
        for name, days in (("video_days", self.video_days), ("results_days", self.results_days)):
            if days is not None and days < 0:
                raise ValueError(f"{name} must be 0 or more days (or none: kept forever), not {days}")

    def video_expired(self, end_ts: float, now: float) -> bool:
        return self.video_days is not None and end_ts + self.video_days * DAY_S <= now

    def results_expired(self, end_ts: float, now: float) -> bool:
        return self.results_days is not None and end_ts + self.results_days * DAY_S <= now


@dataclass(frozen=True)
class ClipState:
    """What retention knows of one clip. `protected`: under an active legal hold or in a coaching session the driver
    has not acknowledged yet; `video_gone`: its current frames blob is logged as deleted."""

    clip_id: str
    end_ts: float
    protected: bool
    video_gone: bool
    has_results: bool


@dataclass(frozen=True)
class ClipDecision:
    frames: bool  # delete the clip's stacked frames (and consider its segments' uploads)
    results: bool  # delete its answers, events, instructions and reviews
    row: bool  # delete the clip's row: both periods expired, nothing left that needs it


def decide(periods: Periods, clip: ClipState, now: float) -> ClipDecision:
    """A protected clip keeps everything; otherwise each part goes when its own period has passed, and the row goes
    once both have (its blobs are found through it, so it outlives them)."""
    if clip.protected:
        return ClipDecision(False, False, False)
    video = periods.video_expired(clip.end_ts, now)
    results = periods.results_expired(clip.end_ts, now)
    return ClipDecision(
        frames=video and not clip.video_gone, results=results and clip.has_results, row=video and results
    )


def segment_video_due(
    periods: Periods, segment_end_ts: float, clips: Iterable[ClipState], now: float
) -> bool:
    """An upload may go only when every clip built from it has expired video and none is protected; an upload that
    no clip links (any more) expires by its own end."""
    linked = list(clips)
    if not linked:
        return periods.video_expired(segment_end_ts, now)
    return all(not c.protected and periods.video_expired(c.end_ts, now) for c in linked)


_REVISION = re.compile(r"^(?P<stem>.*\.r)(?P<revision>\d+)(?P<suffix>\.npz)$")


def frames_uris(current: str, revision: int, answered: Iterable[str] = ()) -> list[str]:
    """Every frames blob a clip may have left: the current one first, then those its answers were made on (a review
    keeps an older revision's frames), then the builder's earlier revisions (`....r<N>.npz`, streams/builder/build.py),
    which a rebuild before any answer leaves unreferenced. Only the first is known to exist."""
    uris = [current]
    match = _REVISION.match(current)
    if match is not None:
        uris += [
            f"{match['stem']}{r}{match['suffix']}"
            for r in range(1, max(revision, int(match["revision"])) + 1)
        ]
    uris += list(answered)
    return list(dict.fromkeys(u for u in uris if u))


def footage_prefix(video_uri: str) -> str:
    """Where the console keeps its transcoded copies of an upload (streams/console/video.py, `playable`): the plain
    one `footage/<digest>.webm` and the face-blurred ones `footage/<digest>.<blur version>.webm`, all of them under
    this key prefix, and the joiner's spill of the upload's telemetry (schemas.claim_checks.telemetry_key)."""
    return derived_prefix(video_uri)
