"""Postgres writes on the real server: the migration matches the models, and writes are idempotent upserts."""

from __future__ import annotations

import uuid

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import sessionmaker

from schemas.db import Base, Clip, ClipSegment, Event, Inference, Instruction, ModelVersion, Segment
from schemas.messages import ClipMessage, DetectedEvent, InferenceResult, SegmentRef
from schemas.registry import register
from schemas.taxonomy import EventType, View
from streams.inference.sink import write_result

pytestmark = pytest.mark.integration


def _clip(vehicle: str) -> ClipMessage:
    segs = [
        SegmentRef(
            segment_id=f"{vehicle}-{cam.value}-0",
            camera=cam,
            start_ts=100.0,
            end_ts=110.0,
            video_uri=f"file:///blobs/{vehicle}-{cam.value}.mp4",
        )
        for cam in View
    ]
    return ClipMessage(
        clip_id=f"clip-{vehicle}",
        fleet_id="fleet-a",
        vehicle_id=vehicle,
        driver_id="drv-1",
        start_ts=100.0,
        end_ts=110.0,
        views=[View.ROAD, View.DRIVER],
        segments=segs,
        frames_uri="file:///blobs/clip.npz",
        num_frames=20,
        frame_width=112,
        frame_height=140,
        sample_fps=2.0,
    )


def _result(clip: ClipMessage, version: str, events: list[EventType], instruction: str) -> InferenceResult:
    from schemas.taxonomy import view_of

    return InferenceResult(
        clip_id=clip.clip_id,
        model_version=version,
        prompt_version="cot-v1",
        events=[DetectedEvent(type=t, view=view_of(t), start=1, end=3) for t in events],
        description="d",
        instruction=instruction,
        raw_turn1="{}",
        raw_turn2=instruction,
        valid=True,
        latency_ms=5.0,
        prompt_tokens=10,
        generated_tokens=4,
    )


