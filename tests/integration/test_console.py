"""The console over real HTTP (uvicorn on loopback) and the real Postgres: sign-in, CSRF, fleet isolation, and
what each review action writes — the rows the training export then reads."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session, sessionmaker

from schemas.prompts import parse_turn1
from streams.settings import Settings
from tests.integration.console_data import PASSWORD, running_console, seed_fleet, sign_in, write_scenario
from training.export import reviewed_examples

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def console(own_database_url: str, tmp_path_factory: pytest.TempPathFactory):
    engine = create_engine(own_database_url)
    factory = sessionmaker(engine)
    settings = Settings(home=tmp_path_factory.mktemp("console"))
    suffix = uuid.uuid4().hex[:6]
    a = seed_fleet(factory, settings, f"fleet-a-{suffix}", clips=4, seed=31)
    b = seed_fleet(factory, settings, f"fleet-b-{suffix}", clips=2, seed=32)
    with running_console(settings, engine) as url:
        yield url, engine, a, b, settings
    engine.dispose()


def _client(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, follow_redirects=True, timeout=30)


@pytest.mark.attack("csrf")
def test_sign_in_needs_the_right_password_and_the_forms_token(console) -> None:
    url, _, a, _, _ = console
    with _client(url) as client:
        assert client.get("/").url.path == "/login"  # a page without a session goes to sign-in
        assert client.get("/api/v1/me").status_code == 401
        form = client.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
        wrong = client.post("/login", data={"username": a.manager, "password": "not it", "csrf_token": token})
        assert wrong.status_code == 401 and "Wrong username or password" in wrong.text
        nobody = client.post("/login", data={"username": "nobody", "password": PASSWORD, "csrf_token": token})
        assert nobody.status_code == 401
        forged = client.post(
            "/login", data={"username": a.manager, "password": PASSWORD, "csrf_token": "forged"}
        )
        assert forged.status_code == 403
        client.post(
            "/login",
            data={
                "username": a.manager,
                "password": PASSWORD,
                "csrf_token": token,
                "next": "//evil.example/x",
            },
        )
        assert client.get("/api/v1/me").json()["fleet_id"] == a.fleet_id
    with _client(url) as client:  # the session cookie is HttpOnly and SameSite
        sign_in(client, a.manager)
        cookie = next(c for c in client.cookies.jar if c.name == "drivecoach_session")
        assert cookie.has_nonstandard_attr("HttpOnly") and cookie.get_nonstandard_attr("SameSite") == "lax"


@pytest.mark.attack("hostile_input")
def test_open_redirect_after_sign_in_is_refused(console) -> None:
    url, _, a, _, _ = console
    with httpx.Client(base_url=url, follow_redirects=False) as client:
        form = client.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
        answer = client.post(
            "/login",
            data={
                "username": a.manager,
                "password": PASSWORD,
                "csrf_token": token,
                "next": "//evil.example/x",
            },
        )
        assert answer.status_code == 303 and answer.headers["location"] == "/"


@pytest.mark.attack("idor")
def test_pages_show_the_fleet_and_nothing_of_another(console) -> None:
    url, _, a, b, _ = console
    with _client(url) as client:
        sign_in(client, a.manager)
        dashboard = client.get("/")
        assert dashboard.status_code == 200 and 'id="events-per-day"' in dashboard.text
        assert b.fleet_id not in dashboard.text
        queue = client.get("/queue").text
        assert {s.scenario_id for s in a.clips} == set(re.findall(r'href="/clips/([^"]+)"', queue))
        clip = client.get(f"/clips/{a.clips[0].scenario_id}")
        assert clip.status_code == 200 and a.clips[0].instruction in clip.text
        assert clip.headers["content-security-policy"].startswith("default-src 'self'")
        frame = client.get(f"/clips/{a.clips[0].scenario_id}/frames/0")
        assert frame.headers["content-type"] == "image/jpeg" and frame.content[:2] == b"\xff\xd8"
        other = b.clips[0].scenario_id
        assert client.get(f"/clips/{other}").status_code == 404
        assert client.get(f"/api/v1/clips/{other}").status_code == 404
        assert client.get(f"/clips/{other}/frames/0").status_code == 404
        csrf = sign_in(client, a.manager)
        assert (
            client.post(
                f"/api/v1/clips/{other}/review", json={"action": "accept"}, headers={"X-CSRF-Token": csrf}
            ).status_code
            == 404
        )


def _reviews(engine, inference_clip: str) -> list[tuple[str, str, str | None, str | None]]:
    with engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                text(
                    "SELECT r.verdict, r.reviewer, r.corrected_turn1, r.corrected_instruction FROM reviews r "
                    "JOIN inferences i ON i.id = r.inference_id WHERE i.clip_id = :c ORDER BY r.id"
                ),
                {"c": inference_clip},
            )
        ]


def _statuses(engine, clip_id: str) -> list[str]:
    with engine.connect() as conn:
        return sorted(
            conn.execute(
                text(
                    "SELECT e.coaching_status FROM events e JOIN inferences i ON "
                    "i.id = e.inference_id WHERE i.clip_id = :c"
                ),
                {"c": clip_id},
            ).scalars()
        )


def test_review_actions_write_reviews_and_coaching_status(console) -> None:
    url, engine, a, _, _ = console
    with_events = [s for s in a.clips if s.events]
    accepted, dismissed = with_events[0].scenario_id, a.clips[-1].scenario_id
    with _client(url) as client:
        csrf = sign_in(client, a.manager)
        no_token = client.post(f"/clips/{accepted}/review", data={"action": "accept"})
        assert no_token.status_code == 403 and _reviews(engine, accepted) == []
        page = client.post(f"/clips/{accepted}/review", data={"action": "accept", "csrf_token": csrf})
        assert page.status_code == 200 and "Saved: accepted" in page.text
        assert _reviews(engine, accepted) == [("accepted", a.manager, None, None)]
        assert set(_statuses(engine, accepted)) == {"needs_coaching"}
        assert accepted in {c["clip_id"] for c in client.get("/api/v1/coaching").json()}
        assert f'href="/clips/{accepted}"' in client.get("/coaching").text
        client.post(f"/clips/{accepted}/review", data={"action": "coached", "csrf_token": csrf})
        assert accepted not in {c["clip_id"] for c in client.get("/api/v1/coaching").json()}
        assert set(_statuses(engine, accepted)) == {"coached"} and len(_reviews(engine, accepted)) == 1
        again = client.post(f"/clips/{accepted}/review", data={"action": "coached", "csrf_token": csrf})
        assert again.status_code == 400 and "waiting for coaching" in again.text
        client.post(f"/clips/{dismissed}/review", data={"action": "dismiss", "csrf_token": csrf})
        assert _reviews(engine, dismissed)[0][0] == "dismissed"
        assert set(_statuses(engine, dismissed)) <= {"dismissed"}
        queue = client.get("/api/v1/queue").json()
        assert {accepted, dismissed}.isdisjoint(q["clip_id"] for q in queue)


def test_a_correction_replaces_the_events_and_becomes_a_training_label(console) -> None:
    url, engine, a, _, settings = console
    clip_id = a.clips[1].scenario_id
    with _client(url) as client:
        csrf = sign_in(client, a.manager)
        outside = client.post(
            f"/api/v1/clips/{clip_id}/review",
            headers={"X-CSRF-Token": csrf},
            json={"action": "correct", "events": [{"type": "phone_use", "start": 2, "end": 400}]},
        )
        assert outside.status_code == 409 and "after the clip ends" in outside.json()["detail"]
        form = client.post(
            f"/clips/{clip_id}/review",
            data={
                "action": "correct",
                "csrf_token": csrf,
                "event_type": ["phone_use", "", "speeding"],
                "event_start": ["2", "", "5"],
                "event_end": ["4", "", "9"],
                "instruction": "Put the phone away before you drive.",
            },
        )
        assert form.status_code == 200 and "Saved: corrected" in form.text
        detail = client.get(f"/api/v1/clips/{clip_id}").json()
    assert [(e["type"], e["start_s"], e["end_s"], e["coaching_status"]) for e in detail["events"]] == [
        ("phone_use", 2.0, 4.0, "needs_coaching"),
        ("speeding", 5.0, 9.0, "needs_coaching"),
    ]
    assert detail["instruction"] == "Put the phone away before you drive."
    verdict, reviewer, turn1, instruction = _reviews(engine, clip_id)[-1]
    assert (verdict, reviewer, instruction) == (
        "corrected",
        a.manager,
        "Put the phone away before you drive.",
    )
    assert [(e.type.value, e.start, e.end) for e in parse_turn1(turn1).events] == [
        ("phone_use", 2, 4),
        ("speeding", 5, 9),
    ]
    replayed = write_scenario(sessionmaker(engine), settings, a.clips[1])  # the worker replays the clip
    with engine.connect() as conn:  # the replay kept the answer (the API shows its public id, not its key)
        kept = conn.execute(
            text("SELECT public_id FROM inferences WHERE id = :i"), {"i": replayed}
        ).scalar_one()
    assert str(kept) == detail["answer_id"]
    with _client(url) as client:
        sign_in(client, a.manager)
        again = client.get(f"/api/v1/clips/{clip_id}").json()
    assert again["events"] == detail["events"] and again["instruction"] == detail["instruction"]
    with Session(engine) as session:
        examples, _ = reviewed_examples(session, datetime.now(UTC))
    label = next(e for e in examples if e.clip_id == clip_id)
    assert json.loads(label.turn1)["events"][0]["type"] == "phone_use" and label.turn2.startswith(
        "Put the phone"
    )


@pytest.mark.attack("sessions")
def test_signing_out_ends_the_session(console) -> None:
    url, _, a, _, _ = console
    with _client(url) as client:
        csrf = sign_in(client, a.manager)
        cookie = client.cookies.get("drivecoach_session")
        client.post("/logout", data={"csrf_token": csrf})
    with httpx.Client(base_url=url, cookies={"drivecoach_session": cookie}) as stale:
        assert stale.get("/api/v1/me").status_code == 401


def test_add_manager_from_the_command_line(
    console, own_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from streams.cli import app

    url, _, _, b, _ = console
    monkeypatch.setenv("DRIVECOACH_DATABASE_URL", own_database_url)
    monkeypatch.setenv("NEW_MANAGER_PASSWORD", "short")
    runner = CliRunner()
    refused = runner.invoke(
        app,
        ["console", "add-manager", "kim", "--fleet", b.fleet_id, "--password-env", "NEW_MANAGER_PASSWORD"],
    )
    assert refused.exit_code == 1 and "at least 8 characters" in refused.output
    monkeypatch.setenv("NEW_MANAGER_PASSWORD", "a long enough password")
    created = runner.invoke(
        app,
        [
            "console",
            "add-manager",
            "kim",
            "--fleet",
            b.fleet_id,
            "--name",
            "Kim",
            "--password-env",
            "NEW_MANAGER_PASSWORD",
        ],
    )
    assert created.exit_code == 0, created.output
    with _client(url) as client:
        sign_in(client, "kim", "a long enough password")
        assert client.get("/api/v1/me").json() == {
            "username": "kim",
            "display_name": "Kim",
            "fleet_id": b.fleet_id,
        }
        assert {q["clip_id"] for q in client.get("/api/v1/queue").json()} <= {s.scenario_id for s in b.clips}


def test_a_taken_port_is_a_clear_error(console) -> None:
    from streams.console.server import PortInUse, port_free, serve

    url, engine, _, _, _ = console
    port = int(url.rsplit(":", 1)[1])
    assert not port_free("127.0.0.1", port)
    with pytest.raises(PortInUse, match=f"port {port} .* is in use"):
        serve(Settings(console_port=port), engine)


@pytest.mark.attack("brute_force")
def test_repeated_wrong_passwords_back_off_briefly_instead_of_locking_the_username(console) -> None:
    """Wrong passwords slow the guessing client down (a short, growing delay per address and username), but never
    lock the username itself: the right password gets in once the short delay has passed (issue 17, finding 5)."""
    import time

    from streams.console.auth import add_manager

    url, engine, a, _, _ = console
    with Session(engine) as session, session.begin():
        add_manager(session, username="guessed", fleet_id=a.fleet_id, password=PASSWORD)
    with _client(url) as client:
        token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)
        tries = [
            client.post(
                "/login", data={"username": "guessed", "password": f"guess {i}", "csrf_token": token}
            ).status_code
            for i in range(5)
        ]
        early = client.post("/login", data={"username": "guessed", "password": PASSWORD, "csrf_token": token})
        assert tries == [401] * 3 + [429] * 2 and early.status_code == 429 and "Too many failed" in early.text
        time.sleep(int(early.headers["Retry-After"]) + 0.2)
        right = client.post("/login", data={"username": "guessed", "password": PASSWORD, "csrf_token": token})
    assert right.status_code == 200 and right.url.path == "/"
