"""Downloads for evidence: a clip's package (`/clips/{id}/evidence.zip`: an MP4 of its stacked frames, its records,
a manifest with every file's SHA-256) and every report as CSV (`/reports/{name}.csv`, the JSON API's rows and
parameters). Each download is written to the audit log as `export`; the layouts are evidence.py's."""

# No `from __future__ import annotations`: FastAPI resolves the routes' Annotated dependencies at import.
import logging
import tempfile
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import cv2
import numpy as np
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel
from sqlalchemy.engine import Connection

from schemas.taxonomy import EventType
from streams.console import audit, coaching, evidence
from streams.console.auth import SignedIn
from streams.console.deps import Api, ClipId, ConsoleState, Day, State
from streams.console.frames import clip_frames_rgb
from streams.console.models import (
    CoachingItemOut,
    ErrorOut,
    QueueItemOut,
    RateRowOut,
    RuleEventRowOut,
    ScoreRowOut,
    TrendRowOut,
)
from streams.console.pages import _blob_errors, _unblurred
from streams.console.queries import clip_detail, coaching_list, latest_day
from streams.console.reports import (
    Filters,
    event_rates,
    review_queue,
    safety_scores,
    score_events,
    score_rows,
    score_settings,
    trend,
)
from streams.console.rule_report import ROW_COLUMNS, compare_rules, rules_window
from streams.errors import DrivecoachError
from streams.infra.tenancy import fleet_connection

router = APIRouter()
log = logging.getLogger(__name__)
MP4_FOURCC = "mp4v"  # MPEG-4 Part 2: this OpenCV build has no H.264 encoder (docs/knowledge.md); VLC and QuickTime play it
CSV_TYPE = "text/csv; charset=utf-8"
EFFECT_COLUMNS = ("session", "driver", "coach", "acknowledged", "before_per_hour", "after_per_hour", "change")
SESSION_COLUMNS = (
    "public_id",
    "status",
    "driver_id",
    "coach",
    "due_on",
    "clips",
    "created_by",
    "created_at",
    "acknowledged_at",
)
SCORE_EVENT_COLUMNS = ("occurred_at", "type", "severity", "coaching_status", "clip_id")
Group = Literal["fleet", "vehicle", "driver"]


class MP4Unwritable(DrivecoachError):
    """This OpenCV build cannot write the package's MP4."""


def frames_mp4(frames: np.ndarray, fps: float) -> bytes:
    """The clip's (T, H, W, 3) RGB frames as an MP4 at the clip's own sampling rate (OpenCV writes only to a
    file). An odd height or width gets a black row or column at the bottom or right: the encoder needs even sizes
    and would otherwise drop the last one, and evidence keeps every pixel."""
    frames = np.pad(frames, ((0, 0), (0, frames.shape[1] % 2), (0, frames.shape[2] % 2), (0, 0)))
    height, width = frames.shape[1:3]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "frames.mp4"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*MP4_FOURCC), fps, (width, height))
        if not writer.isOpened():
            raise MP4Unwritable(f"OpenCV cannot write {MP4_FOURCC} MP4 of {width}x{height}")
        try:
            for frame in frames:
                writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        finally:
            writer.release()
        return path.read_bytes()


