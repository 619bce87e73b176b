"""Kafka message contracts: camera segments in, stacked clips out, and the worker's inference result."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from schemas.claim_checks import telemetry_key
from schemas.distance import distance_km
from schemas.taxonomy import EventType, View

SCHEMA_VERSION: Final = 1


class TelemetrySample(BaseModel):
    model_config = ConfigDict(frozen=True)  # NaN allowed: a missing reading, skipped by schemas.distance

    t: float = Field(description="seconds on the device clock")
    speed_kmh: float | None = None
    accel_ms2: float | None = None
    yaw_rate_dps: float | None = None
    lat: float | None = None
    lon: float | None = None
    speed_limit_kmh: float | None = Field(
        default=None, description="the posted limit, where the device knows it"
    )


_SAMPLES: Final = TypeAdapter(list[TelemetrySample])


class SegmentMessage(BaseModel):
    """One camera upload. Times are seconds since the epoch on the device clock."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    schema_version: Literal[1] = SCHEMA_VERSION
    fleet_id: str
    vehicle_id: str
    driver_id: str | None = None
    camera: View
    segment_id: str = Field(description="unique per upload: the idempotency key")
    start_ts: float
    end_ts: float
    fps: float
    width: int
    height: int
    codec: str
    video_uri: str | None = Field(default=None, description="claim check: file:// or s3:// blob")
    video_b64: str | None = Field(default=None, description="small inline video, spilled to the blob store")
    telemetry: list[TelemetrySample] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> SegmentMessage:
        if self.end_ts <= self.start_ts:
            raise ValueError("end_ts must be after start_ts")
        if (self.video_uri is None) == (self.video_b64 is None):
            raise ValueError("exactly one of video_uri and video_b64 is required")
        return self

    @property
    def duration(self) -> float:
        return self.end_ts - self.start_ts

    def telemetry_json(self) -> bytes:
        """The telemetry as the joiner spills it to the blob store (a missing reading as null)."""
        return _SAMPLES.dump_json(self.telemetry, exclude_none=True)

    def ref(self, video_uri: str) -> SegmentRef:
        """What the join keeps of this upload: times, the claim checks its video and telemetry are stored under, and
        the distance its telemetry gives. The samples themselves stay out of the join's state (a minute's at 1 Hz is
        30x the rest of the reference): `streams.joiner.segments.claim_check` spilled them under `telemetry_key`."""
        return SegmentRef(
            segment_id=self.segment_id,
            camera=self.camera,
            start_ts=self.start_ts,
            end_ts=self.end_ts,
            video_uri=video_uri,
            distance_km=distance_km(self.telemetry),
            driver_id=self.driver_id,
            telemetry_key=telemetry_key(video_uri, self.telemetry_json()) if self.telemetry else None,
        )


def load_telemetry(body: bytes) -> list[TelemetrySample]:
    """Samples as `SegmentMessage.telemetry_json` spilled them."""
    return _SAMPLES.validate_json(body)


class SegmentRef(BaseModel):
    """What the join keeps of a segment: never the video itself."""

    model_config = ConfigDict(frozen=True)

    segment_id: str
    camera: View
    start_ts: float
    end_ts: float
    video_uri: str
    distance_km: float | None = None  # None: no usable telemetry (and refs stored before distances existed)
    driver_id: str | None = None  # the driver the upload names: a clip holds one driver's segments
    # The blob-store key of the upload's telemetry (issue 19); None: it carried none (or was joined before).
    telemetry_key: str | None = None
    # The samples on the upload's device clock, like start_ts: loaded from `telemetry_key` by the clip builder, which
    # places them on the clip's time base as it places this camera's frames. Always empty in the join's state.
    telemetry: tuple[TelemetrySample, ...] = ()


def clip_id_for(vehicle_id: str, window_start: float, window_end: float, driver_id: str | None) -> str:
    """Deterministic from vehicle, window and driver, never from arrival: a replay or a revision of the clip (a late
    upload into its window) keeps the id, and writes upsert."""
    raw = f"{vehicle_id}|{window_start:.3f}|{window_end:.3f}|{driver_id or ''}".encode()
    return hashlib.sha256(raw).hexdigest()[:32]


class ClipPlanMessage(BaseModel):
    """A clip the joiner decided on, for a builder to make: which segments, which span, which revision. Small (no
    frames), so the joiner publishes it at once and the slow decoding scales out over builder processes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    clip_id: str
    fleet_id: str
    vehicle_id: str
    driver_id: str | None = None
    window_start: float
    start_ts: float
    end_ts: float
    views: list[View]
    segments: list[SegmentRef]
    revision: int = Field(ge=1)


class ClipMessage(BaseModel):
    """A joined road + driver stretch, stacked into frames (road on top) and stored in the blob store."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    clip_id: str
    fleet_id: str
    vehicle_id: str
    driver_id: str | None = None
    start_ts: float
    end_ts: float
    views: list[View]
    segments: list[SegmentRef]
    frames_uri: str = Field(description="npz blob with `frames` (T, H, W, 3) uint8 RGB and `times`")
    num_frames: int
    frame_width: int
    frame_height: int
    sample_fps: float
    window_start: float | None = Field(default=None, description="the event-time window the clip belongs to")
    revision: int = Field(
        default=1,
        ge=1,
        description="grows when a late upload rebuilds the clip: the newest "
        "revision's answer replaces the older ones",
    )
    telemetry: list[TelemetrySample] = Field(
        default_factory=list,
        description="the vehicle's motion during the clip, t in seconds from the clip start (schemas.telemetry)",
    )

    @property
    def duration(self) -> float:
        return self.end_ts - self.start_ts


class DetectedEvent(BaseModel):
    """One event as the model reports it in turn 1 (times in seconds from the clip start)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: EventType
    view: View
    start: float = Field(ge=0)
    end: float = Field(ge=0)


class InferenceResult(BaseModel):
    """Both chain-of-thought turns for one clip, as written to Postgres."""

    model_config = ConfigDict(frozen=True)

    clip_id: str
    model_version: str
    prompt_version: str
    events: list[DetectedEvent]
    description: str
    instruction: str
    raw_turn1: str
    raw_turn2: str
    valid: bool
    error: str | None = None
    latency_ms: float
    prompt_tokens: int
    generated_tokens: int
    created_at: datetime | None = None
