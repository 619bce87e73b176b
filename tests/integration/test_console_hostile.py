"""Issue 17's attack run on the console, replayed over real HTTP on the real Postgres (findings 3 to 6): hostile
input is a 4xx with a sentence, never a 500; sign-in can neither exhaust the console's memory nor lock a manager
out; the throttle lives in Postgres, bounded and shared between replicas; nothing shows server paths or the API's
surface to strangers; sessions end when idle and expired ones are purged without waiting for a sign-in.

Clients sign in from different loopback addresses (127.0.0.0/8 is all loopback on Linux), so the per-address
throttle sees several clients as it would behind a balancer that forwards their addresses."""

from __future__ import annotations

import io
import logging
import re
import threading
import time
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session, sessionmaker

from streams.settings import Settings
from tests.integration.console_data import PASSWORD, SeededFleet, running_console, seed_fleet

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Console:
    url: str
    engine: Engine
    fleet: SeededFleet
    settings: Settings
    cookie: str  # a signed-in manager's session (from 127.0.0.1)
    csrf: str


def _client(url: str, address: str = "127.0.0.1") -> httpx.Client:
    """A client whose connections come from `address`; a new connection per request (a 500 drops it)."""
    return httpx.Client(
        base_url=url,
        transport=httpx.HTTPTransport(local_address=address),
        timeout=60,
        headers={"Connection": "close"},
    )


def _attempt(url: str, username: str, password: str, address: str) -> httpx.Response:
    """One sign-in through the form, as a browser at `address` would (no redirect followed)."""
    with _client(url, address) as client:
        form = client.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
        return client.post(
            "/login", data={"username": username, "password": password, "csrf_token": token, "next": "/"}
        )


def _signed_in(url: str, username: str, address: str = "127.0.0.1") -> tuple[str, str]:
    """(session cookie, CSRF token) of a fresh sign-in."""
    answer = _attempt(url, username, PASSWORD, address)
    assert answer.status_code == 303, (answer.status_code, answer.text[:300])
    cookie = answer.cookies["drivecoach_session"]
    with _client(url, address) as client:
        page = client.get("/", cookies={"drivecoach_session": cookie})
    return cookie, re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)


