"""Retention (migration 0019, streams/retention/, `drivecoach retention`) on the real Postgres and a real blob
directory, run through the job's own login: what expired goes from the store and the tables, what a legal hold or
open coaching protects stays, the report facts follow, each deletion is logged once, and a run killed (SIGKILL) or
cut short at any point, then run again, ends exactly where an uninterrupted run does."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from importlib import import_module
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from schemas.messages import ClipMessage, SegmentMessage, SegmentRef, TelemetrySample, View
from schemas.taxonomy import EventType
from streams.builder.build import with_telemetry
from streams.cli import app
from streams.console.video import playable
from streams.inference.sink import write_result
from streams.infra.blobs import BlobNotFound, BlobStore, LocalBlobStore, S3BlobStore
from streams.infra.roles import RETENTION_GROUP
from streams.joiner.segments import claim_check
from streams.retention.admin import place_hold, release_hold, set_periods
from streams.retention.job import RetentionJob, RunSummary
from streams.retention.policy import DAY_S, Periods, footage_prefix
from streams.webhooks.endpoints import add_endpoint
from tests.conftest import MotoS3, fresh_database
from tests.integration.harness import service_login
from tests.integration.test_sink import _result

pytestmark = pytest.mark.integration
DRIVER_WEEKS = import_module("schemas.migrations.versions.0021_driver_week_facts")

NOW = time.time()
# name -> (days since the clip ended, its uploads). `shared` is an upload of both shared-old and shared-new.
CLIPS = {
    "old": (100, ["old-road", "old-driver"]),
    "mid": (40, ["mid-road"]),
    "new": (1, ["new-road"]),
    "held": (100, ["held-road"]),
    "coaching": (100, ["coaching-road"]),
    "coached": (100, ["coached-road"]),
    "shared-old": (100, ["shared", "shared-old-driver"]),
    "shared-new": (1, ["shared"]),
}
PERIODS = Periods(video_days=30, results_days=60)


@pytest.fixture(scope="module")
def owner_url() -> Iterator[str]:
    with fresh_database() as url:
        yield url


@pytest.fixture(scope="module")
def owner(owner_url: str) -> Iterator[Engine]:
    engine = create_engine(owner_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def retention_url(owner_url: str) -> Iterator[str]:
    with service_login(owner_url, RETENTION_GROUP) as url:
        yield url


@pytest.fixture(scope="module")
def job_engine(retention_url: str) -> Iterator[Engine]:
    engine = create_engine(retention_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def blobs(tmp_path_factory: pytest.TempPathFactory) -> LocalBlobStore:
    return LocalBlobStore(tmp_path_factory.mktemp("retention") / "blobs")


@dataclass(frozen=True)
class Site:
    fleet: str
    uploads: dict[str, str]  # upload name -> its claim check


def _clip_id(fleet: str, name: str) -> str:
    return f"{fleet}-{name}"


def build(owner: Engine, blobs: BlobStore, periods: Periods = PERIODS) -> Site:
    """A fleet of CLIPS written by the worker's own sink, with real blobs: each upload, each clip's frames (`old`
    twice: a late upload rebuilt it, and its first answer keeps revision 1's frames), a transcoded copy of `old-road`;
    a reviewed answer on `old`; a legal hold on `held`; an open coaching session on `coaching` and an acknowledged
    one on `coached`."""
    fleet = f"fleet-ret-{uuid.uuid4().hex[:8]}"
    factory = sessionmaker(owner)
    uploads = {
        name: blobs.put_bytes(f"uploads/{fleet}/{name}.mp4", f"video {fleet} {name}".encode())
        for _, names in CLIPS.values()
        for name in names
    }
    for copy in ("webm", "faces-v1.webm"):  # the console's plain and face-blurred transcodings
        blobs.put_bytes(footage_prefix(uploads["old-road"]) + copy, b"webm")
    for name, (age, names) in CLIPS.items():
        end = NOW - age * DAY_S
        for revision in (1, 2) if name == "old" else (1,):
            clip = ClipMessage(
                clip_id=_clip_id(fleet, name),
                fleet_id=fleet,
                vehicle_id=f"{fleet}-veh",
                driver_id=f"{fleet}-drv",
                start_ts=end - 30,
                end_ts=end,
                views=[View.ROAD],
                segments=[
                    SegmentRef(
                        segment_id=f"{fleet}-{s}",
                        camera=View.ROAD,
                        start_ts=end - 30,
                        end_ts=end,
                        video_uri=uploads[s],
                    )
                    for s in names
                ],
                frames_uri=blobs.put_bytes(
                    f"clips/{fleet}-veh/{_clip_id(fleet, name)}.r{revision}.npz",
                    f"frames {revision}".encode(),
                ),
                num_frames=4,
                frame_width=28,
                frame_height=28,
                sample_fps=2.0,
                revision=revision,
            )
            write_result(
                factory, clip=clip, result=_result(clip, "m-retention", [EventType.PHONE_USE], "Eyes up.")
            )
    with owner.begin() as conn:
        conn.execute(
            text("""INSERT INTO reviews (fleet_id, inference_id, reviewer, verdict)
                    SELECT fleet_id, id, 'mgr', 'accepted' FROM inferences WHERE clip_id = :c"""),
            {"c": _clip_id(fleet, "old")},
        )
        for name, acknowledged in (("coaching", None), ("coached", NOW - 50 * DAY_S)):
            session_id = conn.execute(
                text("""INSERT INTO coaching_sessions (fleet_id, driver_id, coach, due_on, created_by, acknowledged_at)
                        VALUES (:f, :d, 'coach', :due, 'mgr', to_timestamp(:ack)) RETURNING id"""),
                {"f": fleet, "d": f"{fleet}-drv", "due": date(2026, 1, 5), "ack": acknowledged},
            ).scalar_one()
            conn.execute(
                text(
                    "INSERT INTO coaching_session_clips (session_id, clip_id, fleet_id) VALUES (:s, :c, :f)"
                ),
                {"s": session_id, "c": _clip_id(fleet, name), "f": fleet},
            )
    with Session(owner) as session, session.begin():
        set_periods(session, fleet, periods)
        place_hold(
            session, fleet_id=fleet, clip_id=_clip_id(fleet, "held"), reason="claim 7", held_by="legal"
        )
    return Site(fleet, uploads)


def run(engine: Engine, blobs: BlobStore, site: Site, **options: Any) -> RunSummary:
    return RetentionJob(engine=engine, blobs=blobs, now=NOW, fleets=[site.fleet], **options).run()


def state(owner: Engine, blobs: LocalBlobStore, site: Site) -> dict[str, list[Any]]:
    """What is left of the fleet and what its log says, with the fleet's id taken out (fleets compare)."""

    def strip(value: str) -> str:
        return value.replace(site.fleet, "F")

    with owner.connect() as conn:

        def names(sql: str) -> list[str]:
            return sorted(strip(str(v)) for v in conn.execute(text(sql), {"f": site.fleet}).scalars())

        log = conn.execute(
            text("""SELECT kind, subject, blob_uri, deleted_at IS NOT NULL AS done FROM retention_deletions
                    WHERE fleet_id = :f"""),
            {"f": site.fleet},
        ).all()
        found: dict[str, list[Any]] = {
            "clips": names("SELECT clip_id FROM clips WHERE fleet_id = :f"),
            "segments": names("SELECT segment_id FROM segments WHERE fleet_id = :f"),
            "answered": names("SELECT DISTINCT clip_id FROM inferences WHERE fleet_id = :f"),
            "reviews": names("SELECT inference_id::text FROM reviews WHERE fleet_id = :f"),
            "event_facts": names("SELECT DISTINCT clip_id FROM event_facts WHERE fleet_id = :f"),
            "answer_facts": names("SELECT DISTINCT clip_id FROM answer_facts WHERE fleet_id = :f"),
            "coaching_links": names("SELECT clip_id FROM coaching_session_clips WHERE fleet_id = :f"),
            "holds": names("SELECT clip_id FROM legal_holds WHERE fleet_id = :f"),
            # a transcoded copy's name is a digest of its upload's URI, which names the fleet
            "log": sorted(
                (
                    r.kind,
                    strip(r.subject),
                    "" if r.kind == "footage" else strip(Path(r.blob_uri).name),
                    r.done,
                )
                for r in log
            ),
        }
    files = [p for p in blobs.root.rglob("*") if p.is_file() and site.fleet in p.as_posix()]
    footage = [
        (name, key) for name, uri in site.uploads.items() for key in blobs.list_keys(footage_prefix(uri))
    ]
    found["blobs"] = sorted(
        [strip(p.relative_to(blobs.root).as_posix()) for p in files]
        + [f"footage of {name}: {key.rpartition('.')[0].rpartition('.')[2]}" for name, key in footage]
    )
    return found


def test_a_run_deletes_what_expired_and_keeps_what_is_protected(
    owner: Engine, job_engine: Engine, blobs: LocalBlobStore
) -> None:
    site = build(owner, blobs)
    before = state(owner, blobs, site)
    summary = run(job_engine, blobs, site)
    after = state(owner, blobs, site)

    # Past both periods, unprotected: everything, rows included (old, coached, shared-old).
    # Past the video period only (mid): its blobs; its answer and row stay.
    # Within both (new), held, in open coaching: everything stays.
    assert after["clips"] == ["F-coaching", "F-held", "F-mid", "F-new", "F-shared-new"]
    assert after["answered"] == ["F-coaching", "F-held", "F-mid", "F-new", "F-shared-new"]
    assert after["event_facts"] == after["answer_facts"] == after["answered"]  # the facts followed
    # and the scores' facts (migration 0021): the deleted clips' driving is gone
    with owner.connect() as conn:
        facts, recomputed = (
            conn.execute(
                text(f"SELECT * FROM ({source}) t WHERE fleet_id = :f ORDER BY week, vehicle_id"),
                {"f": site.fleet},
            ).all()
            for source in ("SELECT * FROM driver_week_facts", DRIVER_WEEKS.RECOMPUTE)
        )
    assert facts == recomputed and sum(r.clips for r in facts) == len(after["clips"])
    assert before["reviews"] and after["reviews"] == []  # old's review went with its answers
    assert after["coaching_links"] == ["F-coaching"]  # the acknowledged session's link went with its clip
    assert after["holds"] == ["F-held"]
    # `shared` is also an upload of shared-new, which keeps it (row and video); shared-old's own upload goes.
    # mid-road's row stays while mid's row links it; its video is gone.
    assert after["segments"] == ["F-coaching-road", "F-held-road", "F-mid-road", "F-new-road", "F-shared"]
    assert (
        before["blobs"]
        != after["blobs"]
        == [
            "clips/F-veh/F-coaching.r1.npz",
            "clips/F-veh/F-held.r1.npz",
            "clips/F-veh/F-new.r1.npz",
            "clips/F-veh/F-shared-new.r1.npz",
            "uploads/F/coaching-road.mp4",
            "uploads/F/held-road.mp4",
            "uploads/F/new-road.mp4",
            "uploads/F/shared.mp4",
        ]
    )
    assert sorted((kind, subject) for kind, subject, _, _ in after["log"]) == sorted(
        [
            ("frames", "F-old"),  # revision 2, the current frames
            ("frames", "F-old"),  # revision 1, which its first answer was made on
            ("frames", "F-mid"),
            ("frames", "F-coached"),
            ("frames", "F-shared-old"),
            ("video", "F-old-road"),
            ("video", "F-old-driver"),
            ("video", "F-mid-road"),
            ("video", "F-coached-road"),
            ("video", "F-shared-old-driver"),
            ("footage", "F-old-road"),
            ("footage", "F-old-road"),
            ("results", "F-old"),
            ("results", "F-coached"),
            ("results", "F-shared-old"),
            ("clip", "F-old"),
            ("clip", "F-coached"),
            ("clip", "F-shared-old"),
        ]
    )
    assert all(done for *_, done in after["log"])
    assert sum(summary.deleted.values()) == len(after["log"])
    assert summary.kept == 2  # held, coaching

    # Idempotent: a second run deletes nothing and logs nothing.
    again = run(job_engine, blobs, site)
    assert sum(again.deleted.values()) == 0 and state(owner, blobs, site) == after


def test_an_uploads_row_goes_with_the_last_clip_that_links_it(
    owner: Engine, job_engine: Engine, blobs: LocalBlobStore
) -> None:
    """Uploads' rows go with the last clip that links them; until then the log says their video is gone."""
    site = build(owner, blobs)
    run(job_engine, blobs, site)
    assert "F-mid-road" in state(owner, blobs, site)["segments"]
    with Session(owner) as session, session.begin():
        set_periods(session, site.fleet, Periods(video_days=30, results_days=30))
    summary = run(job_engine, blobs, site)
    assert dict(summary.deleted) == {"results": 1, "clip": 1}
    after = state(owner, blobs, site)
    assert "F-mid" not in after["clips"] and "F-mid-road" not in after["segments"]


def test_results_expire_on_their_own_period(owner: Engine, job_engine: Engine, blobs: LocalBlobStore) -> None:
    """Results kept 30 days, video forever: old answers, events, reviews and their report facts go; every blob and
    clip row stays (the footage is still there to review), and the facts equal a full recomputation."""
    site = build(owner, blobs, Periods(video_days=None, results_days=30))
    before = state(owner, blobs, site)
    summary = run(job_engine, blobs, site)
    after = state(owner, blobs, site)
    assert dict(summary.deleted) == {"results": 4}  # old, mid, coached, shared-old; held and coaching kept
    assert after["answered"] == after["event_facts"] == ["F-coaching", "F-held", "F-new", "F-shared-new"]
    assert after["blobs"] == before["blobs"] and after["clips"] == before["clips"]
    assert before["reviews"] and after["reviews"] == []
    facts = """SELECT 'event', event_id, clip_id, coaching_status, day::text FROM event_facts WHERE fleet_id = :f
               UNION ALL SELECT 'answer', inference_id, clip_id, events::text, occurred_at::text FROM answer_facts
               WHERE fleet_id = :f ORDER BY 1, 2"""
    with owner.begin() as conn:
        kept = conn.execute(text(facts), {"f": site.fleet}).all()
        conn.execute(
            text(
                "SELECT drivecoach_refresh_event_facts(ARRAY(SELECT clip_id FROM clips WHERE fleet_id = :f))"
            ),
            {"f": site.fleet},
        )
        assert conn.execute(text(facts), {"f": site.fleet}).all() == kept
        conn.rollback()


def test_webhook_deliveries_naming_an_expired_clip_go_with_its_results(
    owner: Engine, job_engine: Engine, blobs: LocalBlobStore
) -> None:
    """A delivery's payload names the clip, its vehicle and driver (migration 0020): delivered, dead or still
    pending, it goes with the clip's results; those of kept clips stay."""
    site = build(owner, blobs, Periods(video_days=None, results_days=30))
    old, coached, new = (_clip_id(site.fleet, n) for n in ("old", "coached", "new"))
    with owner.begin() as conn:
        endpoint, _ = add_endpoint(
            conn, fleet_id=site.fleet, url="http://127.0.0.1:9/hook", kinds=["review_done"]
        )
        for subject, status, payload in (
            ("a", "delivered", {"clip_id": old}),
            ("b", "pending", {"clip_id": old}),
            ("c", "dead", {"clip_ids": [coached, new]}),
            ("d", "delivered", {"clip_id": new}),
        ):
            conn.execute(
                text("""INSERT INTO webhook_outbox (fleet_id, endpoint_id, kind, subject, payload, status)
                        VALUES (:f, :e, 'review_done', :s, CAST(:p AS jsonb), :st)"""),
                {"f": site.fleet, "e": endpoint, "s": subject, "p": json.dumps(payload), "st": status},
            )
    run(job_engine, blobs, site)
    with owner.connect() as conn:
        left = conn.execute(
            text("SELECT subject FROM webhook_outbox WHERE fleet_id = :f ORDER BY subject"), {"f": site.fleet}
        ).scalars()
        assert list(left) == ["d"]


def test_a_released_hold_lets_the_clip_go(owner: Engine, job_engine: Engine, blobs: LocalBlobStore) -> None:
    site = build(owner, blobs)
    run(job_engine, blobs, site)
    with Session(owner) as session, session.begin():
        assert release_hold(
            session,
            fleet_id=site.fleet,
            clip_id=_clip_id(site.fleet, "held"),
            released_by="legal",
            at=datetime.now(UTC),
        )
    summary = run(job_engine, blobs, site)
    assert dict(summary.deleted) == {"frames": 1, "video": 1, "results": 1, "clip": 1}
    after = state(owner, blobs, site)
    assert "F-held" not in after["clips"] and after["holds"] == []  # the released hold went with its clip


# --- interrupted runs ---------------------------------------------------------------------------------------------


class Killed(BaseException):
    """Stands for the process dying: nothing in the job catches it."""


class DyingStore(LocalBlobStore):
    """The blob directory, where the job dies at its `at`-th blob deletion: just before it (intent logged, blob still
    there) or just after it (blob gone, deletion not confirmed)."""

    def __init__(self, root: Path, *, at: int, after: bool) -> None:
        super().__init__(root)
        self.at, self.after, self.calls = at, after, 0

    def delete(self, uri: str) -> bool:
        self.calls += 1
        if self.calls == self.at and not self.after:
            raise Killed
        existed = super().delete(uri)
        if self.calls == self.at:
            raise Killed
        return existed


@pytest.fixture(scope="module")
def reference(owner: Engine, job_engine: Engine, blobs: LocalBlobStore) -> dict[str, list[Any]]:
    """Where an uninterrupted run leaves the scenario."""
    site = build(owner, blobs)
    run(job_engine, blobs, site)
    return state(owner, blobs, site)


@pytest.mark.parametrize("after", [False, True], ids=["before-blob", "after-blob"])
# 12 blob deletions in all: 5 frames, then the uploads in id order; the 9th is old-road, the 10th and 11th its copies
@pytest.mark.parametrize("at", [1, 5, 9, 10, 12])
def test_a_run_cut_short_at_any_blob_converges_on_the_next(
    owner: Engine,
    job_engine: Engine,
    blobs: LocalBlobStore,
    reference: dict[str, list[Any]],
    at: int,
    after: bool,
) -> None:
    site = build(owner, blobs)
    with pytest.raises(Killed):
        run(job_engine, DyingStore(blobs.root, at=at, after=after), site)
    cut = state(owner, blobs, site)
    assert cut != reference and any(not done for *_, done in cut["log"])
    summary = run(job_engine, blobs, site)
    assert summary.resumed >= 1
    assert state(owner, blobs, site) == reference  # each deletion logged once, and done
    assert sum(run(job_engine, blobs, site).deleted.values()) == 0


def _cli(env: dict[str, str], *args: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "retention", "run", *args], env=env, stdout=out, stderr=out
        )


