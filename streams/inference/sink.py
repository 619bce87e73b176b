"""Writing an inference to Postgres: clip, inference, events and instruction in one transaction, idempotently.

The worker commits its Kafka offset only after `write_results` returns, so a crash in between replays the clip;
the upserts (clip by id, inference by clip id, model version and clip revision, events and instruction replaced)
make that replay change nothing. Once a manager has reviewed an answer, a replay leaves its events and instruction
alone. A newer revision of a clip (a late upload rebuilt it) updates the clip row and adds an answer, which becomes
the current one; the older revision's answer and any review of it stay, marked by their `clip_revision`. An older
revision arriving after a newer one (its segments all stored already) writes nothing; a lower revision with
segments the stored clip lacks is another lineage (lost manifests, another run) and replaces it.

Whenever the clip row is written, the telemetry rules' events for it (`rule_events`, schemas/motion_rules.py) are
replaced by what the rules find in that revision's telemetry, in the same transaction: they follow the clip row, not
the answer, so a reviewed answer does not hold them back and an older revision never writes them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from schemas.db import (
    Clip,
    ClipSegment,
    Driver,
    Event,
    Fleet,
    Inference,
    Instruction,
    ModelVersion,
    Review,
    RuleEventRow,
    Segment,
    Vehicle,
)
from schemas.distance import clip_distance_km
from schemas.messages import ClipMessage, InferenceResult
from schemas.motion_rules import DEFAULT_CLASS, THRESHOLDS, detect

SessionFactory = Callable[[], Session]


def _insert_missing(session: Session, model: type, rows: list[dict[str, Any]]) -> None:
    if rows:
        session.execute(insert(model).values(rows).on_conflict_do_nothing())


def write_result(session_factory: SessionFactory, *, clip: ClipMessage, result: InferenceResult) -> int:
    """Upsert everything one clip's inference produced, in one transaction; returns the inference id."""
    return write_results(session_factory, [(clip, result)])[0]


def write_results(
    session_factory: SessionFactory, answers: list[tuple[ClipMessage, InferenceResult]]
) -> list[int]:
    """Several clips' answers in one transaction (one commit, one fsync, for a batch of answers); their inference
    ids, in order. Clips are written in id order, so two workers writing overlapping batches take row locks in the
    same order instead of deadlocking."""
    ids: dict[int, int] = {}
    with session_factory() as session, session.begin():
        for k in sorted(range(len(answers)), key=lambda k: answers[k][0].clip_id):
            ids[k] = _write_one(session, *answers[k])
    return [ids[k] for k in range(len(answers))]


def _write_one(session: Session, clip: ClipMessage, result: InferenceResult) -> int:
    _insert_parents(session, clip, result)
    if not _upsert_clip(session, clip):
        # An older revision than the one stored (a replay after the newer one was written): the newer answer
        # stands, and this one is not written.
        return _current_inference(session, clip.clip_id)
    _replace_rule_events(session, clip)
    inference_id = _upsert_inference(session, clip, result)
    if session.execute(select(Review.id).where(Review.inference_id == inference_id).limit(1)).first():
        # A manager has reviewed this answer: its events and instruction are theirs now (a correction, coaching
        # status); a replay of the clip must not put the model's back.
        return inference_id
    _replace_answer(session, clip.fleet_id, inference_id, result)
    return inference_id


def _insert_parents(session: Session, clip: ClipMessage, result: InferenceResult) -> None:
    """The fleet, vehicle, driver, model version and segments the clip's rows refer to, where missing."""
    fleet = clip.fleet_id
    _insert_missing(session, Fleet, [{"fleet_id": fleet}])
    _insert_missing(session, Vehicle, [{"vehicle_id": clip.vehicle_id, "fleet_id": fleet}])
    if clip.driver_id:
        _insert_missing(session, Driver, [{"driver_id": clip.driver_id, "fleet_id": fleet}])
    _insert_missing(session, ModelVersion, [{"version": result.model_version, "path": "", "metrics": {}}])
    segments = [
        {
            "segment_id": s.segment_id,
            "fleet_id": fleet,
            "vehicle_id": clip.vehicle_id,
            "camera": s.camera.value,
            "start_ts": s.start_ts,
            "end_ts": s.end_ts,
            "video_uri": s.video_uri,
            "distance_km": s.distance_km,
        }
        for s in clip.segments
    ]
    _insert_missing(session, Segment, segments)


