"""Coaching sessions (issue 18, item 2) over real HTTP on the real Postgres: a manager assigns a driver a session on
clips whose events wait for coaching; the driver opens the signed link without an account, sees the clips, events
and instructions, and acknowledges, which marks the events coached; overdue sessions come first; and the effect of
acknowledged sessions is the driver's event rate before against after, checked by hand."""

from __future__ import annotations

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

from schemas.taxonomy import EventType
from streams.cli import app
from streams.console import links
from streams.console.auth import add_manager
from streams.inference.sink import write_result
from streams.settings import Settings
from tests.conftest import ARTIFACTS
from tests.integration.console_data import PASSWORD, running_console, sign_in
from tests.integration.test_safety_scores import _clip

pytestmark = pytest.mark.integration
DAY = datetime(2026, 10, 7, 9, tzinfo=UTC)  # the session's day: a clip a week before, one a week after


@dataclass(frozen=True)
class Fleet:
    url: str
    engine: Engine
    fleet_id: str
    manager: str
    driver: str
    other_driver: str


@pytest.fixture(scope="module")
def fleet(own_database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    engine = create_engine(own_database_url)
    factory = sessionmaker(engine)
    fleet_id = f"fleet-coach-{uuid.uuid4().hex[:6]}"
    driver, other = f"{fleet_id}/d1", f"{fleet_id}/d2"
    clips = [
        _clip(
            fleet_id,
            driver,
            "before",
            DAY - timedelta(days=7),
            1800,
            None,
            [EventType.PHONE_USE, EventType.SPEEDING],
        ),
        _clip(fleet_id, driver, "before-2", DAY - timedelta(days=6), 1800, None, [EventType.DROWSINESS]),
        _clip(fleet_id, driver, "after", DAY + timedelta(days=7), 3600, None, []),
        _clip(fleet_id, other, "other", DAY - timedelta(days=7), 600, None, [EventType.SMOKING]),
    ]
    for clip, result in clips:
        write_result(factory, clip=clip, result=result)
    manager = f"manager@{fleet_id}"
    with factory() as session, session.begin():
        add_manager(session, username=manager, fleet_id=fleet_id, password=PASSWORD)
    settings = Settings(home=tmp_path_factory.mktemp("coaching"))
    with running_console(settings, engine) as url:
        with httpx.Client(base_url=url, timeout=60) as client:
            csrf = sign_in(client, manager)
            for name in ("before", "before-2", "other"):  # reviewed and kept: the events wait for coaching
                answer = client.post(
                    f"/api/v1/clips/{fleet_id}-{name}/review",
                    json={"action": "accept"},
                    headers={"X-CSRF-Token": csrf},
                )
                assert answer.status_code == 200, answer.text
        yield Fleet(url, engine, fleet_id, manager, driver, other)
    engine.dispose()


def _assign(
    client: httpx.Client, csrf: str, fleet: Fleet, clips: list[str], due: date, **extra: str
) -> httpx.Response:
    return client.post(
        "/coaching/sessions",
        data={
            "csrf_token": csrf,
            "driver": fleet.driver,
            "coach": "Sam",
            "due_on": str(due),
            "notes": "",
            "clip": clips,
            **extra,
        },
    )


def _driver_links(client: httpx.Client) -> dict[str, str]:
    page = client.get("/coaching").text
    return dict(re.findall(r'data-session="([^"]+)">.*?<a class="driver-link" href="([^"]+)"', page, re.S))


def test_a_manager_assigns_only_the_drivers_waiting_clips(fleet: Fleet) -> None:
    with httpx.Client(base_url=fleet.url, timeout=60) as client:
        csrf = sign_in(client, fleet.manager)
        form = client.get("/coaching/new", params={"driver": fleet.driver})
        offered = set(re.findall(r'name="clip" value="([^"]+)"', form.text))
        assert offered == {
            f"{fleet.fleet_id}-before",
            f"{fleet.fleet_id}-before-2",
        }  # "after" has nothing waiting
        due = date.today() + timedelta(days=7)
        assert _assign(client, "wrong", fleet, sorted(offered), due).status_code == 403
        stray = _assign(client, csrf, fleet, [f"{fleet.fleet_id}-other"], due)  # another driver's clip
        assert stray.status_code == 400 and "is not one of this driver" in stray.text
        assert _assign(client, csrf, fleet, [], due).status_code == 400
        assert _assign(client, csrf, fleet, sorted(offered), due, coach=" ").status_code == 400
        made = _assign(client, csrf, fleet, sorted(offered), due)
        assert made.status_code == 303 and made.headers["location"].startswith("/coaching?created=")
        assert len(_driver_links(client)) == 1


def test_the_driver_opens_the_link_without_an_account_and_acknowledges(fleet: Fleet) -> None:
    with httpx.Client(base_url=fleet.url, timeout=60) as manager:
        csrf = sign_in(manager, fleet.manager)
        _assign(manager, csrf, fleet, [f"{fleet.fleet_id}-before"], date.today() + timedelta(days=3))
        session, link = next(
            (s, url) for s, url in _driver_links(manager).items() if _clips_of(fleet.engine, s) == 1
        )
    with httpx.Client(base_url=fleet.url, timeout=60) as driver:  # no cookie at all
        page = driver.get(link)
        assert page.status_code == 200
        assert "phone use" in page.text and "speeding" in page.text and "Drive safely." in page.text
        frame = re.search(r'src="(/driver/[^"]+/frames/0)"', page.text).group(1)
        assert driver.get(frame).status_code in (200, 404)  # the test clips store no frames: never a 500
        assert (
            driver.get(f"{link}/clips/{fleet.fleet_id}-other/frames/0").status_code == 404
        )  # not in the session
        assert driver.get("/coaching").status_code in (303, 307)  # the link opens this session only
        tampered = link[:-3] + ("AAA" if not link.endswith("AAA") else "BBB")
        assert driver.get(tampered).status_code == 404
        done = driver.post(f"{link}/acknowledge")
        assert done.status_code == 303
        assert 'id="acknowledged"' in driver.get(link).text
    with fleet.engine.connect() as conn:
        statuses = (
            conn.execute(
                text("""SELECT e.coaching_status FROM events e JOIN inferences i ON i.id = e.inference_id
                    WHERE i.clip_id = :c"""),
                {"c": f"{fleet.fleet_id}-before"},
            )
            .scalars()
            .all()
        )
        untouched = (
            conn.execute(
                text("""SELECT e.coaching_status FROM events e JOIN inferences i ON i.id = e.inference_id
                    WHERE i.clip_id = :c"""),
                {"c": f"{fleet.fleet_id}-before-2"},
            )
            .scalars()
            .all()
        )
        acknowledged = conn.execute(
            text("SELECT acknowledged_at FROM coaching_sessions WHERE public_id = :p"), {"p": session}
        ).scalar_one()
    assert statuses == ["coached", "coached"] and untouched == ["needs_coaching"] and acknowledged is not None


def _clips_of(engine: Engine, session: str) -> int:
    with engine.connect() as conn:
        return conn.execute(
            text("""SELECT count(*) FROM coaching_session_clips c JOIN coaching_sessions s ON s.id = c.session_id
                    WHERE s.public_id = :p"""),
            {"p": session},
        ).scalar_one()


@pytest.mark.attack("sessions")
def test_an_expired_or_foreign_link_opens_nothing(fleet: Fleet) -> None:
    with fleet.engine.connect() as conn:
        secret = conn.execute(text("SELECT secret FROM console_link_keys")).scalar_one()
        session = conn.execute(text("SELECT public_id FROM coaching_sessions LIMIT 1")).scalar_one()
    now = datetime.now(UTC)
    expired = links.sign(secret, links.Link(fleet.fleet_id, session, now - timedelta(days=1)))
    foreign = links.sign(secret, links.Link("fleet-nobody", session, now + timedelta(days=1)))
    unknown = links.sign(secret, links.Link(fleet.fleet_id, uuid.uuid4(), now + timedelta(days=1)))
    forged = links.sign("not the key", links.Link(fleet.fleet_id, session, now + timedelta(days=1)))
    with httpx.Client(base_url=fleet.url, timeout=60) as driver:
        gone = driver.get(f"/driver/{expired}")
        assert gone.status_code == 410 and "ask your safety manager" in gone.text
        assert driver.post(f"/driver/{expired}/acknowledge").status_code == 410
        for token in (foreign, unknown, forged, "x", "x.y"):
            assert driver.get(f"/driver/{token}").status_code == 404, token
            assert driver.post(f"/driver/{token}/acknowledge").status_code == 404, token


def test_overdue_sessions_come_first(fleet: Fleet) -> None:
    with httpx.Client(base_url=fleet.url, timeout=60) as client:
        csrf = sign_in(client, fleet.manager)
        assert (
            _assign(
                client, csrf, fleet, [f"{fleet.fleet_id}-before-2"], date.today() - timedelta(days=2)
            ).status_code
            == 303
        )
        statuses = re.findall(r'<span class="status (\w+)">', client.get("/coaching").text)
    assert statuses[0] == "overdue"
    assert statuses == sorted(statuses, key=["overdue", "open", "acknowledged"].index)


def test_the_effect_of_coaching_is_the_rate_before_against_after(fleet: Fleet) -> None:
    """A session acknowledged, then dated to DAY: before, 3 kept events in 1 h of driving; after, none in 1 h."""
    with httpx.Client(base_url=fleet.url, timeout=60) as client:
        csrf = sign_in(client, fleet.manager)
        before = set(_driver_links(client))
        assert _assign(client, csrf, fleet, [f"{fleet.fleet_id}-before-2"], date.today()).status_code == 303
        session, link = next((s, url) for s, url in _driver_links(client).items() if s not in before)
        assert client.post(f"{link}/acknowledge").status_code == 303
        with fleet.engine.begin() as conn:
            conn.execute(
                text(
                    "UPDATE coaching_sessions SET created_at = :assigned, acknowledged_at = :ack WHERE public_id = :p"
                ),
                {"assigned": DAY, "ack": DAY + timedelta(days=1), "p": session},
            )
        page = client.get("/coaching").text
    row = re.search(rf'<tr data-session="{session}">(.*?)</tr>', page, re.S).group(1)
    cells = [c.strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
    assert cells[0] == fleet.driver and cells[3:] == ["3.0", "0.0", "-3.00"]
    done = CliRunner(
        env={"DRIVECOACH_DATABASE_URL": fleet.engine.url.render_as_string(hide_password=False)}
    ).invoke(app, ["report", "coaching", "--fleet", fleet.fleet_id, "--format", "csv"])
    assert done.exit_code == 0, done.output
    assert f"{session},{fleet.driver},Sam,{(DAY + timedelta(days=1)).date()},3.0,0.0,-3.0" in done.output


def test_assigning_and_acknowledging_in_the_browser(browser, fleet: Fleet) -> None:
    """The manager assigns a session from the coaching page; the driver, in a browser with no session, opens the
    link and acknowledges; the manager sees it acknowledged."""
    shots = ARTIFACTS / "browser"
    shots.mkdir(parents=True, exist_ok=True)
    with fleet.engine.begin() as conn:  # events waiting for coaching again, on the other driver's clip
        conn.execute(
            text("""UPDATE events SET coaching_status = 'needs_coaching' WHERE inference_id IN
                    (SELECT id FROM inferences WHERE clip_id = :c)"""),
            {"c": f"{fleet.fleet_id}-other"},
        )
    manager = browser.new_page(viewport={"width": 1280, "height": 900})
    manager.goto(f"{fleet.url}/login?next=/coaching")
    manager.fill("input[name=username]", fleet.manager)
    manager.fill("input[name=password]", PASSWORD)
    manager.click("button[type=submit]")
    manager.wait_for_url(f"{fleet.url}/coaching")
    manager.locator("table.coaching tr", has_text=fleet.other_driver).locator("a.assign").click()
    manager.wait_for_url(f"{fleet.url}/coaching/new**")
    manager.fill("input[name=coach]", "Alex")
    manager.fill("textarea[name=notes]", "Watch the clip with me on Friday.")
    manager.click("#assign")
    manager.wait_for_url(f"{fleet.url}/coaching?created=**")
    created = manager.url.rsplit("=", 1)[-1]
    row = manager.locator(f'#sessions tr[data-session="{created}"]')
    assert row.locator(".status").inner_text() == "open"
    manager.screenshot(path=shots / "11-coaching-sessions.png", full_page=True)
    link = row.locator("a.driver-link").get_attribute("href")

    context = browser.new_context(
        viewport={"width": 1100, "height": 900}
    )  # the driver: no cookie of the console
    driver = context.new_page()
    driver.goto(f"{fleet.url}{link}")
    assert "smoking" in driver.inner_text(".driver-events") and "Watch the clip" in driver.inner_text(
        "#notes"
    )
    driver.screenshot(path=shots / "12-driver-link.png", full_page=True)
    driver.click("#acknowledge")
    driver.wait_for_selector("#acknowledged")
    context.close()

    manager.reload()
    assert manager.locator(f'#sessions tr[data-session="{created}"] .status').inner_text() == "acknowledged"
    manager.close()
