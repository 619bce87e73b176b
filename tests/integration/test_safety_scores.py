"""The driver safety score (issue 18, item 1) end to end on the real Postgres: clips and answers as the worker writes
them, reviews through the console's API, then the scores by hand against `drivecoach report scores`, the JSON API,
the scores page, the explanation page with its events, the dashboard, and a fleet's own weights
(`drivecoach console score-settings`). The browser walk is in test_console_browser.py."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import httpx
import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import sessionmaker
from typer.testing import CliRunner

from schemas.messages import ClipMessage, InferenceResult
from schemas.taxonomy import TAXONOMY, EventType
from streams.cli import app
from streams.console.auth import add_manager
from streams.inference.sink import write_result
from streams.infra.tenancy import ensure_fleet_role
from streams.settings import Settings
from tests.integration.console_data import PASSWORD, answer_for, clip_message, running_console, sign_in

pytestmark = pytest.mark.integration

WEEK = date(2026, 11, 16)  # a Monday
WEIGHT = {t.value: TAXONOMY[t].severity for t in EventType}


def _clip(
    fleet: str,
    driver: str,
    name: str,
    start: datetime,
    seconds: float,
    km: float | None,
    events: list[EventType],
) -> tuple[ClipMessage, InferenceResult]:
    clip = clip_message(fleet, f"{fleet}-{name}", f"{fleet}-veh", driver, start.timestamp(), seconds, 1, km)
    return clip, answer_for(clip, "model-scores", events, seconds)


@dataclass(frozen=True)
class Fleet:
    url: str
    engine: Engine
    fleet_id: str
    manager: str
    d1: str  # km known: week W 200 km, phone_use + speeding kept, following_distance dismissed; week W-1 clean
    d2: str  # no distance: week W 0.5 h, drowsiness unreviewed


@pytest.fixture(scope="module")
def fleet(own_database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    engine = create_engine(own_database_url)
    factory = sessionmaker(engine)
    fleet_id = f"fleet-score-{uuid.uuid4().hex[:6]}"
    other = f"fleet-score-other-{uuid.uuid4().hex[:6]}"
    d1, d2 = f"{fleet_id}/d1", f"{fleet_id}/d2"
    at = datetime(WEEK.year, WEEK.month, WEEK.day, 8, tzinfo=UTC)
    clips = [
        _clip(
            fleet_id,
            d1,
            "kept",
            at + timedelta(days=1),
            600,
            100.0,
            [EventType.PHONE_USE, EventType.SPEEDING],
        ),
        _clip(fleet_id, d1, "dismissed", at + timedelta(days=2), 600, 100.0, [EventType.FOLLOWING_DISTANCE]),
        _clip(fleet_id, d1, "last-week", at - timedelta(days=5), 600, 50.0, []),
        _clip(fleet_id, d2, "unreviewed", at + timedelta(days=3), 1800, None, [EventType.DROWSINESS]),
        _clip(other, f"{other}/d9", "other", at + timedelta(days=1), 600, 10.0, [EventType.PHONE_USE]),
    ]
    for clip, result in clips:
        write_result(factory, clip=clip, result=result)
    manager = f"manager@{fleet_id}"
    with factory() as session, session.begin():
        add_manager(session, username=manager, fleet_id=fleet_id, password=PASSWORD)
    settings = Settings(home=tmp_path_factory.mktemp("scores"))
    with running_console(settings, engine) as url:
        with httpx.Client(base_url=url, timeout=60) as client:
            csrf = sign_in(client, manager)
            for name, action in (("kept", "accept"), ("dismissed", "dismiss")):
                answer = client.post(
                    f"/api/v1/clips/{fleet_id}-{name}/review",
                    json={"action": action},
                    headers={"X-CSRF-Token": csrf},
                )
                assert answer.status_code == 200, answer.text
        yield Fleet(url, engine, fleet_id, manager, d1, d2)
    engine.dispose()


def _expected_d1(phone_use_weight: float = WEIGHT["phone_use"], penalty: float = 10.0) -> int:
    points = phone_use_weight + WEIGHT["speeding"]  # the dismissed following_distance does not count
    return max(0, round(100 - penalty * points / 2.0))  # 200 km


def _window() -> dict[str, str]:
    return {"since": str(WEEK - timedelta(days=7)), "until": str(WEEK + timedelta(days=7))}


def test_scores_follow_the_formula_with_reviewed_events_only(fleet: Fleet) -> None:
    with httpx.Client(base_url=fleet.url, timeout=60) as client:
        sign_in(client, fleet.manager)
        rows = client.get("/api/v1/reports/scores", params=_window()).json()
    got = {(r["driver"], r["week"]): r for r in rows}
    assert set(got) == {
        (fleet.d1, str(WEEK)),
        (fleet.d1, str(WEEK - timedelta(days=7))),
        (fleet.d2, str(WEEK)),
    }
    d1 = got[(fleet.d1, str(WEEK))]
    assert (d1["score"], d1["per"], d1["km"], d1["change"]) == (
        _expected_d1(),
        "100 km",
        200.0,
        _expected_d1() - 100,
    )
    assert d1["events"] == f"phone_use 1 x {WEIGHT['phone_use']}, speeding 1 x {WEIGHT['speeding']}"
    assert d1["formula"].endswith(f"= {_expected_d1()}")
    assert got[(fleet.d1, str(WEEK - timedelta(days=7)))]["score"] == 100  # driving, nothing counted
    d2 = got[(fleet.d2, str(WEEK))]
    assert (d2["score"], d2["per"], d2["km"], d2["hours"], d2["events"]) == (100, "hour", None, 0.5, "")
    assert all("other" not in r["driver"] for r in rows)  # another fleet's driver is not scored here


def test_the_command_line_gives_the_same_scores(fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIVECOACH_DATABASE_URL", fleet.engine.url.render_as_string(hide_password=False))
    window = _window()
    done = CliRunner().invoke(
        app,
        [
            "report",
            "scores",
            "--fleet",
            fleet.fleet_id,
            "--since",
            window["since"],
            "--until",
            window["until"],
            "--format",
            "json",
        ],
    )
    assert done.exit_code == 0, done.output
    rows = json.loads(done.output[done.output.index("[") :])
    assert {(r["driver"], r["week"], r["score"]) for r in rows} == {
        (fleet.d1, str(WEEK), _expected_d1()),
        (fleet.d1, str(WEEK - timedelta(days=7)), 100),
        (fleet.d2, str(WEEK), 100),
    }


def test_every_score_opens_onto_what_is_behind_it(fleet: Fleet) -> None:
    with httpx.Client(base_url=fleet.url, timeout=60) as client:
        sign_in(client, fleet.manager)
        listing = client.get("/scores", params={"weeks": 52})
        assert listing.status_code == 200
        links = re.findall(r'href="(/scores/explain\?[^"]+)"', listing.text)
        assert len(links) == 3
        page = client.get(
            "/scores/explain", params={"driver": fleet.d1, "week": str(WEEK + timedelta(days=3))}
        )
        assert page.status_code == 200  # any day of the week finds it
        assert f"= {_expected_d1()}" in page.text and "The week before: 100" in page.text
        clips = re.findall(r'href="/clips/([^"]+)"', page.text)
        assert clips == [
            f"{fleet.fleet_id}-kept",
            f"{fleet.fleet_id}-kept",
        ]  # its two counted events, one clip
        assert client.get(f"/clips/{clips[0]}").status_code == 200
        assert (
            client.get("/scores/explain", params={"driver": fleet.d2, "week": "2020-01-06"}).status_code
            == 404
        )
        assert (
            client.get("/scores/explain", params={"driver": "someone-else", "week": str(WEEK)}).status_code
            == 404
        )
        dashboard = client.get("/")
        assert 'id="dashboard-scores"' in dashboard.text and fleet.d1 in dashboard.text


def test_a_fleet_sets_its_own_weights_and_penalty(fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIVECOACH_DATABASE_URL", fleet.engine.url.render_as_string(hide_password=False))
    runner = CliRunner()

    def d1_score() -> int:
        with httpx.Client(base_url=fleet.url, timeout=60) as client:
            sign_in(client, fleet.manager)
            rows = client.get("/api/v1/reports/scores", params=_window()).json()
        return next(r["score"] for r in rows if r["driver"] == fleet.d1 and r["week"] == str(WEEK))

    try:
        done = runner.invoke(
            app, ["console", "score-settings", fleet.fleet_id, "--weight", "phone_use=5", "--per-100km", "8"]
        )
        assert done.exit_code == 0, done.output
        assert "weight phone_use" in done.output and "5" in done.output
        assert d1_score() == _expected_d1(phone_use_weight=5.0, penalty=8.0)
        with fleet.engine.begin() as conn:  # another fleet's role sees no fleet's settings but its own
            stranger = ensure_fleet_role(conn, f"fleet-score-stranger-{uuid.uuid4().hex[:6]}")
            conn.execute(text(f'SET LOCAL ROLE "{stranger}"'))
            assert conn.execute(text("SELECT count(*) FROM fleet_score_settings")).scalar_one() == 0
        refused = runner.invoke(app, ["console", "score-settings", fleet.fleet_id, "--weight", "texting=2"])
        assert refused.exit_code == 2 and "not an event type" in refused.output
        assert runner.invoke(app, ["console", "score-settings", "no-such-fleet"]).exit_code == 1
    finally:
        assert runner.invoke(app, ["console", "score-settings", fleet.fleet_id, "--reset"]).exit_code == 0
    assert d1_score() == _expected_d1()
