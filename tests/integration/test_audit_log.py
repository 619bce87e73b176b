"""The audit log (issue 18, item 7) over real HTTP on the real Postgres: sign-ins, reviews, coaching assigned and
acknowledged are recorded with the action; the fleet's admins read them, other managers get a 403, and no fleet sees
another's; nobody but the owner can change or delete a row, and the console's own login writes only sign-ins."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta

import httpx
import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import DBAPIError, ProgrammingError
from sqlalchemy.orm import Session, sessionmaker

from streams.console.auth import add_manager
from streams.infra.roles import CONSOLE_GROUP
from streams.infra.tenancy import fleet_role
from streams.settings import Settings
from tests.conftest import ARTIFACTS
from tests.integration.console_data import PASSWORD, SeededFleet, running_console, seed_fleet, sign_in
from tests.integration.harness import service_login

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Site:
    url: str
    engine: Engine
    a: SeededFleet
    admin: str
    b: SeededFleet
    b_admin: str


@pytest.fixture(scope="module")
def site(own_database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    engine = create_engine(own_database_url)
    settings = Settings(home=tmp_path_factory.mktemp("audit"))
    suffix = uuid.uuid4().hex[:6]
    a = seed_fleet(sessionmaker(engine), settings, f"fleet-audit-a-{suffix}", clips=2, seed=91)
    b = seed_fleet(sessionmaker(engine), settings, f"fleet-audit-b-{suffix}", clips=1, seed=92)
    admins = (f"admin@{a.fleet_id}", f"admin@{b.fleet_id}")
    with Session(engine) as session, session.begin():
        for admin, fleet in zip(admins, (a, b), strict=True):
            add_manager(session, username=admin, fleet_id=fleet.fleet_id, password=PASSWORD, is_admin=True)
    with running_console(settings, engine) as url:
        yield Site(url, engine, a, admins[0], b, admins[1])
    engine.dispose()


def _rows(client: httpx.Client) -> list[list[str]]:
    page = client.get("/audit")
    assert page.status_code == 200, page.status_code
    body = re.search(r'<table id="audit">.*?<tbody>(.*?)</tbody>', page.text, re.S).group(1)
    return [
        [re.sub(r"\s+", " ", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
        for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)
    ]


def test_actions_are_recorded_and_only_the_fleets_admins_read_them(site: Site) -> None:
    clip = site.a.clips[0].scenario_id
    with httpx.Client(base_url=site.url, timeout=60) as manager:
        csrf = sign_in(manager, site.a.manager)
        assert (
            manager.post(
                f"/api/v1/clips/{clip}/review", json={"action": "accept"}, headers={"X-CSRF-Token": csrf}
            ).status_code
            == 200
        )
        refused = manager.get("/audit")
        assert refused.status_code == 403 and 'id="forbidden"' in refused.text
        assert 'href="/audit"' not in manager.get("/").text
        driver = site.a.clips[0].driver_id
        assigned = manager.post(
            "/coaching/sessions",
            data={
                "csrf_token": csrf,
                "driver": driver,
                "coach": "Kim",
                "due_on": str(date.today() + timedelta(days=3)),
                "clip": [clip],
            },
        )
        assert assigned.status_code == 303, assigned.text[:300]
        link = re.search(r'<a class="driver-link" href="([^"]+)"', manager.get("/coaching").text).group(1)
    with httpx.Client(base_url=site.url, timeout=60) as driver_client:
        assert driver_client.post(f"{link}/acknowledge").status_code == 303
    with httpx.Client(base_url=site.url, timeout=60) as admin:
        sign_in(admin, site.admin)
        assert 'href="/audit"' in admin.get("/").text
        rows = _rows(admin)
    actions = [(r[1], r[2], r[3]) for r in rows]
    assert (site.a.manager, "sign in", "") in actions and (site.admin, "sign in", "") in actions
    assert (site.a.manager, "review", clip) in actions
    assert any(who == site.a.manager and action == "coaching assigned" for who, action, _ in actions)
    assert any(who == "driver (link)" and action == "coaching acknowledged" for who, action, _ in actions)
    review = next(r for r in rows if r[2] == "review")
    assert "action: accept" in review[4]
    assert next(r for r in rows if r[2] == "sign in")[5] == "127.0.0.1"
    with httpx.Client(base_url=site.url, timeout=60) as other:
        sign_in(other, site.b_admin)
        theirs = _rows(other)
    assert {r[1] for r in theirs} == {site.b_admin}  # fleet B's admin sees fleet B's sign-in only


def test_an_admin_reads_the_log_in_the_browser(browser, site: Site) -> None:
    context = browser.new_context(base_url=site.url, viewport={"width": 1280, "height": 800})
    page = context.new_page()
    try:
        page.goto("/login")
        page.fill("input[name=username]", site.admin)
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.click("text=Audit log")
        page.wait_for_url("**/audit")
        actions = page.locator("#audit tbody tr td:nth-child(3)").all_inner_texts()
        assert "sign in" in actions and "review" in actions, actions
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "audit-log.png"), full_page=True)
    finally:
        context.close()


@pytest.mark.attack("direct_sql")
@pytest.mark.parametrize("statement", ["UPDATE audit_log SET action = 'review'", "DELETE FROM audit_log"])
def test_a_fleet_role_cannot_rewrite_the_log(site: Site, statement: str) -> None:
    with pytest.raises(ProgrammingError, match="permission denied"), site.engine.begin() as conn:
        conn.execute(text(f'SET LOCAL ROLE "{fleet_role(conn, site.a.fleet_id)}"'))
        conn.execute(text(statement))


@pytest.mark.attack("direct_sql")
def test_the_console_login_writes_sign_ins_only_and_reads_nothing(site: Site) -> None:
    with service_login(site.engine.url.render_as_string(hide_password=False), CONSOLE_GROUP) as url:
        console = create_engine(url)
        try:
            insert = text("INSERT INTO audit_log (fleet_id, username, action) VALUES (:f, 'x', :a)")
            with console.begin() as conn:
                conn.execute(insert, {"f": site.a.fleet_id, "a": "sign_in"})
            with pytest.raises(DBAPIError, match="row-level security"), console.begin() as conn:
                conn.execute(insert, {"f": site.a.fleet_id, "a": "review"})
            with pytest.raises(ProgrammingError, match="permission denied"), console.begin() as conn:
                conn.execute(text("SELECT count(*) FROM audit_log"))
        finally:
            console.dispose()