@pytest.mark.parametrize("kill_after", [3, 9])
def test_sigkill_mid_run_then_a_rerun_ends_as_a_clean_run(
    owner: Engine,
    retention_url: str,
    blobs: LocalBlobStore,
    reference: dict[str, list[Any]],
    tmp_path: Path,
    kill_after: int,
) -> None:
    """`drivecoach retention run` as the CronJob runs it (its own login), killed with SIGKILL once `kill_after`
    deletions are logged (--pause-ms slows it enough to be caught mid-way), then run again to the end."""
    site = build(owner, blobs)
    env = {
        **os.environ,
        "DRIVECOACH_DATABASE_URL": retention_url,
        "DRIVECOACH_BLOB_DIR": str(blobs.root),
        "DRIVECOACH_HOME": str(tmp_path),
    }
    log = tmp_path / "retention.log"
    proc = _cli(env, "--fleet", site.fleet, "--pause-ms", "300", log=log)
    count = text("SELECT count(*) FROM retention_deletions WHERE fleet_id = :f")
    deadline = time.monotonic() + 60
    with owner.connect() as conn:
        while conn.execute(count, {"f": site.fleet}).scalar_one() < kill_after:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.02)
            conn.rollback()
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    assert state(owner, blobs, site) != reference
    rerun = _cli(env, "--fleet", site.fleet, log=log)
    assert rerun.wait(timeout=120) == 0, log.read_text()
    assert state(owner, blobs, site) == reference
    again = _cli(env, "--fleet", site.fleet, log=log)
    assert again.wait(timeout=120) == 0, log.read_text()
    assert state(owner, blobs, site) == reference


