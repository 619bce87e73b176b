"""The Postgres schema (SQLAlchemy 2 typed ORM). Every row carries its fleet, so a fleet's data can be queried,
exported or deleted on its own. Schema changes go through Alembic (`schemas/migrations`), never `create_all`.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Double,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[str]: JSON}


class _Created:
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Fleet(_Created, Base):
    __tablename__ = "fleets"

    fleet_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200))


class Vehicle(_Created, Base):
    __tablename__ = "vehicles"

    vehicle_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    fleet_id: Mapped[str] = mapped_column(ForeignKey("fleets.fleet_id"), index=True)


class Driver(_Created, Base):
    __tablename__ = "drivers"

    driver_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    fleet_id: Mapped[str] = mapped_column(ForeignKey("fleets.fleet_id"), index=True)


class Segment(_Created, Base):
    """One camera upload that went into a clip (the claim-check URI, never the video)."""

    __tablename__ = "segments"
    __table_args__ = (
        Index(
            "ix_segments_fleet_segment",
            "fleet_id",
            "segment_id",
            postgresql_include=["camera", "start_ts", "end_ts", "distance_km"],
        ),
        UniqueConstraint("segment_id", "fleet_id", name="uq_segments_segment_fleet"),  # for clip_segments
    )

    segment_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    fleet_id: Mapped[str] = mapped_column(ForeignKey("fleets.fleet_id"), index=True)
    vehicle_id: Mapped[str] = mapped_column(ForeignKey("vehicles.vehicle_id"), index=True)
    camera: Mapped[str] = mapped_column(String(16))
    start_ts: Mapped[float] = mapped_column(Double)
    end_ts: Mapped[float] = mapped_column(Double)
    video_uri: Mapped[str] = mapped_column(Text)
    distance_km: Mapped[float | None] = mapped_column(Double)  # from its telemetry (schemas/distance.py)


class Clip(_Created, Base):
    __tablename__ = "clips"
    __table_args__ = (
        Index(
            "ix_clips_fleet_start",
            "fleet_id",
            "start_ts",
            postgresql_include=["clip_id", "vehicle_id", "driver_id", "end_ts", "distance_km"],
        ),
        Index("ix_clips_vehicle_start", "vehicle_id", "start_ts"),
        UniqueConstraint("clip_id", "fleet_id", name="uq_clips_clip_fleet"),  # for inferences, clip_segments
    )

    clip_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    fleet_id: Mapped[str] = mapped_column(ForeignKey("fleets.fleet_id"), index=True)
    vehicle_id: Mapped[str] = mapped_column(ForeignKey("vehicles.vehicle_id"), index=True)
    driver_id: Mapped[str | None] = mapped_column(ForeignKey("drivers.driver_id"), index=True)
    start_ts: Mapped[float] = mapped_column(Double)
    end_ts: Mapped[float] = mapped_column(Double)
    views: Mapped[list[str]]
    frames_uri: Mapped[str] = mapped_column(Text)
    num_frames: Mapped[int] = mapped_column(Integer)
    frame_width: Mapped[int] = mapped_column(Integer)
    frame_height: Mapped[int] = mapped_column(Integer)
    sample_fps: Mapped[float] = mapped_column(Double)
    # Driven during the clip, from its segments' telemetry (schemas.distance.clip_distance_km); None: unknown.
    distance_km: Mapped[float | None] = mapped_column(Double)
    # Grows when a late upload rebuilds the clip (migration 0008); the row always holds the newest revision.
    revision: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    # The vehicle's motion during the clip (schemas.messages.TelemetrySample as JSON, t from the clip start; migration
    # 0022): what the cot-v2 prompt summarises and the telemetry rules read. None: stored before it travelled.
    telemetry: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONB)

    segments: Mapped[list[ClipSegment]] = relationship(back_populates="clip", cascade="all, delete-orphan")
    inferences: Mapped[list[Inference]] = relationship(back_populates="clip")


class ClipSegment(Base):
    __tablename__ = "clip_segments"
    __table_args__ = (
        Index("ix_clip_segments_fleet_clip", "fleet_id", "clip_id", postgresql_include=["segment_id"]),
        ForeignKeyConstraint(
            ["clip_id", "fleet_id"],
            ["clips.clip_id", "clips.fleet_id"],
            name="fk_clip_segments_clip_fleet",
            ondelete="CASCADE",
        ),
        ForeignKeyConstraint(
            ["segment_id", "fleet_id"],
            ["segments.segment_id", "segments.fleet_id"],
            name="fk_clip_segments_segment_fleet",
        ),
    )

    clip_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    segment_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    fleet_id: Mapped[str] = mapped_column(ForeignKey("fleets.fleet_id"), index=True)

    clip: Mapped[Clip] = relationship(back_populates="segments")


class RuleEventRow(_Created, Base):
    """A `schemas.motion_rules.RuleEvent` stored: what the telemetry rules found in a clip, beside the model's events
    (migration 0023); replaced by the worker's sink with every revision of the clip it writes, deleted with the
    clip."""

    __tablename__ = "rule_events"
    __table_args__ = (
        ForeignKeyConstraint(
            ["clip_id", "fleet_id"],
            ["clips.clip_id", "clips.fleet_id"],
            name="fk_rule_events_clip_fleet",
            ondelete="CASCADE",
        ),
        UniqueConstraint("clip_id", "type", "start_s", name="uq_rule_events_clip_type_start"),
        Index(
            "ix_rule_events_fleet_clip",
            "fleet_id",
            "clip_id",
            postgresql_include=["type", "start_s", "end_s"],
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    fleet_id: Mapped[str] = mapped_column(ForeignKey("fleets.fleet_id"))
    clip_id: Mapped[str] = mapped_column(String(64))
    # the clip revision whose telemetry they were found in
    clip_revision: Mapped[int] = mapped_column(Integer)
    type: Mapped[str] = mapped_column(ForeignKey("event_types.type"))  # the model's taxonomy
    start_s: Mapped[float] = mapped_column(Double)  # from the clip start, like events
    end_s: Mapped[float] = mapped_column(Double)
    # g (harsh braking, acceleration, turn) or km/h over the limit (speeding)
    peak: Mapped[float] = mapped_column(Double)
    thresholds: Mapped[str] = mapped_column(String(32))  # the vehicle class (schemas.motion_rules.THRESHOLDS)


class ModelVersion(_Created, Base):
    """A model the worker can serve; `stage` is candidate | production | rejected | retired."""

    __tablename__ = "model_versions"

    version: Mapped[str] = mapped_column(String(200), primary_key=True)
    fleet_id: Mapped[str | None] = mapped_column(
        ForeignKey("fleets.fleet_id"), index=True
    )  # None: all fleets
    path: Mapped[str] = mapped_column(Text)
    stage: Mapped[str] = mapped_column(String(16), default="candidate")
    demo: Mapped[bool] = mapped_column(Boolean, default=False)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    promoted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Inference(_Created, Base):
    """Both chain-of-thought turns for one clip and model version; the upsert key makes replays idempotent."""

    __tablename__ = "inferences"
    # The current answer per clip (current_inferences): a fleet's answers, and one clip's, in that view's order.
    __table_args__ = (
        UniqueConstraint(
            "clip_id", "model_version", "clip_revision", name="uq_inference_clip_model_revision"
        ),
        # what events, reviews, instructions and answer_facts point at: a row names its own fleet's answers only
        UniqueConstraint("id", "fleet_id", name="uq_inferences_id_fleet"),
        UniqueConstraint("public_id", name="uq_inferences_public_id"),
        ForeignKeyConstraint(
            ["clip_id", "fleet_id"], ["clips.clip_id", "clips.fleet_id"], name="fk_inferences_clip_fleet"
        ),
        Index(
            "ix_inferences_fleet_current",
            "fleet_id",
            "clip_id",
            text("updated_at DESC"),
            text("id DESC"),
            postgresql_include=["model_version"],
        ),
        Index(
            "ix_inferences_clip_current",
            "clip_id",
            text("updated_at DESC"),
            text("id DESC"),
            postgresql_include=["model_version"],
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    # What the console shows instead of the key, which comes from a sequence shared by every fleet (migration 0014).
    public_id: Mapped[uuid.UUID] = mapped_column(server_default=text("gen_random_uuid()"))
    fleet_id: Mapped[str] = mapped_column(ForeignKey("fleets.fleet_id"), index=True)
    clip_id: Mapped[str] = mapped_column(String(64), index=True)
    model_version: Mapped[str] = mapped_column(ForeignKey("model_versions.version"))
    prompt_version: Mapped[str] = mapped_column(String(32))
    valid: Mapped[bool] = mapped_column(Boolean)
    error: Mapped[str | None] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text, default="")
    raw_turn1: Mapped[str] = mapped_column(Text)
    raw_turn2: Mapped[str] = mapped_column(Text)
    latency_ms: Mapped[float] = mapped_column(Double)
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    generated_tokens: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )
    # The clip revision the answer was made on, and its frames: a review of an older revision keeps both.
    clip_revision: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    frames_uri: Mapped[str | None] = mapped_column(Text)

    clip: Mapped[Clip] = relationship(back_populates="inferences")
    events: Mapped[list[Event]] = relationship(back_populates="inference", cascade="all, delete-orphan")
    instruction: Mapped[Instruction | None] = relationship(
        back_populates="inference", cascade="all, delete-orphan"
    )


class EventTypeInfo(Base):
    """The taxonomy in the database (seeded by migration 0002), so reports can rank by severity in SQL."""

    __tablename__ = "event_types"

    type: Mapped[str] = mapped_column(String(64), primary_key=True)
    view: Mapped[str] = mapped_column(String(16))
    severity: Mapped[int] = mapped_column(Integer)
    definition: Mapped[str] = mapped_column(Text)


COACHING_STATUSES = ("needs_review", "needs_coaching", "coached", "dismissed")


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_fleet_status", "fleet_id", "coaching_status"),
        Index(
            "ix_events_fleet_inference",
            "fleet_id",
            "inference_id",
            postgresql_include=["id", "type", "start_s", "coaching_status"],
        ),
        # events outside the first hour of their clip: report_events reads them apart (migration 0005)
        Index(
            "ix_events_fleet_unusual_offset",
            "fleet_id",
            postgresql_where=text("NOT (start_s >= 0 AND start_s < 3600)"),
        ),
        ForeignKeyConstraint(
            ["inference_id", "fleet_id"],
            ["inferences.id", "inferences.fleet_id"],
            name="fk_events_inference_fleet",
            ondelete="CASCADE",
        ),
        UniqueConstraint("public_id", name="uq_events_public_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    # What the console shows instead of the key, which comes from a sequence shared by every fleet (migration 0014).
    public_id: Mapped[uuid.UUID] = mapped_column(server_default=text("gen_random_uuid()"))
    fleet_id: Mapped[str] = mapped_column(ForeignKey("fleets.fleet_id"), index=True)
    inference_id: Mapped[int] = mapped_column(BigInteger, index=True)
    type: Mapped[str] = mapped_column(String(64), index=True)
    view: Mapped[str] = mapped_column(String(16))
    start_s: Mapped[float] = mapped_column(Double)
    end_s: Mapped[float] = mapped_column(Double)
    # needs_review -> needs_coaching -> coached, or dismissed (COACHING_STATUSES)
    coaching_status: Mapped[str] = mapped_column(
        String(16), default="needs_review", server_default="needs_review"
    )

    inference: Mapped[Inference] = relationship(back_populates="events")


class EventFact(Base):
    """One row per event of each clip's current answer, with what reports filter and group by: `report_events` reads
    it. Written only by triggers (migration 0007), in the transaction that changes the events, answers or clips it
    comes from, so every writer keeps it right."""

    __tablename__ = "event_facts"
    __table_args__ = (
        Index(
            "ix_event_facts_fleet_day",
            "fleet_id",
            "day",
            "type",
            postgresql_include=["vehicle_id", "driver_id", "coaching_status"],
        ),
        Index("ix_event_facts_clip", "clip_id"),
    )

    event_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("events.id", ondelete="CASCADE"), primary_key=True
    )
    fleet_id: Mapped[str] = mapped_column(String(64))
    vehicle_id: Mapped[str] = mapped_column(String(64))
    driver_id: Mapped[str | None] = mapped_column(String(64))
    clip_id: Mapped[str] = mapped_column(String(64))
    inference_id: Mapped[int] = mapped_column(BigInteger)
    model_version: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(64))
    view: Mapped[str] = mapped_column(String(16))
    coaching_status: Mapped[str] = mapped_column(String(16))
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    day: Mapped[date] = mapped_column(Date)
    week: Mapped[date] = mapped_column(Date)


class AnswerFact(Base):
    """One row per clip's current answer: its event count, highest severity and whether a manager reviewed it.
    `review_queue` reads it; written only by the triggers of migration 0007, like EventFact."""

    __tablename__ = "answer_facts"
    __table_args__ = (
        Index(
            "ix_answer_facts_queue",
            "fleet_id",
            text("max_severity DESC"),
            text("occurred_at DESC"),
            postgresql_where=text("NOT reviewed"),
        ),
        Index("ix_answer_facts_clip", "clip_id"),
        ForeignKeyConstraint(
            ["inference_id", "fleet_id"],
            ["inferences.id", "inferences.fleet_id"],
            name="fk_answer_facts_inference_fleet",
            ondelete="CASCADE",
        ),
    )

    inference_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    fleet_id: Mapped[str] = mapped_column(String(64))
    clip_id: Mapped[str] = mapped_column(String(64))
    vehicle_id: Mapped[str] = mapped_column(String(64))
    driver_id: Mapped[str | None] = mapped_column(String(64))
    model_version: Mapped[str] = mapped_column(String(200))
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    events: Mapped[int] = mapped_column(BigInteger)
    max_severity: Mapped[int] = mapped_column(Integer)
    reviewed: Mapped[bool] = mapped_column(Boolean)


class Instruction(Base):
    __tablename__ = "instructions"
    __table_args__ = (
        ForeignKeyConstraint(
            ["inference_id", "fleet_id"],
            ["inferences.id", "inferences.fleet_id"],
            name="fk_instructions_inference_fleet",
            ondelete="CASCADE",
        ),
    )

    inference_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    fleet_id: Mapped[str] = mapped_column(ForeignKey("fleets.fleet_id"), index=True)
    text: Mapped[str] = mapped_column(Text)

    inference: Mapped[Inference] = relationship(back_populates="instruction")


class Review(_Created, Base):
    """A safety manager's verdict on an inference: accepted as is, or corrected (the training labels)."""

    __tablename__ = "reviews"
    __table_args__ = (
        Index("ix_reviews_fleet_inference", "fleet_id", "inference_id"),
        ForeignKeyConstraint(
            ["inference_id", "fleet_id"],
            ["inferences.id", "inferences.fleet_id"],
            name="fk_reviews_inference_fleet",
        ),
        UniqueConstraint("public_id", name="uq_reviews_public_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    # What the console shows instead of the key, which comes from a sequence shared by every fleet (migration 0014).
    public_id: Mapped[uuid.UUID] = mapped_column(server_default=text("gen_random_uuid()"))
    fleet_id: Mapped[str] = mapped_column(ForeignKey("fleets.fleet_id"), index=True)
    inference_id: Mapped[int] = mapped_column(BigInteger, index=True)
    reviewer: Mapped[str] = mapped_column(String(200))
    verdict: Mapped[str] = mapped_column(String(16))  # accepted | corrected | rejected
    corrected_turn1: Mapped[str | None] = mapped_column(Text)
    corrected_instruction: Mapped[str | None] = mapped_column(Text)


class TrainingRun(_Created, Base):
    __tablename__ = "training_runs"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    fleet_id: Mapped[str | None] = mapped_column(
        ForeignKey("fleets.fleet_id"), index=True
    )  # None: all fleets
    status: Mapped[str] = mapped_column(
        String(16), default="running"
    )  # running|succeeded|rejected|failed|skipped
    base_model: Mapped[str] = mapped_column(Text)
    model_version: Mapped[str | None] = mapped_column(ForeignKey("model_versions.version"))
    manifest: Mapped[dict[str, Any]] = mapped_column(default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Manager(_Created, Base):
    """A safety manager's sign-in, bound to one fleet (migration 0004); only an argon2 hash of the password."""

    __tablename__ = "managers"

    username: Mapped[str] = mapped_column(String(200), primary_key=True)
    fleet_id: Mapped[str] = mapped_column(ForeignKey("fleets.fleet_id"))
    display_name: Mapped[str] = mapped_column(String(200))
    password_hash: Mapped[str] = mapped_column(Text)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    is_admin: Mapped[bool] = mapped_column(Boolean, server_default="false")  # reads the audit log
    # Sees faces unblurred in the console and exports, each time written to the audit log (migration 0018).
    view_unblurred: Mapped[bool] = mapped_column(Boolean, server_default="false")


class ConsoleSession(_Created, Base):
    """A signed-in browser: the cookie holds a random token, the table only its SHA-256 (a leaked table signs no
    one in), with the session's CSRF token."""

    __tablename__ = "console_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    username: Mapped[str] = mapped_column(ForeignKey("managers.username", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class FleetScoreSettings(Base):
    """A fleet's own weights and penalties for the driver safety score (streams/console/safety_score.py); a fleet
    without a row gets the defaults there."""

    __tablename__ = "fleet_score_settings"
    __table_args__ = (
        CheckConstraint("jsonb_typeof(weights) = 'object'", name="ck_score_weights_object"),
        CheckConstraint("penalty_per_100km IS NULL OR penalty_per_100km >= 0", name="ck_score_penalty_100km"),
        CheckConstraint("penalty_per_hour IS NULL OR penalty_per_hour >= 0", name="ck_score_penalty_hour"),
    )

    fleet_id: Mapped[str] = mapped_column(ForeignKey("fleets.fleet_id"), primary_key=True)
    weights: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    penalty_per_100km: Mapped[float | None] = mapped_column(Double)
    penalty_per_hour: Mapped[float | None] = mapped_column(Double)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class CoachingSession(Base):
    """A coaching session a manager assigned a driver on some of their clips; the driver acknowledges it through a
    signed link (streams/console/links.py)."""

    __tablename__ = "coaching_sessions"
    __table_args__ = (
        UniqueConstraint("public_id", name="uq_coaching_sessions_public_id"),
        UniqueConstraint("id", "fleet_id", name="uq_coaching_sessions_id_fleet"),
        Index("ix_coaching_sessions_fleet_due", "fleet_id", "due_on"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    public_id: Mapped[uuid.UUID] = mapped_column(server_default=text("gen_random_uuid()"))
    fleet_id: Mapped[str] = mapped_column(ForeignKey("fleets.fleet_id"))
    driver_id: Mapped[str] = mapped_column(ForeignKey("drivers.driver_id"))
    coach: Mapped[str] = mapped_column(String(200))
    due_on: Mapped[date] = mapped_column(Date)
    notes: Mapped[str] = mapped_column(Text, server_default="")
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    acknowledged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class CoachingSessionClip(Base):
    __tablename__ = "coaching_session_clips"
    __table_args__ = (
        ForeignKeyConstraint(
            ["session_id", "fleet_id"],
            ["coaching_sessions.id", "coaching_sessions.fleet_id"],
            name="fk_session_clips_session_fleet",
            ondelete="CASCADE",
        ),
        ForeignKeyConstraint(
            ["clip_id", "fleet_id"], ["clips.clip_id", "clips.fleet_id"], name="fk_session_clips_clip_fleet"
        ),
    )

    session_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    clip_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    fleet_id: Mapped[str] = mapped_column(String(64))


class ConsoleLinkKey(Base):
    """The secret the console signs drivers' links with (made at random by migration 0016)."""

    __tablename__ = "console_link_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    secret: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class AuditEntry(Base):
    """One thing a manager (or a driver's link) did in the console (migration 0017): append-only for the services."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_fleet_at", "fleet_id", text("at DESC")),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    fleet_id: Mapped[str] = mapped_column(ForeignKey("fleets.fleet_id"))
    username: Mapped[str | None] = mapped_column(String(200))  # None: not a manager (a driver's link)
    action: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str] = mapped_column(String(200), server_default="")
    detail: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    address: Mapped[str | None] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class FleetRole(Base):
    """The Postgres role whose queries see only this fleet's rows (row-level security, migration 0004)."""

    __tablename__ = "fleet_roles"

    role_name: Mapped[str] = mapped_column(String(63), primary_key=True)
    fleet_id: Mapped[str] = mapped_column(ForeignKey("fleets.fleet_id"), unique=True)


__all__ = [
    "COACHING_STATUSES",
    "CoachingSession",
    "CoachingSessionClip",
    "ConsoleLinkKey",
    "AuditEntry",
    "Base",
    "Clip",
    "ClipSegment",
    "ConsoleSession",
    "Driver",
    "Event",
    "EventTypeInfo",
    "Fleet",
    "FleetRole",
    "FleetScoreSettings",
    "Inference",
    "Instruction",
    "Manager",
    "ModelVersion",
    "Review",
    "RuleEventRow",
    "Segment",
    "TrainingRun",
    "Vehicle",
]


class SignInFailures(Base):
    """Recent failed console sign-ins per client address, per username and per both, and the addresses a manager
    signed in from (kind `trusted`), shared by every console replica (migration 0010, `streams.console.throttle`).
    The key is a SHA-256 of the kind and value, never a typed username (people type passwords there); rows past
    `expires_at` are purged."""

    __tablename__ = "console_signin_throttle"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    failures: Mapped[int] = mapped_column(Integer, server_default="0")
    blocked_until: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class FleetRetention(Base):
    """A fleet's retention periods in days from a clip's end (migration 0019, streams/retention/); None, or no row:
    kept forever."""

    __tablename__ = "fleet_retention"
    __table_args__ = (
        CheckConstraint("video_days IS NULL OR video_days >= 0", name="ck_retention_video_days"),
        CheckConstraint("results_days IS NULL OR results_days >= 0", name="ck_retention_results_days"),
    )

    fleet_id: Mapped[str] = mapped_column(ForeignKey("fleets.fleet_id"), primary_key=True)
    video_days: Mapped[int | None] = mapped_column(Integer)  # uploads, stacked frames, transcoded footage
    results_days: Mapped[int | None] = mapped_column(Integer)  # answers, events, instructions, reviews
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class LegalHold(Base):
    """A clip retention must keep whole while the hold is active (`released_at` None)."""

    __tablename__ = "legal_holds"
    __table_args__ = (
        ForeignKeyConstraint(
            ["clip_id", "fleet_id"],
            ["clips.clip_id", "clips.fleet_id"],
            name="fk_legal_holds_clip_fleet",
            ondelete="CASCADE",
        ),
        Index("ix_legal_holds_active", "fleet_id", "clip_id", postgresql_where=text("released_at IS NULL")),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    clip_id: Mapped[str] = mapped_column(String(64))
    fleet_id: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)
    held_by: Mapped[str] = mapped_column(String(200))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    released_by: Mapped[str | None] = mapped_column(String(200))
    released_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class RetentionDeletion(Base):
    """What `drivecoach retention run` deleted: a blob (frames, video, footage) or a clip's rows (results, clip).
    A blob's row is its intent until `deleted_at` is set; each blob URI is logged once."""

    __tablename__ = "retention_deletions"
    __table_args__ = (
        CheckConstraint(
            "kind IN ('frames', 'video', 'footage', 'results', 'clip')", name="ck_retention_deletions_kind"
        ),
        Index(
            "uq_retention_deletions_blob", "blob_uri", unique=True, postgresql_where=text("blob_uri <> ''")
        ),
        Index("ix_retention_deletions_pending", "id", postgresql_where=text("deleted_at IS NULL")),
        Index("ix_retention_deletions_fleet_at", "fleet_id", "planned_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    run_id: Mapped[uuid.UUID]
    fleet_id: Mapped[str] = mapped_column(ForeignKey("fleets.fleet_id"))
    kind: Mapped[str] = mapped_column(String(16))
    subject: Mapped[str] = mapped_column(String(128))  # the clip's id, or the segment's for video and footage
    blob_uri: Mapped[str] = mapped_column(Text, server_default="")
    detail: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    planned_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class WebhookEndpoint(Base):
    """A fleet's URL for signed deliveries of the kinds it chose (migration 0020); `secret` signs them
    (streams/webhooks/signing.py), so it is kept, and only the owner and the delivery process read it."""

    __tablename__ = "webhook_endpoints"
    __table_args__ = (
        UniqueConstraint("id", "fleet_id", name="uq_webhook_endpoints_id_fleet"),  # for webhook_outbox
        Index("ix_webhook_endpoints_fleet", "fleet_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, server_default=text("gen_random_uuid()"))
    fleet_id: Mapped[str] = mapped_column(ForeignKey("fleets.fleet_id"))
    url: Mapped[str] = mapped_column(Text)
    secret: Mapped[str] = mapped_column(Text)
    # severe_event | review_done | coaching_acknowledged
    kinds: Mapped[list[str]] = mapped_column(ARRAY(String(32)))
    min_severity: Mapped[int] = mapped_column(Integer, server_default="3")  # of a severe_event's type
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class WebhookDelivery(Base):
    """One change for one endpoint, written by triggers in the change's own transaction (migration 0020); `id` is
    the event id every attempt carries. pending -> delivered, or dead after the last attempt."""

    __tablename__ = "webhook_outbox"
    __table_args__ = (
        ForeignKeyConstraint(
            ["endpoint_id", "fleet_id"],
            ["webhook_endpoints.id", "webhook_endpoints.fleet_id"],
            name="fk_webhook_outbox_endpoint_fleet",
            ondelete="CASCADE",
        ),
        UniqueConstraint("endpoint_id", "kind", "subject", name="uq_webhook_outbox_subject"),
        Index("ix_webhook_outbox_due", "next_attempt_at", postgresql_where=text("status = 'pending'")),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, server_default=text("gen_random_uuid()"))
    fleet_id: Mapped[str] = mapped_column(String(64))
    endpoint_id: Mapped[uuid.UUID]
    kind: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str] = mapped_column(String(300))  # the change: a change written twice is delivered once
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    status: Mapped[str] = mapped_column(String(16), server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class DriverWeekFact(Base):
    """One fleet's driving and counted events (reviewed and kept) per ISO week, driver and vehicle: the safety
    scores read it (streams/console/reports.py), with the fleet's weights applied when read. Written only by the
    triggers of migration 0021 on clips and event_facts, by exact numeric deltas."""

    __tablename__ = "driver_week_facts"

    fleet_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    week: Mapped[date] = mapped_column(Date, primary_key=True)
    driver_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    vehicle_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    clips: Mapped[int] = mapped_column(BigInteger, server_default="0")
    seconds: Mapped[Decimal] = mapped_column(Numeric, server_default="0")
    km_clips: Mapped[int] = mapped_column(BigInteger, server_default="0")  # clips of known distance
    km: Mapped[Decimal] = mapped_column(Numeric, server_default="0")  # their distance
    events: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))  # type -> count
