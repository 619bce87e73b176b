"""Turning a raw telematics message into a checked, claim-checked upload, or a dead-letter reason."""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass, fields

from pydantic import ValidationError

from schemas.claim_checks import telemetry_key
from schemas.messages import SCHEMA_VERSION, SegmentMessage
from streams.errors import BadSegment
from streams.infra.blobs import BlobNotFound, BlobStore, content_key
from streams.settings import Settings

SUFFIX_BY_CODEC = {"h264": ".mp4", "avc1": ".mp4", "mp4v": ".mp4", "mjpg": ".avi", "gif": ".gif"}


# A device cutting 5-minute segments writes 300.0 s give or take its encoder's timing (hypothesis found 300.2 s in
# the arrival patterns of tests/strategies.py): late or imprecise is not wrong, so the length limit has this slack.
SEGMENT_LENGTH_SLACK_S = 0.5


@dataclass(frozen=True)
class TimeLimits:
    """What a segment's times must satisfy to be joined (settings: max_clock_ahead_s, max_segment_age_s,
    max_segment_s)."""

    max_clock_ahead_s: float = 300.0
    max_segment_age_s: float = 14 * 86400.0
    max_segment_s: float = 300.0

    @classmethod
    def from_settings(cls, settings: Settings) -> TimeLimits:
        """Each field is the setting of the same name: one name per concept, env var to rule."""
        return cls(**{f.name: getattr(settings, f.name) for f in fields(cls)})


def parse_segment(
    raw: bytes,
    *,
    max_bytes: int,
    now: float | None = None,
    arrived: float | None = None,
    limits: TimeLimits = TimeLimits(),
) -> SegmentMessage:
    """Validate one upload; every refusal is a BadSegment whose reason names the dead-letter cause.

    Times must be finite (`invalid_timestamp`), a segment no longer than `max_segment_s` (`segment_too_long`: the
    join's work per upload must not grow with a device's idea of a segment), ending no more than `max_clock_ahead_s`
    after the receiver's clock `now` (`future_timestamp`: a broken device clock would drag the watermark with it)
    and starting no more than `max_segment_age_s` before its arrival time `arrived` (`too_old`: older footage than the
    join keeps windows for; the arrival time, the record's timestamp, keeps a replay's verdicts the same).
    """
    if len(raw) > max_bytes:
        raise BadSegment("oversized", f"{len(raw)} bytes > limit {max_bytes}")
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BadSegment("malformed_json", str(err)) from err
    if not isinstance(data, dict):
        raise BadSegment("malformed_json", "the message is not a JSON object")
    version = data.get("schema_version")  # required: the version a producer writes is never guessed
    if isinstance(version, bool) or version != SCHEMA_VERSION:  # JSON `true` is not the integer 1
        raise BadSegment(
            "unknown_schema_version", f"schema_version={version!r}: this receiver reads {SCHEMA_VERSION} only"
        )
    for name in ("start_ts", "end_ts"):
        value = data.get(name)
        if isinstance(value, float) and not math.isfinite(value):
            raise BadSegment("invalid_timestamp", f"{name} is {value!r}: times must be finite")
    try:
        segment = SegmentMessage.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        raise BadSegment("invalid_segment", f"{'.'.join(map(str, first['loc']))}: {first['msg']}") from err
    if segment.duration > limits.max_segment_s + SEGMENT_LENGTH_SLACK_S:
        raise BadSegment("segment_too_long", f"{segment.duration:.1f} s > limit {limits.max_segment_s:g} s")
    if now is not None and segment.end_ts > now + limits.max_clock_ahead_s:
        raise BadSegment("future_timestamp", f"ends {segment.end_ts - now:.0f} s after the receiver's clock")
    if arrived is not None and segment.start_ts < arrived - limits.max_segment_age_s:
        raise BadSegment(
            "too_old",
            f"starts {arrived - segment.start_ts:.0f} s before it arrived, more than the "
            f"{limits.max_segment_age_s:g}-s horizon",
        )
    return segment


def claim_check(segment: SegmentMessage, blobs: BlobStore) -> SegmentMessage:
    """Spill inline video to the blob store (join state only ever holds references) and check the claim: the upload
    as it is kept, and dead-lettered if it comes too late. A store that cannot be reached raises BlobUnavailable,
    which is no dead letter: the joiner stops and resumes from its committed offsets."""
    if segment.video_b64 is not None:
        try:
            data = base64.b64decode(segment.video_b64, validate=True)
        except binascii.Error as err:
            raise BadSegment("invalid_segment", f"video_b64 is not base64: {err}") from err
        suffix = SUFFIX_BY_CODEC.get(segment.codec.lower(), ".bin")
        # Content-addressed: the same video again is the same blob (a no-op), never a replacement.
        uri = blobs.put_bytes(
            content_key(f"segments/{segment.vehicle_id}", data, suffix), data, immutable=True
        )
    else:
        assert segment.video_uri is not None
        uri = segment.video_uri
        try:  # a file:// or s3:// claim check; one of another scheme or bucket than the store's is missing here
            blobs.check(uri)
        except BlobNotFound as err:
            raise BadSegment("missing_blob", str(err)) from err
    if segment.telemetry:
        body = segment.telemetry_json()
        blobs.put_bytes(telemetry_key(uri, body), body, immutable=True)
    return segment.model_copy(update={"video_uri": uri, "video_b64": None})