# --- the job's login, the commands, the stores -------------------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO fleet_retention (fleet_id, video_days) VALUES ('x', 0)",
        "UPDATE fleet_retention SET video_days = 0",
        "UPDATE legal_holds SET released_at = now()",
        "DELETE FROM legal_holds",
        "UPDATE clips SET end_ts = 0",
        "INSERT INTO events (fleet_id, inference_id, type, view, start_s, end_s) VALUES ('x', 1, 'x', 'x', 0, 1)",
        "DELETE FROM coaching_sessions",
        "SELECT * FROM managers",
        "SELECT * FROM audit_log",
        "DELETE FROM retention_deletions",
        "CREATE TABLE sneaky (id int)",
    ],
)
def test_the_job_login_cannot_do_what_retention_never_does(job_engine: Engine, statement: str) -> None:
    with job_engine.connect() as conn, pytest.raises(ProgrammingError, match="permission denied"):
        conn.execute(text(statement))


def test_a_fleet_role_reads_only_its_own_retention(owner: Engine, blobs: LocalBlobStore) -> None:
    from streams.infra.tenancy import ensure_fleet_role, fleet_role

    a, b = build(owner, blobs), build(owner, blobs)
    with owner.begin() as conn:
        ensure_fleet_role(conn, a.fleet)
    with owner.begin() as conn:
        conn.execute(text(f'SET LOCAL ROLE "{fleet_role(conn, a.fleet)}"'))
        for table in ("fleet_retention", "legal_holds"):
            assert set(conn.execute(text(f"SELECT fleet_id FROM {table}")).scalars()) == {a.fleet}, table
        assert b.fleet  # built, with a period and a hold of its own
        with pytest.raises(ProgrammingError, match="permission denied"):
            conn.execute(text("UPDATE fleet_retention SET video_days = NULL"))


