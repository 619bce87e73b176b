"""The telemetry rules beside the model (issue 19, item 3) on the real Postgres: the worker's sink stores what the
rules find in each clip revision's telemetry (rule_events, migration 0023) forward only and idempotently, through the
pipeline's own login; a fleet's role reads only its fleet's and writes none; a deleted clip takes them along; and the
console's "Model vs rules" report (page, JSON, CSV) and clip page show where the model and the rules agree and
disagree, to that fleet's manager only."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date

import httpx
import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from schemas.messages import ClipMessage, DetectedEvent, TelemetrySample
from schemas.motion_rules import G
from schemas.taxonomy import TAXONOMY, EventType, View
from streams.console.auth import add_manager
from streams.console.rule_report import compare_rules
from streams.inference.sink import write_result
from streams.infra.roles import PIPELINE_GROUP, RETENTION_GROUP
from streams.infra.tenancy import fleet_role
from streams.settings import Settings
from tests.conftest import fresh_database
from tests.integration.console_data import PASSWORD, model_answer, running_console, sign_in
from tests.integration.harness import service_login

pytestmark = pytest.mark.integration
DAY = 1_767_225_600.0  # 2026-01-01 00:00 UTC
WINDOW = (date(2026, 1, 1), date(2026, 1, 2))


def _cruise(n: int = 40, **at: dict[int, float]) -> list[TelemetrySample]:
    """1 Hz samples at 60 km/h, steady on the device's own axes, with the readings `at` gives per second."""
    base = {"speed_kmh": 60.0, "accel_ms2": 0.0, "yaw_rate_dps": 0.0}
    return [
        TelemetrySample(t=float(t), **{k: at.get(k, {}).get(t, v) for k, v in base.items()}, **_limit(at, t))
        for t in range(n)
    ]


def _limit(at: dict[str, dict[int, float]], t: int) -> dict[str, float]:
    return {"speed_limit_kmh": at["speed_limit_kmh"][t]} if t in at.get("speed_limit_kmh", {}) else {}


def brake(*seconds: int) -> list[TelemetrySample]:
    return _cruise(accel_ms2={t: -0.5 * G for t in seconds})


def _event(kind: EventType, start: float, end: float) -> DetectedEvent:
    return DetectedEvent(type=kind, view=TAXONOMY[kind].view, start=start, end=end)


CALM = _cruise()
SPEEDING = _cruise(speed_kmh={t: 75.0 for t in range(40)}, speed_limit_kmh={t: 60.0 for t in range(5, 30)})
# name -> (telemetry, the model's events): clip by clip, what the report must make of them
CLIPS: dict[str, tuple[list[TelemetrySample], list[DetectedEvent]]] = {
    "agree": (brake(10, 11), [_event(EventType.HARSH_BRAKING, 9, 12)]),
    "rules-only": (brake(20), [_event(EventType.PHONE_USE, 0, 30)]),
    "model-only": (CALM, [_event(EventType.HARSH_TURN, 5, 8)]),
    "no-telemetry": ([], [_event(EventType.HARSH_BRAKING, 3, 4)]),
    "speeding": (SPEEDING, [_event(EventType.SPEEDING, 12, 20)]),
    "apart": (brake(5), [_event(EventType.HARSH_BRAKING, 30, 32)]),  # 25 s apart: both sides alone
    "no-limit": (CALM, [_event(EventType.SPEEDING, 1, 15)]),  # no known limit: the rules cannot tell
}
EXPECTED = [
    {"type": "harsh_braking", "both": 1, "rules_only": 2, "model_only": 1, "unjudged": 1},
    {"type": "harsh_acceleration", "both": 0, "rules_only": 0, "model_only": 0, "unjudged": 0},
    {"type": "harsh_turn", "both": 0, "rules_only": 0, "model_only": 1, "unjudged": 0},
    {"type": "speeding", "both": 1, "rules_only": 0, "model_only": 0, "unjudged": 1},
]


def clip_message(
    fleet: str, name: str, k: int, telemetry: list[TelemetrySample], *, revision: int = 1, day: float = DAY
) -> ClipMessage:
    start = day + 600 * k
    return ClipMessage(
        clip_id=f"{fleet}-{name}",
        fleet_id=fleet,
        vehicle_id=f"{fleet}-veh",
        driver_id=f"{fleet}-drv",
        start_ts=start,
        end_ts=start + 40,
        views=[View.ROAD, View.DRIVER],
        segments=[],
        frames_uri="file:///f.npz",
        num_frames=2,
        frame_width=28,
        frame_height=56,
        sample_fps=2.0,
        revision=revision,
        telemetry=telemetry,
    )


