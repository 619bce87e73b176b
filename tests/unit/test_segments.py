"""Every kind of bad upload is refused with its own dead-letter reason; a good one becomes a claim-checked ref."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from streams.blobs import LocalBlobStore
from streams.errors import BadSegment
from streams.segments import parse_segment, to_ref

NOW = 1_760_000_000.0


def message(**changes: object) -> bytes:
    base = {"schema_version": 1, "fleet_id": "f", "vehicle_id": "v", "camera": "road", "segment_id": "s1",
            "start_ts": NOW - 10, "end_ts": NOW, "fps": 10, "width": 320, "height": 180, "codec": "mp4v",
            "video_uri": "file:///nowhere.mp4"}
    return json.dumps({k: v for k, v in {**base, **changes}.items() if v is not None}).encode()


@pytest.mark.parametrize(("raw", "reason"), [
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
])
def test_each_bad_upload_has_its_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(BadSegment) as err:
        parse_segment(raw, max_bytes=1000, now=NOW, max_ahead_s=300)
    assert err.value.reason == reason


def test_a_small_clock_lead_is_tolerated() -> None:
    assert parse_segment(message(end_ts=NOW + 200), max_bytes=10_000, now=NOW, max_ahead_s=300).end_ts == NOW + 200


def test_claim_checks_are_verified_and_inline_video_is_spilled(tmp_path: Path) -> None:
    blobs = LocalBlobStore(tmp_path)
    with pytest.raises(BadSegment) as err:
        to_ref(parse_segment(message(), max_bytes=10_000), blobs)
    assert err.value.reason == "missing_blob"
    video = base64.b64encode(b"tiny video").decode()
    inline = parse_segment(message(video_uri=None, video_b64=video), max_bytes=10_000)
    ref = to_ref(inline, blobs)
    assert blobs.path(ref.video_uri).read_bytes() == b"tiny video"
    with pytest.raises(BadSegment) as err:
        to_ref(parse_segment(message(video_uri=None, video_b64="not base64!"), max_bytes=10_000), blobs)
    assert err.value.reason == "invalid_segment"