def test_the_commands(owner_url: str, owner: Engine, blobs: LocalBlobStore, tmp_path: Path) -> None:
    """settings, hold, release and a dry run, as an operator types them."""
    site = build(owner, blobs, Periods())
    env = {
        "DRIVECOACH_DATABASE_URL": owner_url,
        "DRIVECOACH_BLOB_DIR": str(blobs.root),
        "DRIVECOACH_HOME": str(tmp_path),
    }
    cli = CliRunner()

    def invoke(*args: str) -> str:
        result = cli.invoke(app, ["retention", *args], env=env)
        assert result.exit_code == 0, result.output
        return " ".join(result.output.split())  # rich wraps at the terminal's width

    assert "video kept forever, results kept forever" in invoke("settings", "--fleet", site.fleet)
    assert "video kept 30 days, results kept forever" in invoke(
        "settings", "--fleet", site.fleet, "--video-days", "30"
    )
    assert "video kept 30 days, results kept 60 days" in invoke(
        "settings", "--fleet", site.fleet, "--results-days", "60"
    )
    assert "video kept forever" in invoke("settings", "--fleet", site.fleet, "--keep-video")
    invoke("settings", "--fleet", site.fleet, "--video-days", "30")
    old = _clip_id(site.fleet, "old")
    assert "is held" in invoke("hold", old, "--fleet", site.fleet, "--reason", "claim 12", "--by", "legal")
    before = state(owner, blobs, site)
    dry = invoke("run", "--dry-run", "--fleet", site.fleet)
    assert (
        "dry run: nothing was deleted" in dry and state(owner, blobs, site) == before
    )  # nothing deleted, nothing logged
    assert "released 1 hold(s)" in invoke("release", old, "--fleet", site.fleet)
    failed = cli.invoke(app, ["retention", "release", old, "--fleet", site.fleet], env=env)
    assert failed.exit_code == 1 and "no active hold" in " ".join(failed.output.split())
    failed = cli.invoke(app, ["retention", "hold", "nope", "--fleet", site.fleet, "--reason", "x"], env=env)
    assert failed.exit_code == 1 and "has no clip" in " ".join(failed.output.split())
    failed = cli.invoke(
        app, ["retention", "settings", "--fleet", "no-such-fleet", "--video-days", "1"], env=env
    )
    assert failed.exit_code == 1 and "no fleet 'no-such-fleet'" in " ".join(failed.output.split())