@router.get(
    "/clips/{clip_id}/evidence.zip",
    response_class=Response,
    tags=["clips"],
    responses={
        200: {"content": {"application/zip": {}}, "description": "the clip's evidence package"},
        403: {"model": ErrorOut, "description": "unblurred without the view_unblurred permission"},
        404: {"model": ErrorOut, "description": "no such clip, or its frames are gone"},
        409: {"model": ErrorOut, "description": "the clip's frames file is damaged"},
        503: {"model": ErrorOut, "description": "the blob store does not answer"},
    },
)
def evidence_package(
    ctx: State,
    request: Request,
    who: Api,
    clip_id: ClipId,
    unblurred: Annotated[
        bool, Query(description="faces unblurred: needs the view_unblurred permission; audited")
    ] = False,
) -> Response:
    """One ZIP with the clip's frames as MP4 (faces blurred unless `unblurred`), clip.json, events.json,
    instruction.txt, reviews.json, coaching.json and manifest.json (each file's size and SHA-256; its own SHA-256 in
    manifest.sha256 and the `X-Manifest-SHA256` header). Written to the audit log as `export`."""
    now = datetime.now(UTC).replace(microsecond=0)
    with fleet_connection(ctx.engine, who.fleet_id) as conn:
        clip = clip_detail(conn, clip_id)
        sessions = coaching.clip_sessions(conn, clip_id, now.date()) if clip else []
    if clip is None:
        raise HTTPException(404, "no such clip")
    if unblurred:
        _unblurred(ctx, request, who, clip_id, "evidence package")
    with _blob_errors(
        clip_id,
        "frames",
        "the clip's frames are gone from the blob store",
        "the clip's frames file is damaged and cannot be exported",
    ):
        frames = clip_frames_rgb(ctx.blobs, clip.frames_uri, blurred=not unblurred)
    files = {
        "frames.mp4": frames_mp4(frames, clip.sample_fps),
        "clip.json": evidence.json_bytes(
            evidence.clip_record(clip, height=frames.shape[1], width=frames.shape[2])
        ),
        "events.json": evidence.json_bytes(evidence.events_record(clip)),
        "instruction.txt": (clip.instruction + "\n").encode("utf-8"),
        "reviews.json": evidence.json_bytes(evidence.reviews_record(clip)),
        "coaching.json": evidence.json_bytes(evidence.coaching_record(sessions)),
    }
    listed = evidence.manifest(
        files, clip_id=clip_id, exported_by=who.username, exported_at=now, faces_blurred=not unblurred
    )
    name = evidence.download_name("evidence", clip_id, now.strftime("%Y%m%dT%H%M%SZ"), suffix="")
    built = evidence.package(name, files, listed)
    _record_export(
        ctx,
        request,
        who,
        subject=clip_id,
        detail={
            "what": "evidence package",
            "faces_blurred": not unblurred,
            "manifest_sha256": built.manifest_sha256,
            "package_sha256": built.sha256,
        },
    )
    log.info(
        "%s exported the evidence package of clip %s (blurred: %s)", who.username, clip_id, not unblurred
    )
    return Response(
        built.data,
        media_type="application/zip",
        headers={
            "Content-Disposition": f'attachment; filename="{name}.zip"',
            "X-Manifest-SHA256": built.manifest_sha256,
            "Cache-Control": "no-store",
        },
    )


def _record_export(
    ctx: ConsoleState, request: Request, who: SignedIn, *, subject: str, detail: dict[str, Any]
) -> None:
    with fleet_connection(ctx.engine, who.fleet_id) as conn:
        audit.record(
            conn,
            fleet_id=who.fleet_id,
            username=who.username,
            action="export",
            subject=subject,
            detail=detail,
            address=request.client.host if request.client else None,
        )


def _as_json(model: type[BaseModel]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A report row as the JSON API gives it (its response model's types), so the CSV says what the JSON says."""
    return lambda row: model.model_validate(row).model_dump(mode="json")


def _csv(
    ctx: ConsoleState,
    request: Request,
    who: SignedIn,
    *,
    report: str,
    read: Callable[[Connection], list[dict[str, Any]]],
    columns: Sequence[str],
    params: dict[str, Any],
) -> Response:
    """Read a report under the manager's fleet role and record the export in the same transaction."""
    with fleet_connection(ctx.engine, who.fleet_id) as conn:
        rows = read(conn)
        audit.record(
            conn,
            fleet_id=who.fleet_id,
            username=who.username,
            action="export",
            subject=f"report:{report}",
            detail={
                "what": "report csv",
                "rows": len(rows),
                **{k: v for k, v in params.items() if v is not None},
            },
            address=request.client.host if request.client else None,
        )
    name = evidence.download_name(
        "drivecoach", who.fleet_id, report, *(v for v in params.values() if v is not None), suffix=".csv"
    )
    return Response(
        evidence.csv_bytes(rows, columns),
        media_type=CSV_TYPE,
        headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"},
    )


CSV_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {}}, "description": "the report's rows as CSV, a header first"},
    401: {"model": ErrorOut},
}