def test_migration_matches_the_models(database_url: str) -> None:
    engine = create_engine(database_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == []


def test_replayed_result_is_an_upsert_not_a_duplicate(database_url: str) -> None:
    engine = create_engine(database_url)
    factory = sessionmaker(engine)
    clip = _clip(f"veh-{uuid.uuid4().hex[:6]}")
    first = write_result(
        factory, clip=clip, result=_result(clip, "m-1", [EventType.PHONE_USE, EventType.SPEEDING], "a")
    )
    again = write_result(factory, clip=clip, result=_result(clip, "m-1", [EventType.DROWSINESS], "b"))
    other = write_result(factory, clip=clip, result=_result(clip, "m-2", [], "c"))
    assert first == again != other
    with factory() as s:
        assert s.scalar(select(func.count()).select_from(Clip).where(Clip.clip_id == clip.clip_id)) == 1
        assert (
            s.scalar(select(func.count()).select_from(ClipSegment).where(ClipSegment.clip_id == clip.clip_id))
            == 2
        )
        assert (
            s.scalar(select(func.count()).select_from(Segment).where(Segment.vehicle_id == clip.vehicle_id))
            == 2
        )
        assert set(s.scalars(select(Event.type).where(Event.inference_id == first))) == {"drowsiness"}
        assert s.scalar(select(Instruction.text).where(Instruction.inference_id == first)) == "b"
        assert s.scalar(select(func.count()).select_from(Event).where(Event.inference_id == other)) == 0
        rows = list(s.scalars(select(Inference).where(Inference.clip_id == clip.clip_id)))
        assert sorted(r.model_version for r in rows) == ["m-1", "m-2"]
        assert all(r.fleet_id == "fleet-a" for r in rows)
    engine.dispose()


def test_registering_a_model_keeps_its_stage(database_url: str) -> None:
    engine = create_engine(database_url)
    factory = sessionmaker(engine)
    version = f"tiny-{uuid.uuid4().hex[:6]}"
    register(factory, version=version, path="/models/tiny", demo=True)
    with factory() as s, s.begin():
        s.get(ModelVersion, version).stage = "production"
    register(factory, version=version, path="/elsewhere", demo=False)
    with factory() as s:
        row = s.get(ModelVersion, version)
        assert (row.stage, row.path, row.demo) == ("production", "/models/tiny", True)
    engine.dispose()


def test_a_failed_write_leaves_nothing_behind(database_url: str) -> None:
    engine = create_engine(database_url)
    factory = sessionmaker(engine)
    clip = _clip(f"veh-{uuid.uuid4().hex[:6]}")
    bad = _result(clip, "m-1", [EventType.PHONE_USE], "x").model_copy(update={"prompt_version": "v" * 100})
    with pytest.raises(DBAPIError, match="too long"):
        write_result(factory, clip=clip, result=bad)
    with factory() as s:
        assert s.scalar(select(func.count()).select_from(Clip).where(Clip.clip_id == clip.clip_id)) == 0
    engine.dispose()


def test_promote_and_rollback_move_production_between_versions(database_url: str) -> None:
    from schemas.registry import production, promote, rollback

    engine = create_engine(database_url)
    factory = sessionmaker(engine)
    first, second = (f"reg-{uuid.uuid4().hex[:6]}" for _ in range(2))
    for v in (first, second):
        register(factory, version=v, path=f"/models/{v}", demo=False)
    promote(factory, first)
    promote(factory, second)
    with factory() as s:
        assert (s.get(ModelVersion, first).stage, s.get(ModelVersion, second).stage) == (
            "retired",
            "production",
        )
    assert rollback(factory) == first and production(factory).version == first
    with factory() as s:
        assert s.get(ModelVersion, second).stage == "retired"
    with pytest.raises(KeyError):
        promote(factory, "no-such-version")
    engine.dispose()


def test_a_newer_revision_replaces_the_answer_and_keeps_the_review_of_the_older(database_url: str) -> None:
    """A late upload rebuilt a clip (same id, revision 2): its answer becomes the clip's current one, the manager's
    review of revision 1 stays with revision 1's answer and frames, and a replay of revision 1 changes nothing."""
    from sqlalchemy import text

    from schemas.db import Review
    from streams.console.queries import clip_detail

    engine = create_engine(database_url)
    factory = sessionmaker(engine)
    first = _clip(f"veh-{uuid.uuid4().hex[:6]}").model_copy(
        update={"frames_uri": "file:///blobs/clip.r2.npz", "revision": 2}
    )
    late = SegmentRef(
        segment_id=f"{first.vehicle_id}-driver-1",
        camera=View.DRIVER,
        start_ts=110.0,
        end_ts=115.0,
        video_uri="file:///blobs/late.mp4",
    )
    second = first.model_copy(
        update={
            "segments": [*first.segments, late],
            "end_ts": 115.0,
            "revision": 3,
            "frames_uri": "file:///blobs/clip.r3.npz",
        }
    )
    older = write_result(factory, clip=first, result=_result(first, "m-1", [EventType.PHONE_USE], "a"))
    with factory() as s, s.begin():
        s.add(Review(fleet_id="fleet-a", inference_id=older, reviewer="ann", verdict="accepted"))
    newer = write_result(factory, clip=second, result=_result(second, "m-1", [EventType.SPEEDING], "b"))
    replay = write_result(factory, clip=first, result=_result(first, "m-1", [EventType.DROWSINESS], "c"))
    assert newer != older and replay == newer
    with factory() as s:
        row = s.get(Clip, first.clip_id)
        assert (row.revision, row.end_ts, row.frames_uri) == (3, 115.0, "file:///blobs/clip.r3.npz")
        assert (
            s.scalar(select(func.count()).select_from(ClipSegment).where(ClipSegment.clip_id == row.clip_id))
            == 3
        )
        current = s.execute(
            text("SELECT id FROM current_inferences WHERE clip_id = :c"), {"c": row.clip_id}
        ).scalar()
        assert current == newer
        kept = s.get(Inference, older)
        assert (kept.clip_revision, kept.frames_uri) == (2, "file:///blobs/clip.r2.npz")
        assert set(s.scalars(select(Event.type).where(Event.inference_id == older))) == {
            "phone_use"
        }  # not "c"
        assert s.scalar(select(Instruction.text).where(Instruction.inference_id == older)) == "a"
        assert set(s.scalars(select(Event.type).where(Event.inference_id == newer))) == {"speeding"}
        facts = s.execute(
            text("SELECT type FROM event_facts WHERE clip_id = :c"), {"c": row.clip_id}
        ).scalars()
        assert set(facts) == {"speeding"}  # reports count the current revision's answer only
    with engine.connect() as conn:
        detail = clip_detail(conn, first.clip_id)
    assert detail is not None and detail.revision == 3 and detail.inference_id == newer
    assert [(r["reviewer"], r["clip_revision"], r["current"]) for r in detail.reviews] == [("ann", 2, False)]
    engine.dispose()


def test_a_lower_revision_with_footage_the_clip_lacks_is_another_lineage_and_wins(database_url: str) -> None:
    """Not an older revision (its segments are not among the stored ones): e.g. the blob store's window manifests
    were lost, or another run wrote the same vehicle, window and driver. The newest write replaces the clip."""
    engine = create_engine(database_url)
    factory = sessionmaker(engine)
    stored = _clip(f"veh-{uuid.uuid4().hex[:6]}").model_copy(update={"revision": 2})
    other = stored.model_copy(
        update={
            "revision": 1,
            "segments": [
                SegmentRef(
                    segment_id=f"{stored.vehicle_id}-other",
                    camera=View.ROAD,
                    start_ts=100.0,
                    end_ts=104.0,
                    video_uri="file:///blobs/other.mp4",
                )
            ],
            "end_ts": 104.0,
            "views": [View.ROAD],
        }
    )
    first = write_result(factory, clip=stored, result=_result(stored, "m-1", [EventType.PHONE_USE], "a"))
    second = write_result(factory, clip=other, result=_result(other, "m-1", [EventType.SPEEDING], "b"))
    assert second != first
    with factory() as s:
        row = s.get(Clip, stored.clip_id)
        assert (row.revision, row.end_ts, row.views) == (1, 104.0, ["road"])
        assert set(s.scalars(select(ClipSegment.segment_id).where(ClipSegment.clip_id == row.clip_id))) == {
            f"{stored.vehicle_id}-other"
        }
    engine.dispose()
