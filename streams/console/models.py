"""The JSON API's response models: what `/api/openapi.json` documents and the schemathesis run checks. Answers,
events and reviews go out by their random public ids (migration 0014), never by their keys: those come from
sequences every fleet shares, and would tell a manager how busy the other fleets are."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, date, datetime
from uuid import UUID

from pydantic import BaseModel

from streams.console.footage import Piece
from streams.console.queries import ClipDetail


class MeOut(BaseModel):
    username: str
    display_name: str
    fleet_id: str


class QueueItemOut(BaseModel):
    answer_id: UUID
    clip_id: str
    vehicle_id: str
    driver_id: str | None
    occurred_at: datetime
    events: int
    max_severity: int


class CoachingItemOut(BaseModel):
    clip_id: str
    vehicle_id: str
    driver_id: str | None
    occurred_at: datetime
    events: int
    max_severity: int
    types: str


class RateRowOut(BaseModel):
    who: str | None
    period: date
    type: str
    severity: int
    events: int
    hours: float
    per_hour: float | None
    km: float | None = None
    per_100km: float | None = None


class ScoreRowOut(BaseModel):
    driver: str
    week: date  # its Monday (UTC)
    score: int  # 0..100
    change: int | None  # against the driver's week before; None: no driving then
    points: float
    per: str  # "100 km" | "hour"
    rate: float  # points per 100 km or per driving hour
    km: float | None
    hours: float
    events: str  # "type count x weight, ..."
    formula: str


class TrendRowOut(BaseModel):
    who: str | None
    type: str
    events: int
    previous: int
    change: int


class EventOut(BaseModel):
    id: UUID
    type: str
    view: str
    start_s: float
    end_s: float
    coaching_status: str
    severity: int


class ReviewRowOut(BaseModel):
    id: UUID
    reviewer: str
    verdict: str
    corrected_turn1: str | None
    corrected_instruction: str | None
    created_at: datetime
    clip_revision: int
    model_version: str
    current: bool  # False: a review of an earlier revision of the clip, or of another model's answer


class RuleEventOut(BaseModel):
    """An event the telemetry rules found in the clip (migration 0023)."""

    type: str
    start_s: float
    end_s: float
    peak: float  # g (harsh braking, acceleration, turn) or km/h over the limit (speeding)
    thresholds: str  # the vehicle class whose published thresholds applied
    clip_revision: int
    agrees: bool  # the answer has an event of its type near it


class RuleTypeRowOut(BaseModel):
    """Per rule type, the clips with each outcome of the model-vs-rules comparison."""

    type: str
    both: int
    rules_only: int
    model_only: int
    unjudged: int  # the answer's event on a clip whose telemetry could not show its type


class RuleEventRowOut(BaseModel):
    """One compared event: the rules' or the answer's, with its outcome."""

    clip_id: str
    occurred_at: datetime  # the clip's start
    vehicle_id: str
    driver_id: str | None
    type: str
    source: str  # "rules" | "model"
    outcome: str  # "both" | "rules_only" | "model_only" | "unjudged"
    start_s: float
    end_s: float
    peak: float | None  # the rules' only
    thresholds: str | None


class RuleComparisonOut(BaseModel):
    since: date
    until: date  # exclusive
    clips: int
    with_telemetry: int
    types: list[RuleTypeRowOut]
    rows: list[RuleEventRowOut]


class ClipOut(BaseModel):
    clip_id: str
    vehicle_id: str
    driver_id: str | None
    start: datetime
    duration_s: float
    num_frames: int
    sample_fps: float
    revision: int
    answer_id: UUID | None
    model_version: str | None
    valid: bool | None
    description: str
    instruction: str
    events: list[EventOut]
    reviews: list[ReviewRowOut]
    rule_events: list[RuleEventOut] = []


class ReviewResultOut(BaseModel):
    answer_id: UUID
    action: str
    review_id: UUID | None
    events: int


class PieceOut(BaseModel):
    url: str
    at: float  # s from the clip's start
    offset: float  # s into the video
    length: float  # s


class FootageOut(BaseModel):
    clip_id: str
    start: datetime
    duration_s: float
    cameras: dict[str, list[PieceOut]]  # "road", "driver": each camera's pieces in time order


class ErrorOut(BaseModel):
    detail: str


def clip_out(detail: ClipDetail) -> ClipOut:
    fields = {k: v for k, v in asdict(detail).items() if k in ClipOut.model_fields}
    return ClipOut(**fields)


def footage_out(
    clip_id: str, start: float, end: float, pieces: dict[str, list[Piece]], *, unblurred: bool = False
) -> FootageOut:
    suffix = {"driver": "?unblurred=1"} if unblurred else {}
    return FootageOut(
        clip_id=clip_id,
        start=datetime.fromtimestamp(start, UTC),
        duration_s=end - start,
        cameras={
            camera: [
                PieceOut(
                    url=f"/clips/{clip_id}/footage/{camera}/{p.index}{suffix.get(camera, '')}",
                    at=round(p.at, 3),
                    offset=round(p.offset, 3),
                    length=round(p.length, 3),
                )
                for p in mine
            ]
            for camera, mine in pieces.items()
        },
    )