def write(factory: sessionmaker[Session], clip: ClipMessage, events: list[DetectedEvent]) -> int:
    return write_result(factory, clip=clip, result=model_answer(clip.clip_id, events, "Drive smoothly."))


def rule_rows(engine: Engine, clip_id: str) -> list[tuple]:
    with engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                text("""SELECT id, type, start_s, end_s, peak, thresholds, clip_revision FROM rule_events
                        WHERE clip_id = :c ORDER BY start_s, type"""),
                {"c": clip_id},
            )
        ]


@dataclass(frozen=True)
class Site:
    engine: Engine
    factory: sessionmaker[Session]
    url: str
    a: str
    b: str


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    """Fleet A: CLIPS in the window, and one the day before; fleet B: one clip the rules and the model agree on and
    one where they do not. Written through the pipeline's own login, as the worker writes."""
    with fresh_database() as url, service_login(url, PIPELINE_GROUP) as pipeline_url:
        engine, pipeline = create_engine(url), create_engine(pipeline_url)
        factory = sessionmaker(pipeline)
        suffix = uuid.uuid4().hex[:6]
        a, b = f"fleet-ra-{suffix}", f"fleet-rb-{suffix}"
        for k, (name, (telemetry, events)) in enumerate(CLIPS.items()):
            write(factory, clip_message(a, name, k, telemetry), events)
        write(factory, clip_message(a, "yesterday", 0, brake(3), day=DAY - 86_400), [])
        write(factory, clip_message(b, "agree", 0, brake(10)), [_event(EventType.HARSH_BRAKING, 10, 11)])
        write(factory, clip_message(b, "secret", 1, brake(7)), [])
        with Session(engine) as session, session.begin():
            for fleet in (a, b):
                add_manager(session, username=f"manager@{fleet}", fleet_id=fleet, password=PASSWORD)
        try:
            yield Site(engine, factory, url, a, b)
        finally:
            pipeline.dispose()
            engine.dispose()


def test_the_sink_stores_what_the_rules_find_in_each_clip(site: Site) -> None:
    rows = {name: rule_rows(site.engine, f"{site.a}-{name}") for name in CLIPS}
    assert [r[1:4] for r in rows["agree"]] == [("harsh_braking", 10.0, 11.0)]
    assert [r[1:4] for r in rows["apart"]] == [("harsh_braking", 5.0, 5.0)]
    assert [r[1:5] for r in rows["speeding"]] == [("speeding", 5.0, 29.0, 15.0)]
    assert rows["model-only"] == rows["no-telemetry"] == rows["no-limit"] == []
    assert {(r[5], r[6]) for rs in rows.values() for r in rs} == {("passenger", 1)}
    assert rows["agree"][0][4] == pytest.approx(0.5)


def test_replays_change_nothing_and_the_newest_revision_wins(site: Site) -> None:
    clip_id = f"{site.a}-revised"
    first = clip_message(site.a, "revised", 20, brake(4))
    write(site.factory, first, [])
    stored = rule_rows(site.engine, clip_id)
    write(site.factory, first, [])  # a replay: the same rows, not rewritten (their ids stay)
    assert rule_rows(site.engine, clip_id) == stored and len(stored) == 1
    # A late upload rebuilt the clip: revision 2's telemetry brakes twice, and turns.
    turned = brake(4, 30)
    turned[15] = turned[15].model_copy(update={"yaw_rate_dps": 40.0})
    newer = clip_message(site.a, "revised", 20, turned, revision=2)
    write(site.factory, newer, [])
    after = rule_rows(site.engine, clip_id)
    assert [(r[1], r[2], r[6]) for r in after] == [
        ("harsh_braking", 4.0, 2),
        ("harsh_turn", 15.0, 2),
        ("harsh_braking", 30.0, 2),
    ]
    write(site.factory, first, [])  # revision 1 again, after 2: written nothing
    assert rule_rows(site.engine, clip_id) == after
    write(site.factory, clip_message(site.a, "revised", 20, CALM, revision=3), [])  # nothing harsh any more
    assert rule_rows(site.engine, clip_id) == []
    with site.engine.begin() as conn:  # not part of the report's window's clips
        conn.execute(text("DELETE FROM inferences WHERE clip_id = :c"), {"c": clip_id})
        conn.execute(text("DELETE FROM clips WHERE clip_id = :c"), {"c": clip_id})


