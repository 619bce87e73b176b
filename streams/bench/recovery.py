"""The recovery soak (`drivecoach bench recovery`): while a simulated fleet uploads in mixed cadences, SIGKILL the
joiner, the clip builder or the inference worker at a random moment, restart it, and check Postgres against the join's oracle.

Each trial gives its vehicles fresh ids and an arrival pattern each (real time, one burst per trip, an outage
longer than the vehicle-idle time, yesterday's trip uploaded after today's, one camera lagging), adds two uploads
that are wrong on purpose (malformed JSON, footage older than the horizon), and checks:
- no clip lost: every clip of the oracle is in `clips` at the oracle's revision, with the oracle's segments, and its
  current answer was made on that revision;
- no clip cut wrongly: no other clip of the trial's vehicles;
- no duplicate rows: one answer per clip, model and revision (the unique key), no event twice in one answer;
- every dead letter justified: exactly the two wrong uploads, with their reasons.
Time is compressed `speed` times; the joiner's idle and settle times are scaled with it.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from schemas.generation import is_demo_model
from schemas.messages import SegmentMessage
from schemas.registry import deploy
from streams.demo import SIMULATED_FLEET_JOIN, to_messages
from streams.inference.engines.base import model_version_of
from streams.infra.blobs import open_blob_store
from streams.infra.processes import settings_env, start_command, stop_process
from streams.infra.topics import CLIPS_TOPIC, DRIVER_TOPIC, ROAD_TOPIC, dlq_name, ensure_topics, topic_for
from streams.joiner.join import JoinRules, expected_fleet_clips
from streams.producer import make_producer
from streams.settings import Settings
from streams.simulate import make_scenarios, write_segments

PATTERNS = ("realtime", "burst", "outage", "backlog", "lagging")
FLEET = "fleet-soak"


@dataclass(frozen=True)
class Upload:
    at: float  # wall seconds after the trial's start
    topic: str
    key: bytes
    value: bytes


@dataclass
class TrialResult:
    trial: int
    killed: str
    killed_at_s: float
    patterns: list[str]
    segments: int
    expected_clips: int
    lost_clips: list[str] = field(
        default_factory=list
    )  # missing, or not at the oracle's revision and segments
    unexpected_clips: list[str] = field(default_factory=list)
    unanswered_clips: list[str] = field(default_factory=list)  # no answer made on the clip's final revision
    duplicate_rows: int = 0
    dead_letters: int = 0  # distinct inputs dead-lettered
    repeated_dead_letters: int = (
        0  # the same input dead-lettered again by a replay (at least once; not a failure)
    )
    unjustified_dead_letters: list[str] = field(default_factory=list)
    revised_clips: int = 0  # clips whose stored revision came after an earlier emission of the same id
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not (
            self.lost_clips
            or self.unexpected_clips
            or self.unanswered_clips
            or self.duplicate_rows
            or self.unjustified_dead_letters
        )


def arrival_schedule(
    trips: list[list[SegmentMessage]],
    pattern: str,
    rng: random.Random,
    *,
    t0: float,
    speed: float,
    idle_s: float,
) -> list[tuple[float, SegmentMessage]]:
    """When each upload of one vehicle's trips is sent, in wall seconds after the trial's start."""
    out: list[tuple[float, SegmentMessage]] = []
    outage_at = rng.uniform(0.3, 0.7)
    for k, trip in enumerate(trips):
        trip_end = max(m.end_ts for m in trip)
        for m in trip:
            realtime = (m.end_ts - t0) / speed + rng.uniform(0.05, 0.3)
            if pattern == "burst":
                at = (trip_end - t0) / speed + 0.5
            elif (
                pattern == "outage" and k == len(trips) // 2
            ):  # uploads stop mid-trip for twice the idle time
                first = (min(x.end_ts for x in trip) - t0) / speed
                cut = first + outage_at * (trip_end - min(x.end_ts for x in trip)) / speed
                at = realtime if realtime < cut else realtime + 2 * idle_s
            elif pattern == "backlog" and k == 0:  # the first trip comes after the last one
                at = (max(x.end_ts for t in trips for x in t) - t0) / speed + 1.0 + 0.02 * len(out)
            elif pattern == "lagging" and m.camera.value == "driver":
                at = realtime + 30.0 / speed
            else:
                at = realtime
            out.append((at, m))
    return out


class _Replay(threading.Thread):
    def __init__(self, producer: KafkaProducer, uploads: list[Upload]) -> None:
        super().__init__(daemon=True)
        self.producer, self.uploads = producer, sorted(uploads, key=lambda u: u.at)
        self.error: BaseException | None = None

    def run(self) -> None:
        started = time.monotonic()
        try:
            for u in self.uploads:
                time.sleep(max(0.0, u.at - (time.monotonic() - started)))
                self.producer.send(u.topic, key=u.key, value=u.value).get(30)
        except Exception as err:  # noqa: BLE001 - reported by the trial
            self.error = err


KILLABLE = ("joiner", "builder", "worker")  # the pipeline's processes, each killed in turn


@dataclass
class Soak:
    """The processes and data the trials share: one broker and database; a joiner, a clip builder and a worker kept
    running."""

    settings: Settings
    factory: sessionmaker[Session]
    work: Path
    speed: float = 8.0
    vehicles: int = 4
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    trips: list[list[list[SegmentMessage]]] = field(default_factory=list)  # per vehicle slot, per trip

    def start(self) -> None:
        ensure_topics(self.settings.kafka_bootstrap or "", self.settings)
        blobs = open_blob_store(self.settings)
        for s in make_scenarios(5, self.vehicles * 3, fleet_id=FLEET, vehicles=self.vehicles, duration=12.0):
            segments = write_segments(
                s, self.work / "sim" / s.scenario_id, segment_s=4.0, road_size=(64, 36), driver_size=(48, 36)
            )
            while len(self.trips) <= int(s.vehicle_id.split("-")[1]):
                self.trips.append([])
            self.trips[int(s.vehicle_id.split("-")[1])].append(to_messages(segments, blobs))
        # The worker serves the production model of its database: make it the one given.
        deploy(
            self.factory,
            version=model_version_of(self.settings.model),
            path=self.settings.model,
            demo=is_demo_model(self.settings.model),
        )
        for name in KILLABLE:
            self.spawn(name)

    def spawn(self, name: str) -> None:
        log = self.work / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as f:
            f.write(f"\n--- started {time.strftime('%H:%M:%S')} ---\n".encode())
        self.procs[name] = start_command([name], settings_env(self.settings), log)

    def stop(self) -> None:
        for proc in self.procs.values():
            stop_process(proc)

    def trial(self, n: int, rng: random.Random, *, timeout_s: float = 300.0) -> TrialResult:
        started = time.monotonic()
        run = uuid.uuid4().hex[:6]
        t0 = min(m.start_ts for trips in self.trips for trip in trips for m in trip)
        uploads: list[Upload] = []
        messages: dict[str, list[SegmentMessage]] = {}
        patterns = [rng.choice(PATTERNS) for _ in self.trips]
        for slot, (trips, pattern) in enumerate(zip(self.trips, patterns, strict=True)):
            vehicle = f"soak-{run}-{slot}"
            renamed = [
                [
                    m.model_copy(update={"vehicle_id": vehicle, "segment_id": f"{run}-{m.segment_id}"})
                    for m in trip
                ]
                for trip in trips
            ]
            messages[vehicle] = [m for trip in renamed for m in trip]
            for at, m in arrival_schedule(
                renamed, pattern, rng, t0=t0, speed=self.speed, idle_s=self.settings.vehicle_idle_s
            ):
                uploads.append(
                    Upload(
                        at, topic_for(m.camera, self.settings), vehicle.encode(), m.model_dump_json().encode()
                    )
                )
        duration = max(u.at for u in uploads)
        wrong = self._wrong_uploads(run, messages, duration, rng)
        uploads += [u for u, _ in wrong]
        expected = {
            p.clip_id: p
            for p in expected_fleet_clips(
                [m for ms in messages.values() for m in ms], JoinRules.from_settings(self.settings)
            )
        }
        killed = KILLABLE[(n - 1) % len(KILLABLE)]  # in turn; the moment is random
        kill_at = rng.uniform(0.2, 0.8) * duration
        producer = make_producer(self.settings.kafka_bootstrap or "", self.settings)
        replay = _Replay(producer, uploads)
        replay.start()
        time.sleep(kill_at)
        self.procs[killed].send_signal(signal.SIGKILL)
        self.procs[killed].wait(10)
        self.spawn(killed)
        replay.join(duration + 60)
        producer.close()
        if replay.error is not None:
            raise RuntimeError(f"trial {n}: publishing failed: {replay.error!r}")
        result = TrialResult(
            trial=n,
            killed=killed,
            killed_at_s=kill_at,
            patterns=patterns,
            segments=sum(len(ms) for ms in messages.values()),
            expected_clips=len(expected),
        )
        deadline = time.monotonic() + timeout_s
        while True:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"the {name} exited with code {proc.returncode}; see {self.work / 'logs'}"
                    )
            self._check(result, expected, set(messages))
            if result.ok or time.monotonic() > deadline:
                break
            time.sleep(2.0)
        self._check_dead_letters(result, set(messages), {reason for _, reason in wrong})
        result.seconds = time.monotonic() - started
        return result

    def _wrong_uploads(
        self, run: str, messages: dict[str, list[SegmentMessage]], duration: float, rng: random.Random
    ) -> list[tuple[Upload, str]]:
        """Two uploads that are wrong, not late: what the dead-letter topics may (and must) hold."""
        first, *rest = sorted(messages)
        sample = messages[first][0]
        old = sample.model_copy(
            update={"segment_id": f"{run}-too-old", "start_ts": 1_000_000.0, "end_ts": 1_000_004.0}
        )
        topic = topic_for(sample.camera, self.settings)
        return [
            (
                Upload(
                    rng.uniform(0, duration), topic, first.encode(), b'{"schema_version": 1, "vehicle_id": '
                ),
                "malformed_json",
            ),
            (
                Upload(
                    rng.uniform(0, duration),
                    topic,
                    (rest or [first])[0].encode(),
                    old.model_dump_json().encode(),
                ),
                "too_old",
            ),
        ]

    def _check(self, result: TrialResult, expected: dict, vehicles: set[str]) -> None:
        with self.factory() as session:
            clips = {
                r.clip_id: r
                for r in session.execute(
                    text("SELECT clip_id, revision FROM clips WHERE vehicle_id = ANY(:v)"),
                    {"v": list(vehicles)},
                )
            }
            segments: dict[str, set[str]] = {}
            for r in session.execute(
                text("""SELECT cs.clip_id, cs.segment_id FROM clip_segments cs
                                              JOIN clips c USING (clip_id) WHERE c.vehicle_id = ANY(:v)"""),
                {"v": list(vehicles)},
            ):
                segments.setdefault(r.clip_id, set()).add(r.segment_id)
            current: dict[str, int] = dict(
                session.execute(
                    text("""SELECT i.clip_id, i.clip_revision FROM current_inferences ci
                                                    JOIN inferences i ON i.id = ci.id JOIN clips c
                                                    ON c.clip_id = i.clip_id WHERE c.vehicle_id = ANY(:v)"""),
                    {"v": list(vehicles)},
                )
                .tuples()
                .all()
            )
            result.duplicate_rows = int(
                session.execute(
                    text("""
                SELECT coalesce(sum(n - 1), 0) FROM (
                    SELECT count(*) AS n FROM events e JOIN inferences i ON i.id = e.inference_id
                    JOIN clips c USING (clip_id) WHERE c.vehicle_id = ANY(:v)
                    GROUP BY e.inference_id, e.type, e.start_s, e.end_s HAVING count(*) > 1) d"""),
                    {"v": list(vehicles)},
                ).scalar_one()
            )
            answers = session.execute(
                text("""SELECT count(*) FROM inferences i JOIN clips c USING (clip_id)
                                               WHERE c.vehicle_id = ANY(:v) AND i.clip_revision < c.revision"""),
                {"v": list(vehicles)},
            ).scalar_one()
        result.lost_clips = sorted(
            k
            for k, p in expected.items()
            if k not in clips
            or clips[k].revision != p.revision
            or segments.get(k) != {s.segment_id for s in p.segments}
        )
        result.unexpected_clips = sorted(set(clips) - set(expected))
        result.unanswered_clips = sorted(k for k, p in expected.items() if current.get(k) != p.revision)
        result.revised_clips = int(answers)

    def _check_dead_letters(self, result: TrialResult, vehicles: set[str], justified: set[str]) -> None:
        topics = [dlq_name(self.settings.topic(t)) for t in (ROAD_TOPIC, DRIVER_TOPIC, CLIPS_TOPIC)]
        consumer = KafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        consumer.assign([TopicPartition(t, p) for t in topics for p in range(self.settings.partitions)])
        letters: dict[tuple[str, bytes | None, bytes], int] = {}
        quiet = time.monotonic()
        while time.monotonic() - quiet < 2.0:
            got = consumer.poll(300)
            for records in got.values():
                for r in records:
                    letter = json.loads(r.value)
                    if (r.key or b"").decode() in vehicles:
                        # Dead letters are at least once: a joiner killed after sending one and before its offset
                        # commit sends it again on replay. The same input with the same reason is one dead letter.
                        what = (
                            letter["reason"],
                            r.key,
                            json.dumps([letter["topic"], letter["payload"]]).encode(),
                        )
                        letters[what] = letters.get(what, 0) + 1
            if got:
                quiet = time.monotonic()
        consumer.close()
        reasons = [reason for reason, _, _ in letters]
        result.dead_letters = len(reasons)
        result.repeated_dead_letters = sum(letters.values()) - len(letters)
        result.unjustified_dead_letters = sorted(r for r in reasons if r not in justified)
        missing = justified - set(reasons)
        result.unjustified_dead_letters += [f"missing {m}" for m in sorted(missing)]


def soak_settings(settings: Settings, *, speed: float) -> Settings:
    """The joiner's times compressed like the fleet's: idle 4 s at 8x (a real 32 s), settle half of it."""
    idle = max(2.0, 32.0 / speed)
    return Settings(
        **{
            **settings.model_dump(),
            "vehicle_idle_s": idle,
            "settle_s": idle / 2,
            "max_segment_age_s": SIMULATED_FLEET_JOIN["max_segment_age_s"],
            "session_timeout_s": 10.0,
            "topic_prefix": f"{settings.topic_prefix}soak{uuid.uuid4().hex[:6]}.",
        }
    )


def run_soak(
    settings: Settings,
    factory: sessionmaker[Session],
    work: Path,
    *,
    trials: int,
    seed: int = 1,
    speed: float = 8.0,
    vehicles: int = 4,
    progress: Callable[[TrialResult], None] | None = None,
) -> list[TrialResult]:
    """`trials` trials on one joiner and one worker (settings.kafka_bootstrap and settings.model must be set; the
    model is promoted to production in the database of `factory`, so give the soak a database of its own)."""
    rng = random.Random(seed)
    soak = Soak(soak_settings(settings, speed=speed), factory, work, speed=speed, vehicles=vehicles)
    results = []
    with ExitStack() as stack:
        stack.callback(soak.stop)
        soak.start()
        for n in range(1, trials + 1):
            result = soak.trial(n, rng)
            results.append(result)
            if progress:
                progress(result)
    return results


def soak_on_scratch_database(
    settings: Settings,
    *,
    trials: int,
    seed: int,
    speed: float,
    vehicles: int,
    progress: Callable[[TrialResult], None] | None = None,
    say: Callable[[str], None] = print,
) -> list[TrialResult]:
    """`run_soak` in a database of its own (the soak promotes its model, and its rows are no fleet's), on the
    configured broker or the embedded one; everything it starts is stopped and the database dropped at the end."""
    import tempfile

    from streams.infra.broker import EmbeddedBroker
    from streams.infra.database import drop_scratch_database, make_engine, migrate, scratch_database

    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="drivecoach-soak-")))
        say(f"logs in {work / 'logs'} (removed at the end)")
        bootstrap = settings.kafka_bootstrap
        if not bootstrap:
            bootstrap = stack.enter_context(EmbeddedBroker(log_path=work / "broker.log")).bootstrap
            settings = settings.model_copy(update={"one_record_per_batch": True})
        database = scratch_database(settings, f"drivecoach_soak_{uuid.uuid4().hex[:6]}")
        stack.callback(database.close)
        stack.callback(drop_scratch_database, database, None)
        migrate(database.url)
        engine = make_engine(database.url)
        stack.callback(engine.dispose)
        url = database.url.render_as_string(hide_password=False)
        settings = settings.model_copy(
            update={"kafka_bootstrap": bootstrap, "home": work / "home", "database_url": url}
        )
        return run_soak(
            settings,
            sessionmaker(engine),
            work,
            trials=trials,
            seed=seed,
            speed=speed,
            vehicles=vehicles,
            progress=progress,
        )
