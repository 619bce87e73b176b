"""The report views of migration 0002 on the real Postgres: events with severity and day, one inference per clip
even after a re-inference, driving time for rates, and the review queue (unreviewed, most severe first)."""

from __future__ import annotations

import importlib
import uuid
from datetime import date

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import sessionmaker

from schemas.db import Review
from schemas.messages import ClipMessage, DetectedEvent, InferenceResult
from schemas.prompts import PROMPT_VERSION
from schemas.taxonomy import TAXONOMY, EventType
from streams.sink import write_result

pytestmark = pytest.mark.integration
DAY = 1_767_225_600.0  # 2026-01-01 00:00 UTC


def _event(t: EventType, start: float = 1.0) -> DetectedEvent:
    return DetectedEvent(type=t, view=TAXONOMY[t].view, start=start, end=start + 1)


def _write(factory, fleet: str, vehicle: str, k: int, events: list[DetectedEvent], version: str = "m1") -> int:
    clip = ClipMessage(clip_id=f"{fleet}-{vehicle}-{k}", fleet_id=fleet, vehicle_id=f"{fleet}-{vehicle}",
                       driver_id=f"{fleet}-drv-{vehicle}", start_ts=DAY + 3600 * k, end_ts=DAY + 3600 * k + 60,
                       views=["road", "driver"], segments=[], frames_uri="file:///f.npz", num_frames=2,
                       frame_width=28, frame_height=56, sample_fps=2.0)
    return write_result(factory, clip=clip, result=InferenceResult(
        clip_id=clip.clip_id, model_version=version, prompt_version=PROMPT_VERSION, events=events, description="",
        instruction="x", raw_turn1="{}", raw_turn2="x", valid=True, latency_ms=1, prompt_tokens=1, generated_tokens=1))


def test_report_views(database_url: str) -> None:
    engine = create_engine(database_url)
    factory = sessionmaker(engine)
    fleet = f"fleet-r{uuid.uuid4().hex[:6]}"
    first = _write(factory, fleet, "a", 0, [_event(EventType.PHONE_USE), _event(EventType.HARSH_BRAKING, 5)])
    _write(factory, fleet, "a", 0, [_event(EventType.PHONE_USE)], version="m2")  # re-inferred: only m2 counts
    calm = _write(factory, fleet, "b", 1, [])
    severe = _write(factory, fleet, "b", 2, [_event(EventType.FORWARD_COLLISION_RISK)])
    reviewed = _write(factory, fleet, "b", 3, [_event(EventType.DROWSINESS)])
    with factory() as session, session.begin():
        session.add(Review(fleet_id=fleet, inference_id=reviewed, reviewer="m", verdict="accepted"))
    with engine.connect() as conn:
        events = conn.execute(text("SELECT type, severity, day, coaching_status, model_version FROM report_events "
                                   "WHERE fleet_id = :f ORDER BY type"), {"f": fleet}).all()
        queue = conn.execute(text("SELECT inference_id, max_severity, events FROM review_queue WHERE fleet_id = :f "
                                  "ORDER BY max_severity DESC, occurred_at DESC"), {"f": fleet}).all()
        driving = dict(conn.execute(text("SELECT vehicle_id, sum(seconds) FROM report_driving WHERE fleet_id = :f "
                                         "GROUP BY vehicle_id"), {"f": fleet}).all())
    assert [(e.type, e.severity, e.day, e.coaching_status) for e in events] == [
        ("drowsiness", TAXONOMY[EventType.DROWSINESS].severity, date(2026, 1, 1), "needs_review"),
        ("forward_collision_risk", 3, date(2026, 1, 1), "needs_review"),
        ("phone_use", TAXONOMY[EventType.PHONE_USE].severity, date(2026, 1, 1), "needs_review"),
    ]  # harsh_braking was only in m1's answer for that clip: m2's answer replaced it
    assert {e.model_version for e in events if e.type == "phone_use"} == {"m2"}
    ids = [q.inference_id for q in queue]
    assert ids[0] == severe and calm in ids  # most severe first
    assert reviewed not in ids and first not in ids  # reviewed, and superseded by a newer version
    assert driving == {f"{fleet}-a": 60.0, f"{fleet}-b": 180.0}
    engine.dispose()


def test_the_seeded_taxonomy_matches_the_code() -> None:
    seed = importlib.import_module("schemas.migrations.versions.0002_reports").SEED
    assert seed == [(t.value, d.view.value, d.severity, d.definition) for t, d in TAXONOMY.items()]


def test_report_queries_rates_trend_and_queue(database_url: str) -> None:
    from streams.reports import Filters, event_rates, review_queue, trend

    engine = create_engine(database_url)
    factory = sessionmaker(engine)
    fleet = f"fleet-q{uuid.uuid4().hex[:6]}"
    _write(factory, fleet, "a", 0, [_event(EventType.PHONE_USE), _event(EventType.PHONE_USE, 20)])  # day 1
    _write(factory, fleet, "a", 30, [_event(EventType.PHONE_USE)])  # day 2 (30 h later)
    _write(factory, fleet, "b", 31, [_event(EventType.FORWARD_COLLISION_RISK)])
    with engine.connect() as conn:
        rates = event_rates(conn, Filters(fleet=fleet), group="vehicle", period="day")
        by = {(r["who"], str(r["period"]), r["type"]): (r["events"], float(r["hours"]), float(r["per_hour"]))
              for r in rates}
        assert by[(f"{fleet}-a", "2026-01-01", "phone_use")] == (2, round(60 / 3600, 3), round(2 / (60 / 3600), 2))
        assert by[(f"{fleet}-b", "2026-01-02", "forward_collision_risk")][0] == 1
        assert rates[0]["severity"] == 3  # the latest period first, the most severe first within it
        change = trend(conn, Filters(fleet=fleet, since=date(2026, 1, 2), until=date(2026, 1, 3)), group="vehicle")
        assert {(r["who"], r["type"]): (r["events"], r["previous"]) for r in change} == {
            (f"{fleet}-a", "phone_use"): (1, 2), (f"{fleet}-b", "forward_collision_risk"): (1, 0)}
        queue = review_queue(conn, Filters(fleet=fleet))
        assert [q["clip_id"] for q in queue] == [f"{fleet}-b-31", f"{fleet}-a-30", f"{fleet}-a-0"]  # severe, recent
    engine.dispose()
