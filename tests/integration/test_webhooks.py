"""Signed webhooks end to end (issue 18, item 5): real writes (the worker's sink through its login, a review and a
driver's acknowledgement through the console's login as the fleet's role) fill the outbox in their own
transactions; the real `drivecoach webhooks deliver` process, SIGKILLed once mid-request and restarted, delivers it
to a real HTTP receiver on loopback that answers 500s, sleeps past the timeout and then recovers, and that checks
every signature with the README's snippet. After deduplication on the event id it has every delivery exactly once;
a permanently failing endpoint ends dead and `webhooks redeliver` revives it; another fleet's endpoint gets nothing
of this fleet's. The tests share one database and receiver and run in order: changes, delivery, what arrived."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, ProgrammingError
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from schemas.db import Event, Inference, Review, WebhookDelivery
from schemas.messages import ClipMessage, DetectedEvent, InferenceResult
from schemas.taxonomy import EventType, View, view_of
from streams.cli import app
from streams.console.coaching import acknowledge, create_session
from streams.console.review import ReviewIn, apply_review
from streams.inference.sink import write_results
from streams.infra.roles import CONSOLE_GROUP, PIPELINE_GROUP
from streams.infra.tenancy import ensure_fleet_role, fleet_connection, fleet_role
from streams.webhooks.endpoints import endpoints
from tests.conftest import fresh_database
from tests.integration.harness import service_login
from tests.unit.test_webhooks import readme_verifier

pytestmark = pytest.mark.integration

FLEET_A, FLEET_B = "fleet-hooks-a", "fleet-hooks-b"
TIMEOUT_S = 3.0  # the delivery process's; the receiver's slow answer takes longer
SETTINGS_ENV = {
    "DRIVECOACH_WEBHOOK_TIMEOUT_S": str(TIMEOUT_S),
    "DRIVECOACH_WEBHOOK_MAX_ATTEMPTS": "6",
    "DRIVECOACH_WEBHOOK_BACKOFF_S": "0.2",
    "DRIVECOACH_WEBHOOK_BACKOFF_MAX_S": "1",
    "DRIVECOACH_WEBHOOK_POLL_S": "0.2",
}
VERIFY = readme_verifier()


# --- the receiver -----------------------------------------------------------------------------------------------


@dataclass
class Route:
    """One endpoint's receiving end: its secret, and what it answers (`plan` in order, then `then`)."""

    secret: str = ""
    plan: list[str] = field(default_factory=list)  # fail | slow | hold | ok
    then: str = "ok"
    processed: Counter[str] = field(
        default_factory=Counter
    )  # event id -> times processed (dedupe: at most 1)
    bodies: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: int = 0
    duplicates: int = 0  # valid requests for an event id already processed
    bad_signatures: int = 0
    after_ack: int = 0  # requests for an event id the receiver had already answered 2xx in time