def _upsert_clip(session: Session, clip: ClipMessage) -> bool:
    """Write the clip row and its segments forward only; False when the stored clip is a newer revision of it."""
    row = {
        "clip_id": clip.clip_id,
        "fleet_id": clip.fleet_id,
        "vehicle_id": clip.vehicle_id,
        "driver_id": clip.driver_id,
        "start_ts": clip.start_ts,
        "end_ts": clip.end_ts,
        "views": [v.value for v in clip.views],
        "frames_uri": clip.frames_uri,
        "num_frames": clip.num_frames,
        "frame_width": clip.frame_width,
        "frame_height": clip.frame_height,
        "sample_fps": clip.sample_fps,
        "distance_km": clip_distance_km(clip.start_ts, clip.end_ts, clip.segments),
        "revision": clip.revision,
        "telemetry": [t.model_dump(exclude_none=True) for t in clip.telemetry],
    }
    clip_insert = insert(Clip).values(row)
    upsert = clip_insert.on_conflict_do_update(
        index_elements=[Clip.clip_id],
        set_={k: clip_insert.excluded[k] for k in row if k != "clip_id"},
        where=Clip.revision <= clip_insert.excluded.revision,
    ).returning(Clip.clip_id)
    if session.execute(upsert).first() is None:
        stored = set(
            session.scalars(select(ClipSegment.segment_id).where(ClipSegment.clip_id == clip.clip_id))
        )
        if {s.segment_id for s in clip.segments} <= stored:
            return False
        # Footage the stored clip does not have under a lower revision: not an older revision of it but another
        # lineage (its window manifests were lost, or another deployment wrote the id): the newest write wins.
        changed = {k: v for k, v in row.items() if k != "clip_id"}
        session.execute(update(Clip).where(Clip.clip_id == clip.clip_id).values(changed))
        session.execute(delete(ClipSegment).where(ClipSegment.clip_id == clip.clip_id))
    links = [
        {"clip_id": clip.clip_id, "segment_id": s.segment_id, "fleet_id": clip.fleet_id}
        for s in clip.segments
    ]
    _insert_missing(session, ClipSegment, links)
    return True


def _replace_rule_events(session: Session, clip: ClipMessage, thresholds: str = DEFAULT_CLASS) -> None:
    """The rules' events of the clip as written now: what `detect` finds in this revision's telemetry at the
    `thresholds` class. When the stored rows are exactly those, nothing is written (a replay changes nothing)."""
    found = sorted(
        (e.type.value, e.start, e.end, e.peak, clip.revision, thresholds)
        for e in detect(clip.telemetry, THRESHOLDS[thresholds])
    )
    columns = (
        RuleEventRow.type,
        RuleEventRow.start_s,
        RuleEventRow.end_s,
        RuleEventRow.peak,
        RuleEventRow.clip_revision,
        RuleEventRow.thresholds,
    )
    stored = session.execute(select(*columns).where(RuleEventRow.clip_id == clip.clip_id)).all()
    if sorted(tuple(r) for r in stored) == found:
        return
    session.execute(delete(RuleEventRow).where(RuleEventRow.clip_id == clip.clip_id))
    if found:
        keys = ("type", "start_s", "end_s", "peak", "clip_revision", "thresholds")
        rows = [
            {"fleet_id": clip.fleet_id, "clip_id": clip.clip_id, **dict(zip(keys, f, strict=True))}
            for f in found
        ]
        session.execute(insert(RuleEventRow).values(rows))


def _current_inference(session: Session, clip_id: str) -> int:
    current = session.execute(
        select(Inference.id)
        .where(Inference.clip_id == clip_id)
        .order_by(Inference.updated_at.desc(), Inference.id.desc())
        .limit(1)
    )
    return int(current.scalar_one())


def _upsert_inference(session: Session, clip: ClipMessage, result: InferenceResult) -> int:
    """One answer per clip, model and clip revision: a replay updates it in place."""
    values = {
        "fleet_id": clip.fleet_id,
        "clip_id": clip.clip_id,
        "model_version": result.model_version,
        "prompt_version": result.prompt_version,
        "valid": result.valid,
        "error": result.error,
        "description": result.description,
        "raw_turn1": result.raw_turn1,
        "raw_turn2": result.raw_turn2,
        "latency_ms": result.latency_ms,
        "prompt_tokens": result.prompt_tokens,
        "generated_tokens": result.generated_tokens,
        "clip_revision": clip.revision,
        "frames_uri": clip.frames_uri,
    }
    new = insert(Inference).values(values)
    key = ("clip_id", "model_version", "clip_revision")
    upsert = new.on_conflict_do_update(
        constraint="uq_inference_clip_model_revision",
        set_={**{k: new.excluded[k] for k in values if k not in key}, "updated_at": func.now()},
    ).returning(Inference.id)
    return int(session.execute(upsert).scalar_one())


def _replace_answer(session: Session, fleet: str, inference_id: int, result: InferenceResult) -> None:
    """The answer's events and instruction, replaced by the model's. Events equal to the stored ones stay as they
    are, so a replay changes no event's public id (the console's and webhooks' name for it, migration 0020)."""
    stored = session.execute(
        select(Event.type, Event.view, Event.start_s, Event.end_s).where(Event.inference_id == inference_id)
    ).all()
    answered = [(e.type.value, e.view.value, e.start, e.end) for e in result.events]
    if sorted(tuple(row) for row in stored) != sorted(answered):
        _replace_events(session, fleet, inference_id, result)
    instruction = insert(Instruction).values(
        inference_id=inference_id, fleet_id=fleet, text=result.instruction
    )
    session.execute(
        instruction.on_conflict_do_update(
            index_elements=[Instruction.inference_id], set_={"text": instruction.excluded.text}
        )
    )


def _replace_events(session: Session, fleet: str, inference_id: int, result: InferenceResult) -> None:
    session.execute(delete(Event).where(Event.inference_id == inference_id))
    if result.events:
        events = [
            {
                "fleet_id": fleet,
                "inference_id": inference_id,
                "type": e.type.value,
                "view": e.view.value,
                "start_s": e.start,
                "end_s": e.end,
            }
            for e in result.events
        ]
        session.execute(insert(Event).values(events))


__all__ = ["write_result", "write_results"]