@router.get("/reports/events.csv", response_class=Response, tags=["reports"], responses=CSV_RESPONSES)
def events_csv(
    ctx: State,
    request: Request,
    who: Api,
    since: Day | None = None,
    until: Day | None = None,
    group: Group = "driver",
    period: Literal["day", "week"] = "week",
    event_type: Annotated[EventType | None, Query(alias="type")] = None,
) -> Response:
    """`/api/v1/reports/events` as CSV."""
    kind = event_type.value if event_type else None
    filters = Filters(fleet=who.fleet_id, event_type=kind, since=since, until=until)
    row = _as_json(RateRowOut)
    return _csv(
        ctx,
        request,
        who,
        report="events",
        read=lambda conn: [row(r) for r in event_rates(conn, filters, group=group, period=period)],
        columns=list(RateRowOut.model_fields),
        params={"group": group, "period": period, "type": kind, "since": since, "until": until},
    )


@router.get("/reports/trend.csv", response_class=Response, tags=["reports"], responses=CSV_RESPONSES)
def trend_csv(
    ctx: State, request: Request, who: Api, since: Day, until: Day, group: Group = "driver"
) -> Response:
    """`/api/v1/reports/trend` as CSV."""
    row = _as_json(TrendRowOut)
    filters = Filters(fleet=who.fleet_id, since=since, until=until)
    return _csv(
        ctx,
        request,
        who,
        report="trend",
        read=lambda conn: [row(r) for r in trend(conn, filters, group=group)],
        columns=list(TrendRowOut.model_fields),
        params={"group": group, "since": since, "until": until},
    )


@router.get("/reports/scores.csv", response_class=Response, tags=["reports"], responses=CSV_RESPONSES)
def scores_csv(
    ctx: State,
    request: Request,
    who: Api,
    since: Day | None = None,
    until: Day | None = None,
    weeks: Annotated[
        int, Query(ge=1, le=52, description="the window's length when `since` is not given")
    ] = 8,
) -> Response:
    """`/api/v1/reports/scores?since=&until=` as CSV. `until` defaults to the day after the fleet's latest
    driving and `since` to `weeks` weeks before `until`: without either, the Scores page's rows."""
    row = _as_json(ScoreRowOut)

    def read(conn: Connection) -> list[dict[str, Any]]:
        end = until or (latest_day(conn, who.fleet_id) or date.today()) + timedelta(days=1)
        try:
            start = since or end - timedelta(weeks=weeks)
        except OverflowError:  # a window reaching back past year 1 starts there
            start = date.min
        filters = Filters(fleet=who.fleet_id, since=start, until=end)
        return [row(r) for r in score_rows(safety_scores(conn, filters, score_settings(conn, who.fleet_id)))]

    return _csv(
        ctx,
        request,
        who,
        report="scores",
        read=read,
        columns=list(ScoreRowOut.model_fields),
        params={"weeks": None if since else weeks, "since": since, "until": until},
    )


@router.get("/reports/score-events.csv", response_class=Response, tags=["reports"], responses=CSV_RESPONSES)
def score_events_csv(
    ctx: State,
    request: Request,
    who: Api,
    driver: Annotated[
        str, Query(min_length=1, max_length=64, pattern=r"^[^\x00]+$")
    ],  # Postgres holds no NUL
    week: Day,
) -> Response:
    """The events counted in one driver's score of one week (its "Why?" page), oldest first, with their clips."""
    monday = week - timedelta(days=week.weekday())
    return _csv(
        ctx,
        request,
        who,
        report="score-events",
        read=lambda conn: score_events(conn, who.fleet_id, driver, monday),
        columns=SCORE_EVENT_COLUMNS,
        params={"driver": driver, "week": monday},
    )


