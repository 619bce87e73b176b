"""The fleet settings page (issue 18, items 4 and 5 in the console): an admin sees the fleet's retention periods,
legal holds and what the retention job deleted, its webhook endpoints and how their deliveries fare; never another
fleet's, never a secret or a payload; other managers get a 403. Real HTTP, real Postgres, a real browser."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.orm import Session, sessionmaker

from streams.console.auth import add_manager
from streams.infra.tenancy import fleet_role
from streams.retention.admin import place_hold, set_periods
from streams.retention.policy import Periods
from streams.settings import Settings
from streams.webhooks.endpoints import add_endpoint
from tests.conftest import ARTIFACTS
from tests.integration.console_data import PASSWORD, SeededFleet, running_console, seed_fleet, sign_in

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Site:
    url: str
    engine: Engine
    a: SeededFleet
    admin: str
    b: SeededFleet
    secret: str


@pytest.fixture(scope="module")
def site(own_database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    engine = create_engine(own_database_url)
    settings = Settings(home=tmp_path_factory.mktemp("fleet-settings"))
    suffix = uuid.uuid4().hex[:6]
    a = seed_fleet(sessionmaker(engine), settings, f"fleet-set-a-{suffix}", clips=2, seed=93)
    b = seed_fleet(sessionmaker(engine), settings, f"fleet-set-b-{suffix}", clips=1, seed=94)
    admin = f"admin@{a.fleet_id}"
    with Session(engine) as session, session.begin():
        add_manager(session, username=admin, fleet_id=a.fleet_id, password=PASSWORD, is_admin=True)
        set_periods(session, a.fleet_id, Periods(video_days=30, results_days=365))
        place_hold(
            session,
            fleet_id=a.fleet_id,
            clip_id=a.clips[0].scenario_id,
            reason="claim 2026-118",
            held_by="legal@fleet",
        )
    with engine.begin() as conn:
        endpoint, secret = add_endpoint(
            conn, fleet_id=a.fleet_id, url="https://hooks.fleet-a.example/drivecoach", kinds=["review_done"]
        )
        add_endpoint(
            conn, fleet_id=b.fleet_id, url="https://hooks.fleet-b.example/in", kinds=["severe_event"]
        )
        conn.execute(
            text("""INSERT INTO webhook_outbox (fleet_id, endpoint_id, kind, subject, payload, status, attempts,
                                                last_error)
                    VALUES (:f, :e, 'review_done', 's1', '{"secret_payload": true}', 'dead', 12, 'HTTP 500'),
                           (:f, :e, 'review_done', 's2', '{}', 'delivered', 1, NULL)"""),
            {"f": a.fleet_id, "e": endpoint},
        )
    with running_console(settings, engine) as url:
        yield Site(url, engine, a, admin, b, secret)
    engine.dispose()


def test_an_admin_sees_the_fleets_retention_and_webhooks_and_nothing_else(site: Site) -> None:
    with httpx.Client(base_url=site.url, timeout=60) as admin:
        sign_in(admin, site.admin)
        assert 'href="/settings"' in admin.get("/").text
        page = admin.get("/settings")
    assert page.status_code == 200
    html = page.text
    assert "30 days after the clip" in html and "365 days after the clip" in html
    assert site.a.clips[0].scenario_id in html and "claim 2026-118" in html
    assert "https://hooks.fleet-a.example/drivecoach" in html and "HTTP 500" in html
    assert "fleet-b.example" not in html and site.b.fleet_id not in html
    assert site.secret not in html and "secret_payload" not in html


def test_other_managers_get_a_403(site: Site) -> None:
    with httpx.Client(base_url=site.url, timeout=60) as manager:
        sign_in(manager, site.a.manager)
        refused = manager.get("/settings")
        assert refused.status_code == 403 and 'id="forbidden"' in refused.text
        assert 'href="/settings"' not in manager.get("/").text


@pytest.mark.attack("direct_sql")
@pytest.mark.parametrize(
    "statement",
    [
        "SELECT secret FROM webhook_endpoints",
        "SELECT payload FROM webhook_outbox",
        "UPDATE webhook_endpoints SET url = 'https://evil.example/'",
        "DELETE FROM webhook_outbox",
        "INSERT INTO legal_holds (clip_id, fleet_id, reason, held_by) VALUES ('x', 'y', 'z', 'w')",
        "UPDATE fleet_retention SET video_days = 1",
    ],
)
def test_a_fleet_role_reads_its_settings_but_no_secret_and_changes_nothing(
    site: Site, statement: str
) -> None:
    with site.engine.connect() as conn:
        role = fleet_role(conn, site.a.fleet_id)
        conn.commit()
        with conn.begin():
            conn.execute(text(f'SET LOCAL ROLE "{role}"'))
            urls = conn.execute(text("SELECT url FROM webhook_endpoints")).scalars().all()
            assert urls == ["https://hooks.fleet-a.example/drivecoach"]  # its own only
        with pytest.raises(ProgrammingError, match="permission denied"), conn.begin():
            conn.execute(text(f'SET LOCAL ROLE "{role}"'))
            conn.execute(text(statement))


def test_the_settings_page_in_the_browser(browser, site: Site) -> None:
    context = browser.new_context(base_url=site.url, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    try:
        page.goto("/login")
        page.fill("input[name=username]", site.admin)
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.click("nav >> text=Settings")
        page.wait_for_url("**/settings")
        assert page.locator("#video-days").inner_text() == "30 days after the clip"
        assert page.locator("#holds tbody tr").count() == 1
        assert page.locator("#deliveries tbody tr").count() == 2
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "fleet-settings.png"), full_page=True)
    finally:
        context.close()