def test_a_deleted_clip_takes_its_rule_events(site: Site) -> None:
    """Retention deletes a clip's answers, then its row (streams/retention/store.py), through its own login, which
    holds no right on rule_events: the cascade takes them."""
    clip = clip_message(site.a, "deleted", 21, brake(2))
    write(site.factory, clip, [])
    assert rule_rows(site.engine, clip.clip_id)
    with service_login(site.url, RETENTION_GROUP) as url:
        job = create_engine(url)
        try:
            with job.begin() as conn:
                for table in ("instructions", "events"):
                    conn.execute(
                        text(
                            f"DELETE FROM {table} WHERE inference_id IN "
                            "(SELECT id FROM inferences WHERE clip_id = :c)"
                        ),
                        {"c": clip.clip_id},
                    )
                conn.execute(text("DELETE FROM inferences WHERE clip_id = :c"), {"c": clip.clip_id})
                assert (
                    conn.execute(text("DELETE FROM clips WHERE clip_id = :c"), {"c": clip.clip_id}).rowcount
                    == 1
                )
            with pytest.raises(DBAPIError, match="permission denied"), job.begin() as conn:
                conn.execute(text("SELECT count(*) FROM rule_events"))
        finally:
            job.dispose()
    assert rule_rows(site.engine, clip.clip_id) == []


@pytest.mark.attack("direct_sql")
def test_a_fleet_role_reads_only_its_own_rule_events_and_writes_none(site: Site) -> None:
    with site.engine.connect() as conn:
        owner = set(conn.execute(text("SELECT DISTINCT fleet_id FROM rule_events")).scalars())
    assert {site.a, site.b} <= owner
    for fleet in (site.a, site.b):
        with site.engine.begin() as conn:
            conn.execute(text(f'SET LOCAL ROLE "{fleet_role(conn, fleet)}"'))
            seen = set(conn.execute(text("SELECT DISTINCT fleet_id FROM rule_events")).scalars())  # no WHERE
            assert seen == {fleet}
    for statement in (
        "INSERT INTO rule_events (fleet_id, clip_id, clip_revision, type, start_s, end_s, peak, thresholds) "
        "VALUES (:a, :clip, 1, 'harsh_turn', 1, 2, 0.5, 'passenger')",
        "DELETE FROM rule_events WHERE clip_id = :clip",
        "UPDATE rule_events SET peak = 0 WHERE clip_id = :clip",
    ):
        with pytest.raises(DBAPIError, match="permission denied"), site.engine.begin() as conn:
            conn.execute(text(f'SET LOCAL ROLE "{fleet_role(conn, site.a)}"'))
            conn.execute(text(statement), {"a": site.a, "clip": f"{site.a}-agree"})
    assert len(rule_rows(site.engine, f"{site.a}-agree")) == 1


@pytest.mark.attack("direct_sql")
def test_no_writer_can_point_a_rule_event_at_another_fleets_clip(site: Site) -> None:
    with pytest.raises(DBAPIError, match="foreign key"), site.engine.begin() as conn:
        conn.execute(
            text("""INSERT INTO rule_events (fleet_id, clip_id, clip_revision, type, start_s, end_s, peak, thresholds)
                    VALUES (:a, :clip, 1, 'harsh_turn', 1, 2, 0.5, 'passenger')"""),
            {"a": site.a, "clip": f"{site.b}-secret"},
        )


def test_the_comparison_counts_clips_per_type_and_outcome(site: Site) -> None:
    with site.engine.begin() as conn:
        conn.execute(text(f'SET LOCAL ROLE "{fleet_role(conn, site.a)}"'))
        found = compare_rules(conn, site.a, *WINDOW)
    assert (found.clips, found.with_telemetry) == (len(CLIPS), len(CLIPS) - 1)  # not yesterday's
    assert found.types == EXPECTED
    outcomes = {(r["clip_id"].removeprefix(f"{site.a}-"), r["source"], r["outcome"]) for r in found.rows}
    assert outcomes == {
        ("agree", "rules", "both"),
        ("agree", "model", "both"),
        ("rules-only", "rules", "rules_only"),
        ("model-only", "model", "model_only"),
        ("no-telemetry", "model", "unjudged"),
        ("speeding", "rules", "both"),
        ("speeding", "model", "both"),
        ("apart", "rules", "rules_only"),
        ("apart", "model", "model_only"),
        ("no-limit", "model", "unjudged"),
    }
    assert len(found.disagreements) == 4
    with site.engine.begin() as conn:  # a wider tolerance joins the pair 25 s apart
        conn.execute(text(f'SET LOCAL ROLE "{fleet_role(conn, site.a)}"'))
        wide = compare_rules(conn, site.a, *WINDOW, tolerance_s=30.0)
    assert wide.types[0] == {
        "type": "harsh_braking",
        "both": 2,
        "rules_only": 1,
        "model_only": 0,
        "unjudged": 1,
    }