@router.get("/reports/queue.csv", response_class=Response, tags=["reports"], responses=CSV_RESPONSES)
def queue_csv(
    ctx: State, request: Request, who: Api, limit: Annotated[int, Query(ge=1, le=500)] = 500
) -> Response:
    """`/api/v1/queue` as CSV: unreviewed answers, most severe and most recent first."""
    row = _as_json(QueueItemOut)
    return _csv(
        ctx,
        request,
        who,
        report="queue",
        read=lambda conn: [row(r) for r in review_queue(conn, Filters(fleet=who.fleet_id), limit=limit)],
        columns=list(QueueItemOut.model_fields),
        params={"limit": limit},
    )


@router.get("/reports/needs-coaching.csv", response_class=Response, tags=["reports"], responses=CSV_RESPONSES)
def needs_coaching_csv(
    ctx: State, request: Request, who: Api, limit: Annotated[int, Query(ge=1, le=500)] = 500
) -> Response:
    """`/api/v1/coaching` as CSV: reviewed clips whose events wait for coaching."""
    row = _as_json(CoachingItemOut)
    return _csv(
        ctx,
        request,
        who,
        report="needs-coaching",
        read=lambda conn: [row(r) for r in coaching_list(conn, who.fleet_id, limit=limit)],
        columns=list(CoachingItemOut.model_fields),
        params={"limit": limit},
    )


@router.get("/reports/sessions.csv", response_class=Response, tags=["reports"], responses=CSV_RESPONSES)
def sessions_csv(ctx: State, request: Request, who: Api) -> Response:
    """The coaching sessions as the Coaching page lists them (overdue first), without the drivers' links."""
    today = datetime.now(UTC).date()
    return _csv(
        ctx,
        request,
        who,
        report="sessions",
        read=lambda conn: coaching.sessions(conn, today),
        columns=SESSION_COLUMNS,
        params={},
    )


@router.get("/reports/coaching.csv", response_class=Response, tags=["reports"], responses=CSV_RESPONSES)
def coaching_effect_csv(ctx: State, request: Request, who: Api) -> Response:
    """ "Does coaching work?" as CSV (`drivecoach report coaching`): per acknowledged session, the driver's events
    per driving hour before and after."""
    return _csv(
        ctx,
        request,
        who,
        report="coaching",
        read=coaching.effectiveness,
        columns=EFFECT_COLUMNS,
        params={},
    )


@router.get("/reports/rules.csv", response_class=Response, tags=["reports"], responses=CSV_RESPONSES)
def rules_csv(
    ctx: State,
    request: Request,
    who: Api,
    since: Day | None = None,
    until: Day | None = None,
    days: Annotated[
        int, Query(ge=1, le=366, description="the window's length when `since` is not given")
    ] = 28,
) -> Response:
    """Model vs telemetry rules (`/api/v1/reports/rules`'s rows): every compared event with its outcome, newest clip
    first. `until` defaults to the day after the fleet's latest driving and `since` to `days` days before it:
    without either, the Model vs rules page's window."""
    row = _as_json(RuleEventRowOut)

    def read(conn: Connection) -> list[dict[str, Any]]:
        start, end = rules_window(latest_day(conn, who.fleet_id), since, until, days)
        return [row(r) for r in compare_rules(conn, who.fleet_id, start, end).rows]

    return _csv(
        ctx,
        request,
        who,
        report="rules",
        read=read,
        columns=ROW_COLUMNS,
        params={"days": None if since else days, "since": since, "until": until},
    )
