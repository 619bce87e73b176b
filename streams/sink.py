"""Writing an inference to Postgres: clip, inference, events and instruction in one transaction, idempotently.

The worker commits its Kafka offset only after `write_result` returns, so a crash in between replays the clip;
the upserts (clip by id, inference by clip id and model version, events and instruction replaced) make that
replay change nothing. Once a manager has reviewed an answer, a replay leaves its events and instruction alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import delete, func, select
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
    Segment,
    Vehicle,
)
from schemas.distance import clip_distance_km
from schemas.messages import ClipMessage, InferenceResult

SessionFactory = Callable[[], Session]


def _insert_missing(session: Session, model: type, rows: list[dict[str, Any]]) -> None:
    if rows:
        session.execute(insert(model).values(rows).on_conflict_do_nothing())


def write_result(session_factory: SessionFactory, *, clip: ClipMessage, result: InferenceResult) -> int:
    """Upsert everything one clip's inference produced; returns the inference id."""
    fleet = clip.fleet_id
    with session_factory() as session, session.begin():
        _insert_missing(session, Fleet, [{"fleet_id": fleet}])
        _insert_missing(session, Vehicle, [{"vehicle_id": clip.vehicle_id, "fleet_id": fleet}])
        if clip.driver_id:
            _insert_missing(session, Driver, [{"driver_id": clip.driver_id, "fleet_id": fleet}])
        _insert_missing(session, ModelVersion, [{"version": result.model_version, "path": "", "metrics": {}}])
        _insert_missing(session, Segment, [
            {"segment_id": s.segment_id, "fleet_id": fleet, "vehicle_id": clip.vehicle_id, "camera": s.camera.value,
             "start_ts": s.start_ts, "end_ts": s.end_ts, "video_uri": s.video_uri, "distance_km": s.distance_km}
            for s in clip.segments
        ])
        _insert_missing(session, Clip, [{
            "clip_id": clip.clip_id, "fleet_id": fleet, "vehicle_id": clip.vehicle_id, "driver_id": clip.driver_id,
            "start_ts": clip.start_ts, "end_ts": clip.end_ts, "views": [v.value for v in clip.views],
            "frames_uri": clip.frames_uri, "num_frames": clip.num_frames, "frame_width": clip.frame_width,
            "frame_height": clip.frame_height, "sample_fps": clip.sample_fps,
            "distance_km": clip_distance_km(clip.start_ts, clip.end_ts, clip.segments),
        }])
        _insert_missing(session, ClipSegment, [
            {"clip_id": clip.clip_id, "segment_id": s.segment_id, "fleet_id": fleet} for s in clip.segments
        ])
        values = {
            "fleet_id": fleet, "clip_id": clip.clip_id, "model_version": result.model_version,
            "prompt_version": result.prompt_version, "valid": result.valid, "error": result.error,
            "description": result.description, "raw_turn1": result.raw_turn1, "raw_turn2": result.raw_turn2,
            "latency_ms": result.latency_ms, "prompt_tokens": result.prompt_tokens,
            "generated_tokens": result.generated_tokens,
        }
        stmt = insert(Inference).values(values)
        stmt = stmt.on_conflict_do_update(
            constraint="uq_inference_clip_model",
            set_={**{k: stmt.excluded[k] for k in values if k not in ("clip_id", "model_version")},
                  "updated_at": func.now()},
        ).returning(Inference.id)
        inference_id = int(session.execute(stmt).scalar_one())
        if session.execute(select(Review.id).where(Review.inference_id == inference_id).limit(1)).first():
            # A manager has reviewed this answer: its events and instruction are theirs now (a correction, coaching
            # status); a replay of the clip must not put the model's back.
            return inference_id
        session.execute(delete(Event).where(Event.inference_id == inference_id))
        if result.events:
            session.execute(insert(Event).values([
                {"fleet_id": fleet, "inference_id": inference_id, "type": e.type.value, "view": e.view.value,
                 "start_s": e.start, "end_s": e.end}
                for e in result.events
            ]))
        instruction = insert(Instruction).values(inference_id=inference_id, fleet_id=fleet, text=result.instruction)
        session.execute(instruction.on_conflict_do_update(index_elements=[Instruction.inference_id],
                                                          set_={"text": instruction.excluded.text}))
    return inference_id


__all__ = ["write_result"]