def _cells(page: str, row_id: str) -> list[int]:
    import re

    row = re.search(rf'<tr data-type="{row_id}">(.*?)</tr>', page, re.S)
    assert row is not None, row_id
    return [int(n) for n in re.findall(r'class="num[^"]*">(\d+)</td>', row.group(1))]


def test_the_console_shows_the_fleets_own_comparison(
    site: Site, tmp_path_factory: pytest.TempPathFactory
) -> None:
    settings = Settings(home=tmp_path_factory.mktemp("rules-console"))
    with running_console(settings, site.engine) as base:
        with (
            httpx.Client(base_url=base, follow_redirects=True) as a,
            httpx.Client(base_url=base, follow_redirects=True) as b,
        ):
            sign_in(a, f"manager@{site.a}")
            sign_in(b, f"manager@{site.b}")
            window = {"since": str(WINDOW[0]), "until": str(WINDOW[1])}

            page = a.get("/rules", params=window)
            assert page.status_code == 200 and "Model vs telemetry rules" in page.text
            for row in EXPECTED:
                assert _cells(page.text, str(row["type"])) == [
                    row["both"],
                    row["rules_only"],
                    row["model_only"],
                    row["unjudged"],
                ]
            assert (
                f'href="/clips/{site.a}-apart"' in page.text
                and f'href="/clips/{site.a}-rules-only"' in page.text
            )
            assert f'href="/clips/{site.a}-agree"' not in page.text  # agreed: not a disagreement
            assert site.b not in page.text
            assert a.get("/rules").status_code == 200  # the default window: the fleet's latest 28 days

            api = a.get("/api/v1/reports/rules", params=window).json()
            assert api["types"] == EXPECTED and len(api["rows"]) == 10
            assert {r["clip_id"] for r in api["rows"]} == {f"{site.a}-{n}" for n in CLIPS}

            got = a.get("/reports/rules.csv", params=window)
            assert got.status_code == 200 and got.headers["content-type"].startswith("text/csv")
            rows = list(csv.DictReader(io.StringIO(got.content.decode("utf-8-sig"))))
            assert len(rows) == 10 and {r["outcome"] for r in rows} == {
                "both",
                "rules_only",
                "model_only",
                "unjudged",
            }
            assert all(r["clip_id"].startswith(site.a) for r in rows)
            assert [(r["clip_id"], r["type"], r["source"], r["outcome"], r["occurred_at"]) for r in rows] == [
                (r["clip_id"], r["type"], r["source"], r["outcome"], r["occurred_at"]) for r in api["rows"]
            ]

            clip = a.get(f"/clips/{site.a}-apart")
            assert clip.status_code == 200
            assert (
                "not found by the model" in clip.text
                and "Not found by the rules: harsh braking at 30 s" in clip.text
            )
            detail = a.get(f"/api/v1/clips/{site.a}-agree").json()
            assert [(r["type"], r["start_s"], r["agrees"]) for r in detail["rule_events"]] == [
                ("harsh_braking", 10.0, True)
            ]

            # Fleet B's manager: B's clips only, and A's are not found.
            other = b.get("/api/v1/reports/rules", params=window).json()
            assert {r["clip_id"] for r in other["rows"]} == {f"{site.b}-agree", f"{site.b}-secret"}
            assert other["types"][0] == {
                "type": "harsh_braking",
                "both": 1,
                "rules_only": 1,
                "model_only": 0,
                "unjudged": 0,
            }
            assert b.get(f"/clips/{site.a}-apart").status_code == 404
            assert a.get(f"/api/v1/clips/{site.b}-secret").status_code == 404
            assert site.b not in a.get("/reports/rules.csv", params=window).text
