"""Writing an inference to Postgres: clip, inference, events and instruction in one transaction, idempotently.

The worker commits its Kafka offset only after `write_result` returns, so a crash in between replays the clip;
the upserts (clip by id, inference by clip id, model version and clip revision, events and instruction replaced)
make that replay change nothing. Once a manager has reviewed an answer, a replay leaves its events and instruction
alone. A newer revision of a clip (a late upload rebuilt it) updates the clip row and adds an answer, which becomes
the current one; the older revision's answer and any review of it stay, marked by their `clip_revision`. An older
revision arriving after a newer one (its segments all stored already) writes nothing; a lower revision with
segments the stored clip lacks is another lineage (lost manifests, another run) and replaces it.
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
        _insert_missing(
            session,
            Segment,
            [
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
            ],
        )
        row = {
            "clip_id": clip.clip_id,
            "fleet_id": fleet,
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
                # An older revision than the one stored (a replay after the newer one was written): the newer answer
                # stands, and this one is not written.
                current = session.execute(
                    select(Inference.id)
                    .where(Inference.clip_id == clip.clip_id)
                    .order_by(Inference.updated_at.desc(), Inference.id.desc())
                    .limit(1)
                )
                return int(current.scalar_one())
            # Footage the stored clip does not have under a lower revision: not an older revision of it but another
            # lineage (its window manifests were lost, or another deployment wrote the id): the newest write wins.
            session.execute(
                update(Clip)
                .where(Clip.clip_id == clip.clip_id)
                .values({k: v for k, v in row.items() if k != "clip_id"})
            )
            session.execute(delete(ClipSegment).where(ClipSegment.clip_id == clip.clip_id))
        _insert_missing(
            session,
            ClipSegment,
            [{"clip_id": clip.clip_id, "segment_id": s.segment_id, "fleet_id": fleet} for s in clip.segments],
        )
        values = {
            "fleet_id": fleet,
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
        upsert = new.on_conflict_do_update(
            constraint="uq_inference_clip_model_revision",
            set_={
                **{
                    k: new.excluded[k]
                    for k in values
                    if k not in ("clip_id", "model_version", "clip_revision")
                },
                "updated_at": func.now(),
            },
        ).returning(Inference.id)
        inference_id = int(session.execute(upsert).scalar_one())
        if session.execute(select(Review.id).where(Review.inference_id == inference_id).limit(1)).first():
            # A manager has reviewed this answer: its events and instruction are theirs now (a correction, coaching
            # status); a replay of the clip must not put the model's back.
            return inference_id
        session.execute(delete(Event).where(Event.inference_id == inference_id))
        if result.events:
            session.execute(
                insert(Event).values(
                    [
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
                )
            )
        instruction = insert(Instruction).values(
            inference_id=inference_id, fleet_id=fleet, text=result.instruction
        )
        session.execute(
            instruction.on_conflict_do_update(
                index_elements=[Instruction.inference_id], set_={"text": instruction.excluded.text}
            )
        )
    return inference_id


__all__ = ["write_result"]