@pytest.fixture(scope="module")
def console(own_database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    engine = create_engine(own_database_url)
    # 128 MiB for password checks: two argon2 checks (64 MiB each) at once.
    settings = Settings(home=tmp_path_factory.mktemp("hostile"), console_signin_memory_mib=128)
    fleet = seed_fleet(sessionmaker(engine), settings, f"fleet-h-{uuid.uuid4().hex[:6]}", clips=3, seed=61)
    with running_console(settings, engine) as url:
        cookie, csrf = _signed_in(url, fleet.manager)
        yield Console(url, engine, fleet, settings, cookie, csrf)
    engine.dispose()


def _add_manager(engine: Engine, fleet_id: str, username: str) -> None:
    from streams.console.auth import add_manager

    with Session(engine) as session, session.begin():
        add_manager(session, username=username, fleet_id=fleet_id, password=PASSWORD)


# --- finding 3: hostile input is a 4xx with a sentence ------------------------------------------------------------


@pytest.mark.attack("hostile_input")
def test_a_nul_in_the_sign_in_form_is_a_400(console: Console) -> None:
    nul_name = _attempt(console.url, "kim\x00", PASSWORD, "127.0.1.1")
    assert nul_name.status_code == 400 and "username" in nul_name.text and 'role="alert"' in nul_name.text
    nul_password = _attempt(console.url, console.fleet.manager, "pass\x00word", "127.0.1.1")
    assert nul_password.status_code == 401 and "Wrong username or password" in nul_password.text


HOSTILE_JSON = {
    "nul in the instruction": b'{"action": "correct", "instruction": "Stop\\u0000now"}',
    "NaN start": b'{"action": "correct", "events": [{"type": "phone_use", "start": NaN, "end": 1}]}',
    "Infinity start": b'{"action": "correct", "events": [{"type": "phone_use", "start": Infinity, "end": 1}]}',
    "-Infinity end": b'{"action": "correct", "events": [{"type": "phone_use", "start": 1, "end": -Infinity}]}',
    "1e400 start": b'{"action": "correct", "events": [{"type": "phone_use", "start": 1e400, "end": 1}]}',
    "lone surrogate instruction": b'{"action": "correct", "instruction": "\\ud800"}',
    "lone surrogate type": b'{"action": "correct", "events": [{"type": "\\udfff", "start": 1, "end": 2}]}',
    "lone surrogate key": b'{"action": "accept", "\\ud800": 1}',
}


@pytest.mark.attack("hostile_input")
@pytest.mark.parametrize("body", HOSTILE_JSON.values(), ids=HOSTILE_JSON.keys())
def test_hostile_review_json_is_a_422_with_sentences(console: Console, body: bytes) -> None:
    clip_id = console.fleet.clips[0].scenario_id
    with _client(console.url) as client:
        answer = client.post(
            f"/api/v1/clips/{clip_id}/review",
            content=body,
            headers={"Content-Type": "application/json", "X-CSRF-Token": console.csrf},
            cookies={"drivecoach_session": console.cookie},
        )
    assert answer.status_code == 422, answer.text[:300]
    detail = answer.json()["detail"]
    assert detail and all(isinstance(d["msg"], str) and d["msg"] for d in detail)


@pytest.mark.attack("hostile_input")
def test_a_body_that_is_not_utf8_is_a_400(console: Console) -> None:
    with _client(console.url) as client:
        answer = client.post(
            f"/api/v1/clips/{console.fleet.clips[0].scenario_id}/review",
            content=b'{"action": "\xff\xfe"}',
            headers={"Content-Type": "application/json", "X-CSRF-Token": console.csrf},
            cookies={"drivecoach_session": console.cookie},
        )
    assert answer.status_code in (400, 422) and answer.json()["detail"]


def _rows(n: int, start: str = "1", end: str = "2") -> dict[str, list[str]]:
    return {"event_type": ["phone_use"] * n, "event_start": [start] * n, "event_end": [end] * n}


HOSTILE_FORMS = {
    "nul in the instruction": ({"instruction": "Stop\x00now"}, "NUL"),
    "65 event rows": (_rows(65), "at most 64"),
    "nan start": (_rows(1, start="nan"), "event row 1"),
    "inf start": (_rows(1, start="inf"), "event row 1"),
    "1e400 end": (_rows(1, end="1e400"), "event row 1"),
    "nul in a type": (
        {"event_type": ["phone_use\x00"], "event_start": ["1"], "event_end": ["2"]},
        "event row 1",
    ),
}


@pytest.mark.attack("hostile_input")
@pytest.mark.parametrize(("fields", "says"), HOSTILE_FORMS.values(), ids=HOSTILE_FORMS.keys())
def test_hostile_review_form_is_a_400_on_the_clip_page(console: Console, fields: dict, says: str) -> None:
    clip_id = console.fleet.clips[0].scenario_id
    with _client(console.url) as client:
        answer = client.post(
            f"/clips/{clip_id}/review",
            data={"action": "correct", "csrf_token": console.csrf, **fields},
            cookies={"drivecoach_session": console.cookie},
        )
    assert answer.status_code == 400, answer.text[:300]
    alert = re.search(r'<p class="error" role="alert">([^<]*)</p>', answer.text)
    assert alert is not None and says in alert.group(1), alert


# Text as an attacker types it: anything, weighted towards what broke the console before (NUL, odd numbers,
# markup, very long values).
HOSTILE_WORDS = [
    "\x00",
    "a\x00b",
    "nan",
    "NaN",
    "inf",
    "-inf",
    "1e400",
    "-1e400",
    "-0",
    "0x10",
    "1_0",
    "",
    " ",
    "\t",
    "<script>",
    "'",
    '"',
    "%00",
    "\u202e",
    "\ufeff",
    "é",
    "phone_use",
    "speeding",
    "9" * 400,
]
hostile_text = st.one_of(
    st.sampled_from(HOSTILE_WORDS), st.text(max_size=40), st.text("\x00\n<>&'\"%", max_size=8)
)
event_rows = st.lists(st.tuples(hostile_text, hostile_text, hostile_text), max_size=70)


@given(
    action=st.sampled_from(["accept", "correct", "dismiss", "coached", "correct", "correct"]),
    rows=event_rows,
    instruction=hostile_text,
    username=hostile_text,
    password=hostile_text,
    next_page=hostile_text,
    address=st.integers(1, 250),
)
@pytest.mark.attack("hostile_input")
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_the_forms_under_hypothesis_answer_no_server_error(
    console: Console,
    action: str,
    rows: list[tuple[str, str, str]],
    instruction: str,
    username: str,
    password: str,
    next_page: str,
    address: int,
) -> None:
    """The review and sign-in forms with generated fields (with the right CSRF tokens, so they reach the handlers):
    a page or a redirect, or a 4xx; never a 500."""
    clip_id = console.fleet.clips[1].scenario_id
    with _client(console.url) as client:
        review = client.post(
            f"/clips/{clip_id}/review",
            data={
                "action": action,
                "csrf_token": console.csrf,
                "event_type": [r[0] for r in rows],
                "event_start": [r[1] for r in rows],
                "event_end": [r[2] for r in rows],
                "instruction": instruction,
            },
            cookies={"drivecoach_session": console.cookie},
        )
    assert review.status_code in (303, 400, 409, 422), (review.status_code, review.text[:300])
    with _client(console.url, f"127.0.9.{address}") as client:
        form = client.get("/login", params={"next": next_page})
        assert form.status_code == 200
        token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
        sign_in = client.post(
            "/login",
            data={"username": username, "password": password, "csrf_token": token, "next": next_page},
        )
    assert sign_in.status_code in (400, 401, 422, 429, 503), (sign_in.status_code, sign_in.text[:300])


def _frames_path(console: Console, clip_id: str) -> Path:
    with console.engine.connect() as conn:
        uri = conn.execute(
            text("SELECT frames_uri FROM clips WHERE clip_id = :c"), {"c": clip_id}
        ).scalar_one()
    return Path(urlparse(uri).path)


def _zip(**members: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buf.getvalue()


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


DAMAGED_FRAMES = {
    "not a zip": b"this is no npz file at all",
    "no frames member": _zip(**{"times.npy": _npy(np.zeros(3))}),
    "truncated": None,  # the real file cut in half
    "frames of another shape": _zip(**{"frames.npy": _npy(np.zeros((4, 5), dtype=np.float64))}),
    "a pickled object": _zip(**{"frames.npy": _npy(np.array([{"a": 1}], dtype=object))}),
}


@pytest.mark.attack("hostile_input")
def test_a_damaged_frames_file_is_a_409(console: Console) -> None:
    clip_id = console.fleet.clips[-1].scenario_id
    path = _frames_path(console, clip_id)
    original = path.read_bytes()
    try:
        for what, data in DAMAGED_FRAMES.items():
            path.write_bytes(original[: len(original) // 2] if data is None else data)
            with _client(console.url) as client:
                answer = client.get(
                    f"/clips/{clip_id}/frames/0", cookies={"drivecoach_session": console.cookie}
                )
            assert answer.status_code == 409, (what, answer.status_code, answer.text[:300])
            assert "frames" in answer.json()["detail"] and str(path) not in answer.text, what
            time.sleep(0.01)  # the next write gets another mtime: the frames cache is keyed by it
    finally:
        path.write_bytes(original)


# --- finding 4: sign-in cannot exhaust memory; the throttle is per address too, bounded, in Postgres --------------


@pytest.mark.attack("brute_force")
def test_concurrent_sign_ins_wait_for_a_hashing_slot(
    console: Console, monkeypatch: pytest.MonkeyPatch
) -> None:
    """12 sign-ins at once with different usernames from different addresses: at most the two argon2 checks that
    128 MiB allows run at a time (the attack run saw 179 -> 820 MB with all 12 at once)."""
    from streams.console import auth

    original, lock = auth.verify_password, threading.Lock()
    running, peak = [0], [0]

    def counted(password_hash: str, password: str) -> bool:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        try:
            time.sleep(0.2)
            return original(password_hash, password)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(auth, "verify_password", counted)
    statuses: list[int] = []

    def one(i: int) -> None:
        statuses.append(
            _attempt(console.url, f"stranger-{i}", "not a password", f"127.0.2.{i + 1}").status_code
        )

    threads = [threading.Thread(target=one, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(statuses) == 12 and set(statuses) <= {401, 503} and 401 in statuses, statuses
    assert 1 <= peak[0] <= 2, peak[0]


@pytest.mark.attack("brute_force")
def test_failed_sign_ins_are_throttled_per_address(console: Console) -> None:
    """One address trying many usernames (password spraying) is slowed down, whichever username it tries."""
    address = "127.0.3.1"
    tries = [_attempt(console.url, f"sprayed-{i}", "not a password", address).status_code for i in range(10)]
    assert tries == [401] * 10
    next_one = _attempt(console.url, "sprayed-10", "not a password", address)
    assert next_one.status_code == 429 and int(next_one.headers["Retry-After"]) >= 1
    assert "Too many failed sign-ins" in next_one.text
    assert _attempt(console.url, "sprayed-10", "not a password", "127.0.3.2").status_code == 401


@pytest.mark.attack("brute_force")
def test_the_throttle_is_shared_between_replicas(console: Console) -> None:
    """Failures seen by one console process count in another on the same database."""
    address, username = "127.0.4.1", f"shared-{uuid.uuid4().hex[:6]}"
    _add_manager(console.engine, console.fleet.fleet_id, username)
    with running_console(console.settings, console.engine) as replica:
        tries = [_attempt(console.url, username, f"guess {i}", address).status_code for i in range(3)]
        answer = _attempt(replica, username, "guess 3", address)
    assert tries == [401] * 3 and answer.status_code == 429, (tries, answer.status_code)


@pytest.mark.attack("brute_force")
def test_the_throttle_forgets_old_failures_and_keeps_no_names(console: Console) -> None:
    """The throttle's table holds only recent failures (rows are purged, not kept forever) and digests of the
    addresses and usernames, never the typed username (people type passwords there)."""
    from streams.console.throttle import SignInThrottle

    now = [datetime(2030, 1, 1, tzinfo=UTC)]
    throttle = SignInThrottle(sessionmaker(console.engine), clock=lambda: now[0])
    for i in range(50):
        throttle.failed(f"10.9.{i}.1", f"typed-secret-{i}")
    with console.engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM console_signin_throttle")).all()
    assert len(rows) >= 50 and not any("typed-secret" in str(r) or "10.9." in str(r) for r in rows)
    now[0] += timedelta(hours=2)
    throttle.failed("10.9.99.1", "someone")
    assert throttle.purge() >= 0
    with console.engine.connect() as conn:
        left = conn.execute(
            text("SELECT count(*) FROM console_signin_throttle WHERE expires_at < :t"), {"t": now[0]}
        )
    assert left.scalar_one() == 0


@pytest.mark.attack("direct_sql")
def test_fleet_roles_cannot_read_the_throttle(console: Console) -> None:
    from sqlalchemy.exc import ProgrammingError

    from streams.infra.tenancy import fleet_role

    with pytest.raises(ProgrammingError, match="permission denied"), console.engine.begin() as conn:
        conn.execute(text(f'SET LOCAL ROLE "{fleet_role(conn, console.fleet.fleet_id)}"'))
        conn.execute(text("SELECT * FROM console_signin_throttle"))


# --- finding 5: no third party can lock a manager out ---------------------------------------------------------------


@pytest.mark.attack("brute_force")
def test_a_third_party_cannot_lock_a_manager_out(console: Console, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="streams.console")
    username = f"target-{uuid.uuid4().hex[:6]}"
    _add_manager(console.engine, console.fleet.fleet_id, username)
    _signed_in(console.url, username, "127.0.5.1")  # the manager's usual address
    # A guesser: six tries in a row from one address, then one from each of 12 more addresses.
    burst = [_attempt(console.url, username, f"guess {i}", "127.0.6.100").status_code for i in range(6)]
    spread = [_attempt(console.url, username, "guess", f"127.0.6.{i + 1}").status_code for i in range(12)]
    assert burst[:3] == [401, 401, 401] and 429 in burst[3:], burst
    assert set(spread) <= {401, 429}, spread
    # ... and sprays other usernames from the manager's own (shared, say an office's) address.
    shared = [_attempt(console.url, f"other-{i}", "guess", "127.0.5.1").status_code for i in range(11)]
    assert shared[:10] == [401] * 10 and shared[10] == 429, shared
    # The manager still signs in at once from the usual address ...
    assert _attempt(console.url, username, PASSWORD, "127.0.5.1").status_code == 303
    # ... and from a new one after a short wait at most.
    fresh = _attempt(console.url, username, PASSWORD, "127.0.5.2")
    if fresh.status_code == 429:
        wait = int(fresh.headers["Retry-After"])
        assert wait <= 60, wait
        time.sleep(wait + 0.2)
        fresh = _attempt(console.url, username, PASSWORD, "127.0.5.2")
    assert fresh.status_code == 303
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any(username in m and "127.0.6.100" in m for m in logged), logged


@pytest.mark.attack("brute_force")
def test_wrong_passwords_from_one_address_back_off_briefly(console: Console) -> None:
    """The manager's own typos: a short, growing delay, then the right password works."""
    username, address = f"typo-{uuid.uuid4().hex[:6]}", "127.0.7.1"
    _add_manager(console.engine, console.fleet.fleet_id, username)
    tries = [_attempt(console.url, username, f"typo {i}", address).status_code for i in range(3)]
    assert tries == [401] * 3
    right = _attempt(console.url, username, PASSWORD, address)
    assert right.status_code == 429 and 1 <= int(right.headers["Retry-After"]) <= 5, right.status_code
    time.sleep(int(right.headers["Retry-After"]) + 0.2)
    assert _attempt(console.url, username, PASSWORD, address).status_code == 303


# --- finding 6: small leaks ------------------------------------------------------------------------------------------


@pytest.mark.attack("traversal")
def test_a_missing_frames_file_is_a_404_without_server_paths(console: Console) -> None:
    clip_id = console.fleet.clips[-1].scenario_id
    path = _frames_path(console, clip_id)
    path.unlink()
    with _client(console.url) as client:
        answer = client.get(f"/clips/{clip_id}/frames/0", cookies={"drivecoach_session": console.cookie})
    assert answer.status_code == 404 and "frames" in answer.json()["detail"]
    assert str(console.settings.home) not in answer.text and "file:" not in answer.text


@pytest.mark.attack("sessions")
def test_the_api_description_needs_a_sign_in_and_there_is_no_cdn_page(console: Console) -> None:
    with _client(console.url) as client:
        assert client.get("/api/openapi.json").status_code == 401
        assert client.get("/api/docs").status_code == 404
        signed = {"drivecoach_session": console.cookie}
        assert "/api/v1/me" in client.get("/api/openapi.json", cookies=signed).json()["paths"]
        assert client.get("/api/docs", cookies=signed).status_code == 404


def _ids(value: object, key: str = "") -> Iterator[tuple[str, object]]:
    """Every (field, value) of a JSON document whose field name is an id."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _ids(v, k)
    elif isinstance(value, list):
        for v in value:
            yield from _ids(v, key)
    elif key == "id" or key.endswith("_id"):
        yield key, value


@pytest.mark.attack("idor")
def test_the_api_shows_no_sequence_numbers(console: Console) -> None:
    """Answers, events and reviews come out by random public ids (migration 0014): their keys come from sequences
    every fleet shares, so two of them told a manager how many answers the other fleets got in between."""
    clip_id = console.fleet.clips[0].scenario_id
    signed = {"drivecoach_session": console.cookie}
    with _client(console.url) as client:
        queue = client.get("/api/v1/queue", cookies=signed).json()
        reviewed = client.post(
            f"/api/v1/clips/{clip_id}/review",
            json={"action": "accept"},
            cookies=signed,
            headers={"X-CSRF-Token": console.csrf},
        )
        detail = client.get(f"/api/v1/clips/{clip_id}", cookies=signed).json()
    assert reviewed.status_code == 200, reviewed.text
    ids = [*_ids(queue), *_ids(reviewed.json()), *_ids(detail)]
    numbered = {"answer_id", "review_id", "id"}
    assert {key for key, _ in ids} >= numbered and detail["events"] and detail["reviews"]
    for key, value in ids:
        if key in numbered:
            assert isinstance(value, str) and uuid.UUID(value).version == 4, (key, value)
    with console.engine.connect() as conn:
        key = conn.execute(
            text("SELECT id FROM inferences WHERE public_id = :p"), {"p": detail["answer_id"]}
        ).scalar_one()
    assert all(value not in (key, str(key)) for _, value in ids)


def test_add_manager_needs_create_fleet_for_a_new_fleet(
    console: Console, own_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from streams.cli import app

    monkeypatch.setenv("DRIVECOACH_DATABASE_URL", own_database_url)
    monkeypatch.setenv("NEW_MANAGER_PASSWORD", "a long enough password")
    typo = console.fleet.fleet_id[:-1]
    args = ["console", "add-manager", "lee", "--fleet", typo, "--password-env", "NEW_MANAGER_PASSWORD"]
    refused = CliRunner().invoke(app, args)
    assert (
        refused.exit_code == 1
        and "--create-fleet" in refused.output
        and console.fleet.fleet_id in refused.output
    )
    with console.engine.connect() as conn:
        fleets = set(conn.execute(text("SELECT fleet_id FROM fleets")).scalars())
        managers = set(conn.execute(text("SELECT username FROM managers")).scalars())
    assert typo not in fleets and "lee" not in managers
    created = CliRunner().invoke(app, [*args, "--create-fleet"])
    assert created.exit_code == 0, created.output
    with console.engine.connect() as conn:
        assert (
            conn.execute(text("SELECT count(*) FROM fleets WHERE fleet_id = :f"), {"f": typo}).scalar_one()
            == 1
        )


@pytest.mark.attack("sessions")
def test_an_idle_session_ends(console: Console) -> None:
    settings = Settings(home=console.settings.home, console_idle_minutes=0.04)  # 2.4 s
    with running_console(settings, console.engine) as url:
        cookie, _ = _signed_in(url, console.fleet.manager, "127.0.8.1")
        with _client(url, "127.0.8.1") as client:
            for _ in range(6):  # used every 0.6 s for 3.6 s: longer than the idle timeout, still signed in
                assert client.get("/api/v1/me", cookies={"drivecoach_session": cookie}).status_code == 200
                time.sleep(0.6)
            time.sleep(3.5)
            assert client.get("/api/v1/me", cookies={"drivecoach_session": cookie}).status_code == 401


@pytest.mark.attack("sessions")
def test_expired_sessions_are_purged_without_a_sign_in(console: Console) -> None:
    from schemas.db import ConsoleSession

    token_hash = uuid.uuid4().hex * 2
    with Session(console.engine) as session, session.begin():
        session.add(
            ConsoleSession(
                token_hash=token_hash,
                username=console.fleet.manager,
                csrf_token="x",
                expires_at=datetime.now(UTC) - timedelta(minutes=1),
            )
        )
    with running_console(console.settings, console.engine):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with console.engine.connect() as conn:
                left = conn.execute(
                    text("SELECT count(*) FROM console_sessions WHERE token_hash = :t"), {"t": token_hash}
                ).scalar_one()
            if not left:
                break
            time.sleep(0.2)
    assert left == 0