def test_migrate_makes_the_retention_login(owner_url: str, tmp_path: Path) -> None:
    login = f"dc_ret_{uuid.uuid4().hex[:8]}"
    env = {
        "DRIVECOACH_DATABASE_URL": owner_url,
        "DRIVECOACH_HOME": str(tmp_path),
        "DRIVECOACH_RETENTION_DB_PASSWORD": "pw",
    }
    result = CliRunner().invoke(app, ["migrate", "--retention-login", login], env=env)
    engine = create_engine(owner_url)
    try:
        assert result.exit_code == 0, result.output
        with engine.connect() as conn:
            assert conn.execute(
                text("SELECT pg_has_role(:l, :g, 'member')"), {"l": login, "g": RETENTION_GROUP}
            ).scalar()
            conn.execute(text(f'DROP ROLE "{login}"'))
            conn.commit()
    finally:
        engine.dispose()
    missing = CliRunner().invoke(
        app, ["migrate", "--retention-login", login], env={**env, "DRIVECOACH_RETENTION_DB_PASSWORD": ""}
    )
    assert missing.exit_code == 2 and "DRIVECOACH_RETENTION_DB_PASSWORD" in missing.output


def test_the_footage_it_deletes_is_where_the_console_keeps_it(blobs: LocalBlobStore, tmp_path: Path) -> None:
    """An MJPEG upload no browser plays: the console transcodes it into the store, under `footage_prefix`."""
    path = tmp_path / "cab.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 5.0, (64, 48))
    for i in range(5):
        writer.write(np.full((48, 64, 3), i * 40, np.uint8))
    writer.release()
    uri = blobs.put_file(f"uploads/footage-{uuid.uuid4().hex[:6]}/cab.avi", path)
    stored, kind = playable(blobs, uri)
    assert kind == "video/webm" and stored == blobs.uri(footage_prefix(uri) + "webm")
    assert blobs.list_keys(footage_prefix(uri)) == [footage_prefix(uri) + "webm"]


