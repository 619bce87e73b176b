"""The report views of migrations 0002 and 0003 on the real Postgres: events with severity and day, one inference
per clip even after a re-inference, driving time and distance for rates, and the review queue (unreviewed, most
severe first)."""

from __future__ import annotations

import importlib
import uuid
from datetime import date

import pytest
from alembic import command
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.orm import sessionmaker

from schemas.db import Review
from schemas.messages import ClipMessage, DetectedEvent, InferenceResult, SegmentRef
from schemas.migrations import alembic_config, upgrade
from schemas.prompts import PROMPT_VERSION
from schemas.taxonomy import TAXONOMY, EventType
from streams.inference.sink import write_result
from tests.conftest import fresh_database

pytestmark = pytest.mark.integration
DAY = 1_767_225_600.0  # 2026-01-01 00:00 UTC


def _event(t: EventType, start: float = 1.0) -> DetectedEvent:
    return DetectedEvent(type=t, view=TAXONOMY[t].view, start=start, end=start + 1)


def _write(
    factory,
    fleet: str,
    vehicle: str,
    k: int,
    events: list[DetectedEvent],
    version: str = "m1",
    *,
    segments: list[SegmentRef] | None = None,
    second_minute: bool = False,
) -> int:
    """A 60-s clip k hours into DAY (or the minute after that, `second_minute`), with the given segments."""
    start = DAY + 3600 * k + (60 if second_minute else 0)
    clip = ClipMessage(
        clip_id=f"{fleet}-{vehicle}-{k}{'b' if second_minute else ''}",
        fleet_id=fleet,
        vehicle_id=f"{fleet}-{vehicle}",
        driver_id=f"{fleet}-drv-{vehicle}",
        start_ts=start,
        end_ts=start + 60,
        views=["road", "driver"],
        segments=segments or [],
        frames_uri="file:///f.npz",
        num_frames=2,
        frame_width=28,
        frame_height=56,
        sample_fps=2.0,
    )
    return write_result(
        factory,
        clip=clip,
        result=InferenceResult(
            clip_id=clip.clip_id,
            model_version=version,
            prompt_version=PROMPT_VERSION,
            events=events,
            description="",
            instruction="x",
            raw_turn1="{}",
            raw_turn2="x",
            valid=True,
            latency_ms=1,
            prompt_tokens=1,
            generated_tokens=1,
        ),
    )


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
        events = conn.execute(
            text(
                "SELECT type, severity, day, coaching_status, model_version FROM report_events "
                "WHERE fleet_id = :f ORDER BY type"
            ),
            {"f": fleet},
        ).all()
        queue = conn.execute(
            text(
                "SELECT inference_id, max_severity, events FROM review_queue WHERE fleet_id = :f "
                "ORDER BY max_severity DESC, occurred_at DESC"
            ),
            {"f": fleet},
        ).all()
        driving = dict(
            conn.execute(
                text(
                    "SELECT vehicle_id, sum(seconds) FROM report_driving WHERE fleet_id = :f "
                    "GROUP BY vehicle_id"
                ),
                {"f": fleet},
            ).all()
        )
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
    from streams.console.reports import Filters, event_rates, review_queue, trend

    engine = create_engine(database_url)
    factory = sessionmaker(engine)
    fleet = f"fleet-q{uuid.uuid4().hex[:6]}"
    _write(factory, fleet, "a", 0, [_event(EventType.PHONE_USE), _event(EventType.PHONE_USE, 20)])  # day 1
    _write(factory, fleet, "a", 30, [_event(EventType.PHONE_USE)])  # day 2 (30 h later)
    _write(factory, fleet, "b", 31, [_event(EventType.FORWARD_COLLISION_RISK)])
    with engine.connect() as conn:
        rates = event_rates(conn, Filters(fleet=fleet), group="vehicle", period="day")
        by = {
            (r["who"], str(r["period"]), r["type"]): (r["events"], float(r["hours"]), float(r["per_hour"]))
            for r in rates
        }
        assert by[(f"{fleet}-a", "2026-01-01", "phone_use")] == (
            2,
            round(60 / 3600, 3),
            round(2 / (60 / 3600), 2),
        )
        assert by[(f"{fleet}-b", "2026-01-02", "forward_collision_risk")][0] == 1
        assert rates[0]["severity"] == 3  # the latest period first, the most severe first within it
        change = trend(
            conn, Filters(fleet=fleet, since=date(2026, 1, 2), until=date(2026, 1, 3)), group="vehicle"
        )
        assert {(r["who"], r["type"]): (r["events"], r["previous"]) for r in change} == {
            (f"{fleet}-a", "phone_use"): (1, 2),
            (f"{fleet}-b", "forward_collision_risk"): (1, 0),
        }
        queue = review_queue(conn, Filters(fleet=fleet))
        assert [q["clip_id"] for q in queue] == [
            f"{fleet}-b-31",
            f"{fleet}-a-30",
            f"{fleet}-a-0",
        ]  # severe, recent
    engine.dispose()


def _seg(
    fleet: str, name: str, camera: str, k: int, start_s: float, end_s: float, km: float | None
) -> SegmentRef:
    """A segment from `start_s` to `end_s` seconds after hour k of DAY."""
    return SegmentRef(
        segment_id=f"{fleet}-{name}",
        camera=camera,
        start_ts=DAY + 3600 * k + start_s,
        end_ts=DAY + 3600 * k + end_s,
        video_uri=f"file:///{name}.mp4",
        distance_km=km,
    )


