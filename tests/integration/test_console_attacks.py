"""Issue 17's attack categories against the console over real HTTP, as a signed-in manager of fleet A with fleet B in
the same database: another fleet's clips by id (IDOR), path traversal, SQL and HTML injection, cross-site requests
and session handling. Hostile input, sign-in brute force and direct SQL as a fleet role have their own modules
(test_console_hostile.py, test_tenancy*.py, test_service_roles.py); `pytest -m attack` runs them all, and the run's
summary counts the tests per category (tests/conftest.py)."""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import sessionmaker

from streams.settings import Settings
from tests.integration.console_data import PASSWORD, SeededFleet, running_console, seed_fleet, sign_in

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Site:
    url: str
    engine: Engine
    a: SeededFleet
    b: SeededFleet


@pytest.fixture(scope="module")
def site(own_database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    engine = create_engine(own_database_url)
    settings = Settings(home=tmp_path_factory.mktemp("attacks"))
    suffix = uuid.uuid4().hex[:6]
    a = seed_fleet(sessionmaker(engine), settings, f"fleet-atk-a-{suffix}", clips=2, seed=71)
    b = seed_fleet(sessionmaker(engine), settings, f"fleet-atk-b-{suffix}", clips=2, seed=72)
    with running_console(settings, engine) as url:
        yield Site(url, engine, a, b)
    engine.dispose()


@pytest.fixture
def manager(site: Site) -> Iterator[tuple[httpx.Client, str]]:
    """Fleet A's manager, signed in: the client (with the session cookie) and the session's CSRF token."""
    with httpx.Client(base_url=site.url, timeout=60) as client:
        yield client, sign_in(client, site.a.manager)


def _fleet_state(engine: Engine, fleet_id: str) -> tuple:
    """What an attack on a fleet's data would change: its reviews, events' statuses and instructions."""
    with engine.connect() as conn:
        return tuple(
            tuple(conn.execute(text(sql), {"f": fleet_id}).all())
            for sql in (
                "SELECT inference_id, verdict FROM reviews WHERE fleet_id = :f ORDER BY id",
                "SELECT id, coaching_status FROM events WHERE fleet_id = :f ORDER BY id",
                "SELECT inference_id, text FROM instructions WHERE fleet_id = :f ORDER BY inference_id",
            )
        )


# --- IDOR: another fleet's clips by their ids --------------------------------------------------------------------

IDOR_REQUESTS = {
    "clip page": ("GET", "/clips/{clip}", None),
    "clip API": ("GET", "/api/v1/clips/{clip}", None),
    "frame": ("GET", "/clips/{clip}/frames/0", None),
    "review API": ("POST", "/api/v1/clips/{clip}/review", "json"),
    "review form": ("POST", "/clips/{clip}/review", "form"),
}


@pytest.mark.attack("idor")
@pytest.mark.parametrize("request_name", list(IDOR_REQUESTS))
def test_another_fleets_clip_is_not_found_and_untouched(
    site: Site, manager: tuple[httpx.Client, str], request_name: str
) -> None:
    client, csrf = manager
    method, path, body = IDOR_REQUESTS[request_name]
    kwargs: dict = {}
    if body == "json":
        kwargs = {"json": {"action": "dismiss"}, "headers": {"X-CSRF-Token": csrf}}
    elif body == "form":
        kwargs = {"data": {"action": "dismiss", "csrf_token": csrf}}
    before = _fleet_state(site.engine, site.b.fleet_id)
    made_up = f"no-such-clip-{uuid.uuid4().hex[:8]}"
    missing = client.request(method, path.format(clip=made_up), **kwargs)
    for clip in (c.scenario_id for c in site.b.clips):
        answer = client.request(method, path.format(clip=clip), **kwargs)
        assert answer.status_code == 404, (request_name, answer.status_code, answer.text[:200])
        # no oracle: another fleet's clip answers exactly as a clip that does not exist
        assert answer.text.replace(clip, "ID") == missing.text.replace(made_up, "ID")
    assert _fleet_state(site.engine, site.b.fleet_id) == before


@pytest.mark.attack("idor")
def test_lists_and_reports_hold_only_the_own_fleet(site: Site, manager: tuple[httpx.Client, str]) -> None:
    client, _ = manager
    own = {c.scenario_id for c in site.a.clips}
    queue = client.get("/api/v1/queue").json()
    assert {item["clip_id"] for item in queue} <= own and queue
    everything = " ".join(
        client.get(path).text
        for path in (
            "/",
            "/queue",
            "/coaching",
            "/api/v1/queue",
            "/api/v1/coaching",
            "/api/v1/reports/events",
            "/rules",
            "/reports/rules.csv",
        )
    )
    assert site.b.fleet_id not in everything
    assert not any(c.scenario_id in everything for c in site.b.clips)


# --- path traversal ------------------------------------------------------------------------------------------------

TRAVERSALS = [
    "../../../../etc/passwd",
    "..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    "%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "%252e%252e%252fetc%252fpasswd",
    "....//....//etc/passwd",
    "..\\..\\..\\etc\\passwd",
    "%2Fetc%2Fpasswd",
    "file:%2F%2F%2Fetc%2Fpasswd",
    "clip%00.npz",
]


@pytest.mark.attack("traversal")
@pytest.mark.parametrize("where", ["/clips/{p}", "/api/v1/clips/{p}", "/clips/{p}/frames/0", "/static/{p}"])
def test_traversal_in_paths_reaches_no_file(manager: tuple[httpx.Client, str], where: str) -> None:
    client, _ = manager
    for payload in TRAVERSALS:
        answer = client.get(where.format(p=payload))
        assert answer.status_code in (400, 404, 405, 422), (where, payload, answer.status_code)
        assert "root:" not in answer.text  # /etc/passwd's first line


@pytest.mark.attack("traversal")
def test_a_frame_index_outside_the_clip_is_refused(site: Site, manager: tuple[httpx.Client, str]) -> None:
    client, _ = manager
    clip = site.a.clips[0].scenario_id
    for index in ("-1", "10001", "1e3", "0x10", "..%2F0"):
        assert client.get(f"/clips/{clip}/frames/{index}").status_code in (404, 422), index
    assert (
        client.get(f"/clips/{clip}/frames/9999").status_code == 404
    )  # within bounds, past the clip's frames


# --- injection -----------------------------------------------------------------------------------------------------

SQL_PAYLOADS = [
    "' OR '1'='1",
    "x' OR 1=1 --",
    "x'; DROP TABLE clips; --",
    "x' UNION SELECT clip_id, fleet_id FROM clips --",
    "x'; SET ROLE postgres; --",
    "$$; DROP TABLE reviews; $$",
]


def _counts(engine: Engine) -> tuple[int, ...]:
    with engine.connect() as conn:
        return tuple(
            conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one()
            for t in ("clips", "reviews", "events", "managers")
        )


@pytest.mark.attack("injection")
@pytest.mark.parametrize("payload", SQL_PAYLOADS)
def test_sql_in_ids_filters_and_sign_in_is_only_data(
    site: Site, manager: tuple[httpx.Client, str], payload: str
) -> None:
    client, csrf = manager
    before = _counts(site.engine)
    for path in (f"/clips/{payload}", f"/api/v1/clips/{payload}"):
        assert client.get(path).status_code in (404, 422), path  # 422: no clip id has such characters
    review = client.post(
        f"/api/v1/clips/{payload}/review", json={"action": "accept"}, headers={"X-CSRF-Token": csrf}
    )
    assert review.status_code in (404, 422)
    for query in ({"type": payload}, {"group": payload}, {"since": payload}):
        assert client.get("/api/v1/reports/events", params=query).status_code == 422, query
    # from an address of its own, so the per-address sign-in throttle leaves the other tests' sign-ins alone
    stranger = httpx.Client(
        base_url=site.url, timeout=60, transport=httpx.HTTPTransport(local_address="127.0.0.77")
    )
    with stranger:
        form = stranger.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
        answer = stranger.post(
            "/login", data={"username": payload, "password": payload, "csrf_token": token, "next": "/"}
        )
        assert answer.status_code in (400, 401), (payload, answer.status_code)
        assert "drivecoach_session" not in answer.cookies
    assert _counts(site.engine) == before


@pytest.mark.attack("injection")
def test_markup_in_a_correction_is_shown_as_text(site: Site, manager: tuple[httpx.Client, str]) -> None:
    """Stored cross-site scripting: a manager's instruction is shown to the other managers of the fleet."""
    client, csrf = manager
    clip = site.a.clips[1].scenario_id
    script = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    answer = client.post(
        f"/api/v1/clips/{clip}/review",
        json={"action": "correct", "instruction": script},
        headers={"X-CSRF-Token": csrf},
    )
    assert answer.status_code == 200, answer.text
    page = client.get(f"/clips/{clip}")
    assert script not in page.text and "&lt;script&gt;" in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'self'")  # and no inline script


# --- cross-site request forgery ------------------------------------------------------------------------------------


@pytest.mark.attack("csrf")
@pytest.mark.parametrize("token", ["missing", "wrong", "another session's"])
def test_state_changes_need_the_sessions_own_token(
    site: Site, manager: tuple[httpx.Client, str], token: str
) -> None:
    client, _ = manager
    with httpx.Client(base_url=site.url, timeout=60) as other:
        others = sign_in(
            other, site.a.manager
        )  # the same manager, another session: its token is not this one's
    forged = {"missing": None, "wrong": "x" * 32, "another session's": others}[token]
    clip = site.a.clips[0].scenario_id
    before = _fleet_state(site.engine, site.a.fleet_id)
    headers = {"X-CSRF-Token": forged} if forged else {}
    data = {"action": "dismiss", **({"csrf_token": forged} if forged else {})}
    assert (
        client.post(f"/api/v1/clips/{clip}/review", json={"action": "dismiss"}, headers=headers).status_code
        == 403
    )
    assert client.post(f"/clips/{clip}/review", data=data).status_code == 403
    assert client.post("/logout", data={"csrf_token": forged} if forged else {}).status_code == 403
    assert client.get("/api/v1/me").status_code == 200  # still signed in: the forged sign-out did nothing
    assert _fleet_state(site.engine, site.a.fleet_id) == before


@pytest.mark.attack("csrf")
def test_sign_in_needs_the_token_of_the_browsers_own_form(site: Site) -> None:
    """Login CSRF: a page elsewhere cannot sign a victim's browser into the attacker's account."""
    with httpx.Client(base_url=site.url, timeout=60) as attacker, httpx.Client(base_url=site.url) as victim:
        form = attacker.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
        answer = victim.post(
            "/login", data={"username": site.a.manager, "password": "x", "csrf_token": token, "next": "/"}
        )
        assert answer.status_code == 403 and "drivecoach_session" not in answer.cookies


# --- sessions ------------------------------------------------------------------------------------------------------


@pytest.mark.attack("sessions")
def test_the_session_cookie_is_guarded_and_only_its_hash_is_stored(
    site: Site, manager: tuple[httpx.Client, str]
) -> None:
    client, _ = manager
    token = client.cookies["drivecoach_session"]
    with httpx.Client(base_url=site.url, timeout=60) as fresh:
        form = fresh.get("/login")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
        signed = fresh.post(
            "/login",
            data={"username": site.a.manager, "password": PASSWORD, "csrf_token": csrf},
        )
    cookie = next(h for h in signed.headers.get_list("set-cookie") if h.startswith("drivecoach_session="))
    assert "httponly" in cookie.lower() and "samesite=lax" in cookie.lower()
    with site.engine.connect() as conn:
        stored = set(conn.execute(text("SELECT token_hash FROM console_sessions")).scalars())
    assert token not in stored and hashlib.sha256(token.encode()).hexdigest() in stored


@pytest.mark.attack("sessions")
def test_forged_and_fixed_session_cookies_are_not_sessions(site: Site) -> None:
    """A made-up cookie is no session; a cookie planted before sign-in (fixation) is not the one sign-in issues."""
    with httpx.Client(base_url=site.url, timeout=60) as client:
        for forged in ("x", "0" * 43, "' OR '1'='1", hashlib.sha256(b"guess").hexdigest()):
            cookie = {"Cookie": f"drivecoach_session={forged}"}
            assert client.get("/api/v1/me", headers=cookie).status_code == 401, forged
            assert client.get("/", headers=cookie).status_code in (303, 307), forged
        planted = "planted-by-an-attacker-000000000000000000"
        form = client.get("/login", headers={"Cookie": f"drivecoach_session={planted}"})
        token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
        signed = client.post(
            "/login",
            data={"username": site.a.manager, "password": PASSWORD, "csrf_token": token, "next": "/"},
            headers={
                "Cookie": f"drivecoach_session={planted}; drivecoach_login={form.cookies['drivecoach_login']}"
            },
        )
        assert signed.status_code == 303, signed.text[:300]
        issued = signed.cookies["drivecoach_session"]
        assert issued != planted
        assert (
            client.get("/api/v1/me", headers={"Cookie": f"drivecoach_session={planted}"}).status_code == 401
        )
        assert client.get("/api/v1/me", headers={"Cookie": f"drivecoach_session={issued}"}).status_code == 200