def test_the_telemetry_the_joiner_spills_goes_with_its_upload(blobs: LocalBlobStore) -> None:
    """The joiner keeps an upload's telemetry (GPS included) beside the upload's derived copies, so the run that
    deletes the video deletes it too (logged as footage), and the clip builder finds it under the ref's key."""
    video = base64.b64encode(b"not decoded here").decode()
    samples = [TelemetrySample(t=1000.0 + k, speed_kmh=40.0 + k, lat=52.1, lon=4.3) for k in range(5)]
    message = SegmentMessage(
        fleet_id="fleet-spill",
        vehicle_id="veh-spill",
        camera=View.ROAD,
        segment_id=f"spill-{uuid.uuid4().hex[:6]}",
        start_ts=1000.0,
        end_ts=1005.0,
        fps=5.0,
        width=64,
        height=48,
        codec="h264",
        video_b64=video,
        telemetry=samples,
    )
    kept = claim_check(message, blobs)
    ref = kept.ref(kept.video_uri or "")
    assert ref.telemetry == () and ref.telemetry_key is not None
    assert blobs.list_keys(footage_prefix(ref.video_uri)) == [ref.telemetry_key]
    assert with_telemetry(ref, blobs).telemetry == tuple(samples)


def test_a_run_on_the_s3_store(owner: Engine, job_engine: Engine, s3_server: MotoS3) -> None:
    store = S3BlobStore(f"s3://{s3_server.bucket()}/base", s3_server.endpoint)
    site = build(owner, store)
    summary = run(job_engine, store, site)
    assert dict(summary.deleted) == {"frames": 5, "video": 5, "footage": 2, "results": 3, "clip": 3}
    for name in ("old-road", "mid-road", "shared-old-driver"):
        with pytest.raises(BlobNotFound):
            store.check(site.uploads[name])
    assert store.list_keys(footage_prefix(site.uploads["old-road"])) == []
    for name in ("new-road", "held-road", "coaching-road", "shared"):
        store.check(site.uploads[name])
    assert store.delete(site.uploads["new-road"]) and not store.delete(site.uploads["new-road"])
    assert sum(run(job_engine, store, site).deleted.values()) == 0


