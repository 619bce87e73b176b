"""`drivecoach retention run`: finish the blob deletions an earlier run began, then, fleet by fleet and page by
page, delete what expired. The order makes a kill at any point harmless:

1. a blob's deletion is logged first as an intent (`deleted_at` NULL), after protection is checked again in the same
   transaction; 2. the blob is deleted (a missing one counts as deleted); 3. the intent is confirmed. A re-run
   confirms every intent left before planning anything new, and a blob URI is logged once (unique index), so each
   deletion is logged exactly once however often the job is cut short;
4. a clip's results, and later its row, go in one transaction each, with their log row: all or nothing.

A segment's upload goes after the frames of every clip built from it (its clips' state decides, `policy`); the
console's transcoded copy of an upload goes right after the upload, before its intent is confirmed."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.engine import Connection

from streams.infra.blobs import BlobNotFound, BlobStore
from streams.retention import store
from streams.retention.exceptions import RunInProgress
from streams.retention.policy import (
    ClipState,
    Periods,
    decide,
    footage_prefix,
    frames_uris,
    segment_video_due,
)

PAGE = 200  # clips decided per transaction of intents

Report = Callable[[str, str], None]  # (kind, subject): one deletion logged
# store.delete_results, store.delete_clip_row: (conn, run id, fleet, clip) -> what went, or None when kept
RowDeletion = Callable[[Connection, uuid.UUID, str, str], dict[str, int] | None]


@dataclass
class RunSummary:
    run_id: uuid.UUID
    dry_run: bool
    # kind -> deletions logged (in a dry run: that would be)
    deleted: Counter[str] = field(default_factory=Counter)
    resumed: int = 0  # intents of an interrupted run finished by this one
    kept: int = 0  # expired clips kept: a legal hold or open coaching
    fleets: list[str] = field(default_factory=list)


@dataclass
class RetentionJob:
    """One run over `engine` (the retention role's login) and `blobs`; `now` in epoch seconds."""

    engine: Engine
    blobs: BlobStore
    now: float
    dry_run: bool = False
    pause_s: float = 0.0  # between deletions: spares a busy store and database
    fleets: list[str] | None = None
    report: Report = lambda kind, subject: None
    summary: RunSummary = field(init=False)

    def __post_init__(self) -> None:
        self.summary = RunSummary(run_id=uuid.uuid4(), dry_run=self.dry_run)

    def run(self) -> RunSummary:
        with self.engine.connect() as lock:
            if not store.try_lock(lock):
                raise RunInProgress("another `drivecoach retention run` is running on this database")
            lock.commit()
            try:
                with self.engine.connect() as conn:
                    periods = store.fleet_periods(conn, self.fleets)
                if not self.dry_run:
                    self.summary.resumed = self._finish_pending()
                for fleet_id, fleet_periods in periods.items():
                    self.summary.fleets.append(fleet_id)
                    self._fleet(fleet_id, fleet_periods)
            finally:
                store.unlock(lock)  # the connection goes back to the pool, not away
                lock.commit()
        return self.summary

    # --- blobs ---------------------------------------------------------------------------------------------------

    def _finish_pending(self) -> int:
        with self.engine.connect() as conn:
            intents = store.pending(conn)
        for intent in intents:
            self._delete_blob(intent)
        return len(intents)

    def _delete_blob(self, intent: store.Intent) -> None:
        """Steps 2 and 3 for one intent (and, for an upload, its transcoded copies in between)."""
        detail: dict[str, str] = {}
        try:
            self.blobs.delete(intent.blob_uri)
        except BlobNotFound as err:  # another store's URI: nothing of ours to delete, and never will be
            detail["skipped"] = str(err)
        if intent.kind == "video":
            self._delete_footage(intent)
        with self.engine.begin() as conn:
            confirmed = store.confirm(conn, intent.blob_uri, detail)
        if confirmed:
            self._logged(intent.kind, intent.subject)

    def _delete_footage(self, video: store.Intent) -> None:
        """Each transcoded copy of the upload (plain, face-blurred), logged one by one as any blob. Runs after the
        upload is gone, so the console can make no new copy meanwhile."""
        for key in self.blobs.list_keys(footage_prefix(video.blob_uri)):
            uri = self.blobs.uri(key)
            with self.engine.begin() as conn:
                store.plan_blobs(conn, self.summary.run_id, video.fleet_id, [("footage", video.subject, uri)])
            self.blobs.delete(uri)
            with self.engine.begin() as conn:
                confirmed = store.confirm(conn, uri)
            if confirmed:
                self._logged("footage", video.subject)

    def _exists(self, uri: str) -> bool:
        try:
            self.blobs.check(uri)
        except BlobNotFound:
            return False
        return True

    # --- a fleet -------------------------------------------------------------------------------------------------

    def _fleet(self, fleet_id: str, periods: Periods) -> None:
        after = ""
        while True:
            with self.engine.connect() as conn:
                page = store.candidate_clips(conn, fleet_id, periods, self.now, after=after, limit=PAGE)
            if not page:
                break
            self._page(fleet_id, periods, page)
            after = page[-1]
        with self.engine.connect() as conn:
            unlinked = store.unlinked_segments(conn, fleet_id, periods, self.now)
        due = [s for s in unlinked if not s.logged]
        self._delete_blobs(fleet_id, [], [("video", s.segment_id, s.video_uri) for s in due])
        if not self.dry_run and unlinked:
            with self.engine.begin() as conn:
                store.delete_unlinked_segment_rows(conn, [s.segment_id for s in unlinked])

    def _page(self, fleet_id: str, periods: Periods, clip_ids: list[str]) -> None:
        with self.engine.connect() as conn:
            clips = store.clip_rows(conn, clip_ids)
            decisions = {c: decide(periods, row.state, self.now) for c, row in clips.items()}
            framed = [c for c, d in decisions.items() if d.frames]
            segments = store.segments_of(conn, framed) if framed else []
            others = sorted({c for s in segments for c in s.clip_ids} - clips.keys())
            linked: dict[str, ClipState] = {c: r.state for c, r in clips.items()}
            linked |= {c: r.state for c, r in store.clip_rows(conn, others).items()} if others else {}
        self.summary.kept += sum(row.state.protected for row in clips.values())  # expired, kept
        blobs: list[tuple[str, str, str]] = []
        for clip_id in framed:
            row = clips[clip_id]
            current, *earlier = frames_uris(row.frames_uri, row.revision, row.answered_frames)
            # The current frames are logged whether or not they are still there: their log row marks the video gone.
            blobs += [("frames", clip_id, uri) for uri in [current, *filter(self._exists, earlier)]]
        blobs += [
            ("video", s.segment_id, s.video_uri)
            for s in segments
            if not s.logged
            and segment_video_due(periods, s.end_ts, [linked[c] for c in s.clip_ids if c in linked], self.now)
        ]
        self._delete_blobs(fleet_id, framed + sorted({c for s in segments for c in s.clip_ids}), blobs)
        for clip_id in sorted(c for c, d in decisions.items() if d.results):
            self._rows("results", fleet_id, clip_id, store.delete_results)
        for clip_id in sorted(c for c, d in decisions.items() if d.row):
            self._rows("clip", fleet_id, clip_id, store.delete_clip_row)

    def _delete_blobs(self, fleet_id: str, involved: list[str], blobs: list[tuple[str, str, str]]) -> None:
        """Step 1 for a page's blobs (dropping any whose clips a hold or session protects by now), then 2 and 3."""
        if self.dry_run:
            for kind, subject, uri in blobs:
                self._logged(kind, subject)
                for _ in self.blobs.list_keys(footage_prefix(uri)) if kind == "video" else []:
                    self._logged("footage", subject)
            return
        if not blobs:
            return
        with self.engine.begin() as conn:
            protected = store.protected_clips(conn, involved) if involved else set()
            if protected:
                held = {s.segment_id for s in store.segments_of(conn, sorted(protected))}
                blobs = [
                    (kind, subject, uri)
                    for kind, subject, uri in blobs
                    if subject not in (protected if kind == "frames" else held)
                ]
            store.plan_blobs(conn, self.summary.run_id, fleet_id, blobs)
        with self.engine.connect() as conn:
            intents = [i for i in store.pending(conn) if i.fleet_id == fleet_id]
        for intent in intents:
            self._delete_blob(intent)

    def _rows(self, kind: str, fleet_id: str, clip_id: str, delete: RowDeletion) -> None:
        if self.dry_run:
            self._logged(kind, clip_id)
            return
        with self.engine.begin() as conn:
            done = delete(conn, self.summary.run_id, fleet_id, clip_id)
        if done is not None:
            self._logged(kind, clip_id)

    def _logged(self, kind: str, subject: str) -> None:
        self.summary.deleted[kind] += 1
        self.report(kind, subject)
        if self.pause_s and not self.dry_run:
            time.sleep(self.pause_s)