def test_distance_counts_each_segment_once_and_gives_rates_per_100_km(database_url: str) -> None:
    from streams.console.reports import Filters, event_rates

    engine = create_engine(database_url)
    factory = sessionmaker(engine)
    fleet = f"fleet-k{uuid.uuid4().hex[:6]}"
    phone = [_event(EventType.PHONE_USE), _event(EventType.PHONE_USE, 20)]
    # a: two road segments and a (skewed) driver segment with the same telemetry: the road's 0.4 + 0.6 km, once
    _write(
        factory,
        fleet,
        "a",
        0,
        phone,
        segments=[
            _seg(fleet, "a-r0", "road", 0, 0, 30, 0.4),
            _seg(fleet, "a-r1", "road", 0, 30, 60, 0.6),
            _seg(fleet, "a-d0", "driver", 0, 0.25, 60.25, 1.0),
        ],
    )
    # c: one 2-km road segment cut into two clips: 1 km each, 2 km in all (not 4)
    long_road = _seg(fleet, "c-r0", "road", 2, 0, 120, 2.0)
    _write(factory, fleet, "c", 2, [_event(EventType.SPEEDING)], segments=[long_road])
    _write(factory, fleet, "c", 2, [], segments=[long_road], second_minute=True)
    # d: the road camera sent no telemetry, the driver camera did: its 0.5 km
    _write(
        factory,
        fleet,
        "d",
        3,
        [_event(EventType.DISTRACTION)],
        segments=[_seg(fleet, "d-r0", "road", 3, 0, 60, None), _seg(fleet, "d-d0", "driver", 3, 0, 60, 0.5)],
    )
    # b: no telemetry at all, and e: a clip without segments: distance unknown, not zero
    _write(
        factory,
        fleet,
        "b",
        4,
        [_event(EventType.DROWSINESS)],
        segments=[_seg(fleet, "b-r0", "road", 4, 0, 60, None), _seg(fleet, "b-d0", "driver", 4, 0, 60, None)],
    )
    _write(factory, fleet, "e", 5, [_event(EventType.DROWSINESS)])
    # f: one clip with a distance and one without on the same day: the day's km is unknown (a partial sum would
    # inflate the rate), km_seconds says how much of it is covered
    _write(
        factory,
        fleet,
        "f",
        6,
        [_event(EventType.PHONE_USE)],
        segments=[_seg(fleet, "f-r0", "road", 6, 0, 60, 1.0)],
    )
    _write(factory, fleet, "f", 7, [], segments=[_seg(fleet, "f-r1", "road", 7, 0, 60, None)])
    with engine.connect() as conn:
        stored = dict(
            conn.execute(
                text("SELECT segment_id, distance_km FROM segments WHERE fleet_id = :f"), {"f": fleet}
            ).all()
        )
        driving = {
            r.vehicle_id.rsplit("-", 1)[-1]: (r.seconds, r.km, r.km_seconds)
            for r in conn.execute(
                text("SELECT vehicle_id, seconds, km, km_seconds FROM report_driving WHERE fleet_id = :f"),
                {"f": fleet},
            )
        }
        rates = event_rates(conn, Filters(fleet=fleet), group="vehicle", period="day")
    assert stored[f"{fleet}-a-r1"] == 0.6 and stored[f"{fleet}-b-r0"] is None
    assert driving["a"] == (60.0, pytest.approx(1.0), 60.0)
    assert driving["c"] == (120.0, pytest.approx(2.0), 120.0)
    assert driving["d"] == (60.0, pytest.approx(0.5), 60.0)
    assert driving["b"] == (60.0, None, 0.0) and driving["e"] == (60.0, None, 0.0)
    assert driving["f"] == (120.0, None, 60.0)
    by = {r["who"].rsplit("-", 1)[-1]: r for r in rates}
    assert (by["a"]["events"], float(by["a"]["km"]), float(by["a"]["per_100km"])) == (2, 1.0, 200.0)
    assert (float(by["c"]["km"]), float(by["c"]["per_100km"])) == (2.0, 50.0)
    assert (float(by["d"]["km"]), float(by["d"]["per_100km"])) == (0.5, 200.0)
    for unknown in "bef":
        assert by[unknown]["km"] is None and by[unknown]["per_100km"] is None
        assert by[unknown]["per_hour"] is not None  # the rate per hour is still there
    engine.dispose()


def test_0003_adds_distance_and_its_downgrade_restores_0002() -> None:
    with fresh_database(revision=None) as url:
        engine = create_engine(url)
        try:

            def columns(table: str) -> list[str]:
                return [c["name"] for c in inspect(engine).get_columns(table)]

            upgrade(url, "0003")
            assert "distance_km" in columns("segments")
            assert columns("report_driving") == [
                "fleet_id",
                "vehicle_id",
                "driver_id",
                "day",
                "seconds",
                "km",
                "km_seconds",
            ]
            command.downgrade(alembic_config(url), "0002")
            assert "distance_km" not in columns("segments")
            assert columns("report_driving") == ["fleet_id", "vehicle_id", "driver_id", "day", "seconds"]
            upgrade(url, "0003")
            assert "km" in columns("report_driving")
        finally:
            engine.dispose()