class Receiver:
    """A real HTTP server on 127.0.0.1 that behaves as a receiver should: verify, deduplicate on the event id,
    process once, answer 2xx; and misbehaves on cue."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.lock = threading.Lock()
        self.held = threading.Event()
        self.release = threading.Event()
        self.acked: set[str] = set()
        self.held_ids: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver.handle(self)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        payload = request.rfile.read(int(request.headers["Content-Length"]))
        with self.lock:
            route = self.routes[request.path]
            route.requests += 1
            outcome = route.plan.pop(0) if route.plan else route.then
            if not VERIFY(route.secret, request.headers, payload):
                route.bad_signatures += 1
                outcome = "refuse"
            event_id = request.headers["Drivecoach-Event-Id"]
            if outcome not in ("fail", "refuse"):
                if event_id in self.acked:
                    route.after_ack += 1
                if route.processed[event_id]:
                    route.duplicates += 1
                else:
                    route.processed[event_id] += 1
                    route.bodies[event_id] = json.loads(payload)
        if outcome == "slow":
            time.sleep(TIMEOUT_S + 1.5)
        elif outcome == "hold":
            self.held_ids.append(event_id)
            self.held.set()
            self.release.wait(30)
        status = {"fail": 500, "refuse": 401}.get(outcome, 200)
        try:
            request.send_response(status)
            request.send_header("Content-Length", "0")
            request.end_headers()
        except OSError:
            return  # the sender is gone (timed out or killed)
        if outcome == "ok":
            with self.lock:
                self.acked.add(event_id)

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


# --- data, the way the services write it --------------------------------------------------------------------------


def _answer(fleet: str, n: int, events: list[EventType]) -> tuple[ClipMessage, InferenceResult]:
    clip = ClipMessage(
        clip_id=f"clip-{fleet}-{n}",
        fleet_id=fleet,
        vehicle_id=f"{fleet}/veh-{n % 2}",
        driver_id=f"{fleet}/drv-{n % 2}",
        start_ts=1_764_000_000.0 + 600 * n,
        end_ts=1_764_000_000.0 + 600 * n + 20,
        views=[View.ROAD, View.DRIVER],
        segments=[],
        frames_uri=f"file:///blobs/{fleet}-{n}.npz",
        num_frames=40,
        frame_width=112,
        frame_height=140,
        sample_fps=2.0,
    )
    result = InferenceResult(
        clip_id=clip.clip_id,
        model_version="model-hooks",
        prompt_version="cot-v1",
        events=[DetectedEvent(type=t, view=view_of(t), start=1 + k, end=3 + k) for k, t in enumerate(events)],
        description="d",
        instruction="Eyes on the road.",
        raw_turn1="{}",
        raw_turn2="Eyes on the road.",
        valid=True,
        latency_ms=5.0,
        prompt_tokens=10,
        generated_tokens=4,
    )
    return clip, result


# clip number -> the model's events: phone use and drowsiness are severity 3, speeding 2, eating 1
ANSWERS_A = {
    n: [EventType.PHONE_USE, EventType.SPEEDING]
    if n % 2
    else [EventType.DROWSINESS, EventType.EATING_DRINKING]
    for n in range(8)
}
ANSWERS_B = {n: [EventType.PHONE_USE] for n in range(3)}


@dataclass
class World:
    owner: Engine
    owner_url: str
    webhooks_url: str
    receiver: Receiver
    endpoints: dict[str, uuid.UUID]  # path -> endpoint id
    home: Path


def _cli(world_url: str, *args: str, **env: str) -> str:
    result = CliRunner().invoke(app, list(args), env={"DRIVECOACH_DATABASE_URL": world_url, **env})
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    home = tmp_path_factory.mktemp("webhooks")
    with fresh_database() as owner_url:
        owner = create_engine(owner_url)
        with owner.begin() as conn:
            for fleet in (FLEET_A, FLEET_B):
                ensure_fleet_role(conn, fleet)
        receiver = Receiver()
        login = f"dc_webhooks_{uuid.uuid4().hex[:8]}"
        _cli(owner_url, "migrate", "--webhooks-login", login, DRIVECOACH_WEBHOOKS_DB_PASSWORD="s3cret")
        endpoints: dict[str, uuid.UUID] = {}
        for path, fleet, extra in (
            ("/a", FLEET_A, []),
            ("/a-dead", FLEET_A, ["--kinds", "severe_event"]),
            ("/b", FLEET_B, []),
        ):
            out = _cli(owner_url, "webhooks", "add", "--fleet", fleet, "--url", receiver.url(path), *extra)
            endpoints[path] = uuid.UUID(out.split()[1])
            receiver.routes[path] = Route(secret=out.strip().splitlines()[-1])
        try:
            yield World(
                owner,
                owner_url,
                make_url(owner_url)
                .set(username=login, password="s3cret")
                .render_as_string(hide_password=False),
                receiver,
                endpoints,
                home,
            )
        finally:
            receiver.close()
            owner.dispose()
            with create_engine(owner_url).connect() as conn:
                conn.execute(text(f'DROP ROLE IF EXISTS "{login}"'))
                conn.commit()


def _write_changes(world: World) -> None:
    """Answers through the worker's login, reviews and a coaching acknowledgement through the console's."""
    with service_login(world.owner_url, PIPELINE_GROUP) as pipeline_url:
        pipeline = create_engine(pipeline_url)
        factory = sessionmaker(pipeline)
        answers = [_answer(FLEET_A, n, e) for n, e in ANSWERS_A.items()]
        answers += [_answer(FLEET_B, n, e) for n, e in ANSWERS_B.items()]
        write_results(factory, answers)
        write_results(factory, answers[:3])  # a replay: the same events again, no new delivery
        pipeline.dispose()
    with service_login(world.owner_url, CONSOLE_GROUP) as console_url:
        console = create_engine(console_url)
        for fleet, clip in ((FLEET_A, f"clip-{FLEET_A}-1"), (FLEET_B, f"clip-{FLEET_B}-0")):
            with fleet_connection(console, fleet) as conn:
                inference = conn.execute(select(Inference.id).where(Inference.clip_id == clip)).scalar_one()
                apply_review(
                    conn,
                    fleet_id=fleet,
                    reviewer=f"manager@{fleet}",
                    inference_id=inference,
                    clip_duration=20.0,
                    review=ReviewIn(action="accept"),
                )
        with fleet_connection(console, FLEET_A) as conn:
            session = create_session(
                conn,
                fleet_id=FLEET_A,
                manager=f"manager@{FLEET_A}",
                driver_id=f"{FLEET_A}/drv-1",
                coach="Sam",
                due_on=date(2026, 12, 20),
                notes="",
                clip_ids=[f"clip-{FLEET_A}-1"],
            )
        for _ in range(2):  # a second acknowledgement changes nothing
            with fleet_connection(console, FLEET_A) as conn:
                acknowledge(conn, session)
        console.dispose()


def _outbox(world: World, path: str) -> dict[str, WebhookDelivery]:
    with Session(world.owner) as session:
        rows = session.scalars(
            select(WebhookDelivery).where(WebhookDelivery.endpoint_id == world.endpoints[path])
        )
        return {str(r.id): r for r in rows}


def _deliver(world: World, name: str, *args: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        **SETTINGS_ENV,
        "DRIVECOACH_DATABASE_URL": world.webhooks_url,
        "DRIVECOACH_HOME": str(world.home),
    }
    log = (world.home / f"{name}.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "webhooks", "deliver", *args], env=env, stdout=log, stderr=log
    )


def _wait(condition: Any, what: str, world: World, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            logs = "\n".join(p.read_text()[-3000:] for p in world.home.glob("*.log"))
            pytest.fail(f"timed out waiting for {what}\n{logs}")
        time.sleep(0.1)


def _statuses(world: World) -> Counter[tuple[str, str]]:
    with world.owner.connect() as conn:
        rows = conn.execute(text("SELECT endpoint_id, status FROM webhook_outbox")).all()
    paths = {v: k for k, v in world.endpoints.items()}
    return Counter((paths[e], s) for e, s in rows)


# --- the tests ----------------------------------------------------------------------------------------------------


def test_changes_fill_the_outbox_in_their_own_transactions(world: World) -> None:
    _write_changes(world)
    severe_a = sum(
        1 for events in ANSWERS_A.values() for t in events if t in (EventType.PHONE_USE, EventType.DROWSINESS)
    )
    assert _statuses(world) == {
        ("/a", "pending"): severe_a + 1 + 1,  # severe events, the review, the acknowledgement
        ("/a-dead", "pending"): severe_a,
        ("/b", "pending"): len(ANSWERS_B) + 1,
    }
    # The delivery is part of the change's transaction: it is there before the commit, and gone with a rollback.
    before = sum(_statuses(world).values())
    with world.owner.connect() as conn:
        conn.execute(
            text("""INSERT INTO events (fleet_id, inference_id, type, view, start_s, end_s)
                    SELECT fleet_id, id, 'phone_use', 'driver', 9, 10 FROM inferences WHERE clip_id = :c"""),
            {"c": f"clip-{FLEET_A}-0"},
        )
        assert (
            conn.execute(text("SELECT count(*) FROM webhook_outbox")).scalar() == before + 2
        )  # /a and /a-dead
        conn.rollback()
    assert sum(_statuses(world).values()) == before


def test_every_delivery_arrives_once_per_event_id_through_failures_timeouts_and_a_kill(world: World) -> None:
    receiver = world.receiver
    receiver.routes["/a"].plan = ["fail", "fail", "fail", "slow", "hold"]
    receiver.routes["/a-dead"].then = "fail"
    # One request at a time, so the kill interrupts only the held one.
    first = _deliver(world, "deliver-1", "--concurrency", "1")
    try:
        assert receiver.held.wait(90), (world.home / "deliver-1.log").read_text()
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    (held,) = receiver.held_ids
    assert _outbox(world, "/a")[held].status == "pending", "the killed request counted as delivered"
    receiver.release.set()

    second = _deliver(world, "deliver-2")
    try:
        _wait(lambda: not any(s == "pending" for _, s in _statuses(world)), "every delivery settled", world)
        second.send_signal(signal.SIGTERM)
        assert second.wait(15) == 0
    finally:
        if second.poll() is None:
            second.kill()

    for path in ("/a", "/b"):
        route, outbox = receiver.routes[path], _outbox(world, path)
        assert route.bad_signatures == 0
        assert {r.status for r in outbox.values()} == {"delivered"}
        # after deduplication on the event id: every delivery exactly once, nothing else
        assert set(route.processed) == set(outbox)
        assert set(route.processed.values()) == {1}
        assert route.after_ack == 0, "a delivery was sent again after a 2xx"
    # The two duplicates: the request answered after the timeout, and the one whose sender was killed.
    assert receiver.routes["/a"].duplicates == 2
    assert receiver.routes["/b"].duplicates == 0
    assert receiver.routes["/a"].requests == len(_outbox(world, "/a")) + 3 + 2

    dead_route, dead = receiver.routes["/a-dead"], _outbox(world, "/a-dead")
    assert {(r.status, r.attempts, r.last_error) for r in dead.values()} == {("dead", 6, "HTTP 500")}
    assert dead_route.requests == 6 * len(dead) and not dead_route.processed


def test_payloads_name_public_ids_and_stay_in_their_fleet(world: World) -> None:
    a, b = world.receiver.routes["/a"].bodies.values(), world.receiver.routes["/b"].bodies.values()
    assert {m["fleet_id"] for m in a} == {FLEET_A} and {m["fleet_id"] for m in b} == {FLEET_B}
    assert not any(FLEET_A in json.dumps(m) for m in b), "fleet A's data at fleet B's endpoint"
    with world.owner.connect() as conn:
        events = {str(p): t for p, t in conn.execute(select(Event.public_id, Event.type))}
        answers = {str(p) for p in conn.execute(select(Inference.public_id)).scalars()}
        reviews = {str(p): v for p, v in conn.execute(select(Review.public_id, Review.verdict))}
    kinds = Counter(m["type"] for m in a)
    assert kinds == {"severe_event": 8, "review_done": 1, "coaching_acknowledged": 1}
    for message in a:
        data = message["data"]
        assert message["id"] in world.receiver.routes["/a"].processed
        if message["type"] == "severe_event":
            assert events[data["event"]["id"]] == data["event"]["type"] in ("phone_use", "drowsiness")
            assert data["event"]["severity"] == 3 and data["answer_id"] in answers
        elif message["type"] == "review_done":
            assert reviews[data["review"]["id"]] == "accepted" and data["clip_id"] == f"clip-{FLEET_A}-1"
            assert {e["coaching_status"] for e in data["events"]} == {"needs_coaching"}
            assert all(e["id"] in events for e in data["events"])
        else:
            assert data["clip_ids"] == [f"clip-{FLEET_A}-1"] and data["session"]["acknowledged_at"]
    for message in [*a, *b]:  # sequence keys never leave: only uuids and content-hash clip ids
        assert "inference_id" not in json.dumps(message)


def test_redeliver_revives_dead_deliveries_and_sigterm_finishes_the_request_in_flight(world: World) -> None:
    route = world.receiver.routes["/a-dead"]
    route.then, route.plan = "ok", ["hold"]
    world.receiver.held.clear()
    world.receiver.release.clear()
    out = _cli(world.owner_url, "webhooks", "redeliver", "--endpoint", str(world.endpoints["/a-dead"]))
    dead = _outbox(world, "/a-dead")
    assert out.startswith(f"{len(dead)} dead deliveries pending again")

    proc = _deliver(world, "deliver-3", "--concurrency", "1")
    try:
        assert world.receiver.held.wait(60), (world.home / "deliver-3.log").read_text()
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert proc.poll() is None, "exited with a request in flight"
        world.receiver.release.set()
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert Counter(r.status for r in _outbox(world, "/a-dead").values()) == {
        "delivered": 1,
        "pending": len(dead) - 1,
    }

    once = _deliver(world, "deliver-4", "--once")
    assert once.wait(60) == 0
    assert {r.status for r in _outbox(world, "/a-dead").values()} == {"delivered"}
    assert set(route.processed) == set(dead) and set(route.processed.values()) == {1}
    assert route.bad_signatures == 0 and route.after_ack == 0


def test_endpoints_and_outbox_are_out_of_fleet_roles_reach(world: World) -> None:
    with world.owner.connect() as conn:
        role = fleet_role(conn, FLEET_B)
        conn.commit()
        for table in ("webhook_endpoints", "webhook_outbox"):
            with pytest.raises(ProgrammingError, match="permission denied"), conn.begin():
                conn.execute(text(f'SET LOCAL ROLE "{role}"'))
                conn.execute(text(f"SELECT * FROM {table}"))
        # Even the owner cannot address one fleet's change to another fleet's endpoint.
        with pytest.raises(IntegrityError, match="fk_webhook_outbox_endpoint_fleet"), conn.begin():
            conn.execute(
                text("""INSERT INTO webhook_outbox (fleet_id, endpoint_id, kind, subject, payload)
                        VALUES (:f, :e, 'review_done', 'x', '{}')"""),
                {"f": FLEET_A, "e": world.endpoints["/b"]},
            )


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT count(*) FROM events",
        "SELECT min_severity, kinds FROM webhook_endpoints",
        "UPDATE webhook_endpoints SET url = 'http://evil.example/'",
        "UPDATE webhook_outbox SET payload = '{}'",
        "INSERT INTO webhook_outbox (fleet_id, endpoint_id, kind, subject, payload) "
        "SELECT fleet_id, id, 'review_done', 'forged', '{}' FROM webhook_endpoints",
        "DELETE FROM webhook_outbox",
    ],
)
def test_the_delivery_login_does_only_its_job(world: World, statement: str) -> None:
    engine = create_engine(world.webhooks_url)
    try:
        with engine.connect() as conn, pytest.raises(ProgrammingError, match="permission denied"):
            conn.execute(text(statement))
    finally:
        engine.dispose()


def test_list_counts_and_remove_deletes_with_the_deliveries(world: World) -> None:
    listing = _cli(world.owner_url, "webhooks", "list", "--fleet", FLEET_B)
    assert "whsec_" not in listing
    with world.owner.connect() as conn:
        (row,) = endpoints(conn, fleet_id=FLEET_B)
    assert (row.id, row.pending, row.delivered, row.dead) == (world.endpoints["/b"], 0, len(ANSWERS_B) + 1, 0)
    _cli(world.owner_url, "webhooks", "remove", str(world.endpoints["/b"]))
    assert not _outbox(world, "/b")
    result = CliRunner().invoke(
        app,
        ["webhooks", "remove", str(world.endpoints["/b"])],
        env={"DRIVECOACH_DATABASE_URL": world.owner_url},
    )
    assert result.exit_code == 1


def test_0020_downgrades_and_upgrades_again() -> None:
    """Tables, trigger functions and grants go with a downgrade and come back; the role stays (cluster-wide)."""
    from alembic import command

    from schemas.migrations import alembic_config, upgrade

    def state(engine: Engine) -> tuple[int, int, bool]:
        with engine.connect() as conn:
            return (
                conn.execute(
                    text("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'webhook%'")
                ).scalar_one(),
                conn.execute(
                    text("SELECT count(*) FROM pg_proc WHERE proname LIKE 'drivecoach_webhooks%'")
                ).scalar_one(),
                conn.execute(text("SELECT to_regrole('drivecoach_webhooks') IS NOT NULL")).scalar_one(),
            )

    with fresh_database() as url:
        engine = create_engine(url)
        try:
            assert state(engine) == (2, 3, True)
            command.downgrade(alembic_config(url), "0019")
            assert state(engine) == (0, 0, True)
            upgrade(url)
            assert state(engine) == (2, 3, True)
        finally:
            engine.dispose()


@pytest.mark.parametrize(
    ("args", "sentence"),
    [
        (["--fleet", "fleet-nobody", "--url", "https://hooks.example.com/x"], "does not exist"),
        (["--fleet", FLEET_A, "--url", "ftp://hooks.example.com/x"], "not an http(s) URL"),
        (
            ["--fleet", FLEET_A, "--url", "https://hooks.example.com/x", "--kinds", "everything"],
            "unknown kind",
        ),
    ],
)
def test_add_refuses_with_a_sentence(world: World, args: list[str], sentence: str) -> None:
    def count() -> int:
        with world.owner.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM webhook_endpoints")).scalar_one())

    before = count()
    result = CliRunner().invoke(
        app, ["webhooks", "add", *args], env={"DRIVECOACH_DATABASE_URL": world.owner_url}
    )
    assert result.exit_code == 1 and sentence in result.output, result.output
    assert count() == before