def test_0019_downgrades_and_upgrades_again() -> None:
    """Its tables and the role's grants and policies go with a downgrade and come back; the role stays
    (cluster-wide: other databases of the cluster may use it)."""
    from alembic import command

    from schemas.migrations import alembic_config, upgrade

    with fresh_database() as url:
        engine = create_engine(url)

        def state() -> tuple[int, int, bool]:
            with engine.connect() as conn:
                tables = conn.execute(
                    text("""SELECT count(*) FROM pg_tables WHERE schemaname = 'public'
                            AND tablename IN ('fleet_retention', 'legal_holds', 'retention_deletions')""")
                ).scalar_one()
                policies = conn.execute(
                    text("SELECT count(*) FROM pg_policies WHERE policyname = 'retention_job'")
                ).scalar_one()
                grants = conn.execute(
                    text("SELECT has_table_privilege(:r, 'clips', 'DELETE')"), {"r": RETENTION_GROUP}
                ).scalar_one()
            return tables, policies, grants

        try:
            assert state() == (3, 13, True)  # 12 policies of 0019's, and 0020's on webhook_outbox
            command.downgrade(alembic_config(url), "0018")
            assert state() == (0, 0, False)
            upgrade(url)
            assert state() == (3, 13, True)
        finally:
            engine.dispose()
