"""The console's pages for people: sign-in and out, dashboard, safety scores (and what is behind each), review
queue, coaching list, clip page (and its frames), the review form. Server-rendered; every form carries the session's CSRF token."""

# No `from __future__ import annotations`: FastAPI resolves the routes' Annotated dependencies at import.
import logging
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Form, Header, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from schemas.db import Manager
from streams.console import audit, auth, coaching, links
from streams.console.deps import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    Api,
    ClipId,
    ConsoleState,
    Day,
    Page,
    State,
    local_path,
    render,
    review_clip,
    set_cookie,
)
from streams.console.footage import RangeNotSatisfiable, byte_range, plan
from streams.console.frames import FramesUnreadable, frame_jpeg
from streams.console.models import ErrorOut
from streams.console.queries import (
    clip_detail,
    clip_footage,
    clip_frames,
    coaching_list,
    dashboard,
    explain_score,
    latest_day,
    recent_scores,
)
from streams.console.reports import Filters, review_queue
from streams.console.review import ReviewError, review_from_form
from streams.console.rule_report import compare_rules, rules_window
from streams.console.safety_score import MIN_HOURS, MIN_KM
from streams.console.throttle import SignInBusy
from streams.console.video import FootageUnreadable, playable
from streams.infra.blobs import BlobNotFound, BlobUnavailable
from streams.infra.tenancy import FleetAccessError, fleet_connection

router = APIRouter()
log = logging.getLogger(__name__)


@router.get("/login", include_in_schema=False)
def login_page(request: Request, next: str = "/") -> HTMLResponse:
    token = secrets.token_urlsafe(24)
    response = render(request, "login.html", csrf_token=token, next=local_path(next), error=None)
    set_cookie(request, response, LOGIN_COOKIE, token, 3600)
    return response


def _sign_in(ctx: ConsoleState, username: str, password: str, address: str | None) -> str | None:
    """A session token for the right password, its sign-in recorded in the audit log in the same transaction."""
    with ctx.sessions() as session, session.begin():
        token = auth.sign_in(session, username, password, lifetime=ctx.lifetime, idle=ctx.idle)
        if token is not None:
            fleet_id = session.scalar(select(Manager.fleet_id).where(Manager.username == username))
            audit.record(
                session.connection(),
                fleet_id=str(fleet_id),
                username=username,
                action="sign_in",
                address=address,
            )
        return token


@router.post("/login", include_in_schema=False)
async def login(
    ctx: State,
    request: Request,
    username: Annotated[str, Form(max_length=200)],
    password: Annotated[str, Form(max_length=1000)],
    csrf_token: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/",
) -> Response:
    """Async, so that a sign-in waiting for a password-check slot holds no thread; the database work and the
    argon2 check itself run in the thread pool."""

    def page(status: int, error: str, retry_after: int | None = None) -> Response:
        response = render(
            request, "login.html", status, csrf_token=csrf_token, next=local_path(next), error=error
        )
        if retry_after is not None:
            response.headers["Retry-After"] = str(retry_after)
        return response

    if not auth.same_token(request.cookies.get(LOGIN_COOKIE, ""), csrf_token) or not csrf_token:
        return page(403, "The sign-in form expired; please try again.")
    username = username.strip()
    problem = auth.username_problem(username)
    if problem is not None:
        return page(400, f"That cannot be a username: {problem}.")
    address = request.client.host if request.client else None
    wait = await run_in_threadpool(ctx.throttle.wait, address, username)
    if wait is not None:
        log.info(
            "sign-in as %r from %s refused for %.0f s (%s rule)",
            username[:64],
            address,
            wait.seconds,
            wait.rule,
        )
        return page(
            429,
            f"Too many failed sign-ins; try again in {wait.retry_after} s.",
            retry_after=wait.retry_after,
        )
    try:
        async with ctx.hash_slots.slot():
            token = await run_in_threadpool(_sign_in, ctx, username, password, address)
    except SignInBusy as busy:
        log.warning("sign-in as %r from %s turned away: %s", username[:64], address, busy)
        return page(
            503, "The console is busy signing others in; please try again in a moment.", retry_after=2
        )
    if token is None:
        await run_in_threadpool(ctx.throttle.failed, address, username)
        return page(401, "Wrong username or password.")
    await run_in_threadpool(ctx.throttle.succeeded, address, username)
    response = RedirectResponse(local_path(next), status_code=303)
    set_cookie(request, response, SESSION_COOKIE, token, int(ctx.lifetime.total_seconds()))
    response.delete_cookie(LOGIN_COOKIE, path="/")
    return response


@router.post("/logout", include_in_schema=False)
def logout(ctx: State, request: Request, who: Page, csrf_token: Annotated[str, Form()] = "") -> Response:
    if not auth.same_token(who.csrf_token, csrf_token):
        raise HTTPException(403, "missing or wrong CSRF token")
    with ctx.sessions() as session, session.begin():
        auth.sign_out(session, request.cookies.get(SESSION_COOKIE))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/healthz", include_in_schema=False)
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/", include_in_schema=False)
def dashboard_page(
    ctx: State, request: Request, who: Page, days: Annotated[int, Query(ge=7, le=366)] = 28
) -> HTMLResponse:
    with fleet_connection(ctx.engine, who.fleet_id) as conn:
        board = dashboard(conn, who.fleet_id, days=days)
    return render(
        request,
        "dashboard.html",
        who=who,
        board=board,
        days=days,
        max_rate=max([d["per_hour"] for d in board.days] + [0.01]),
    )


@router.get("/scores", include_in_schema=False)
def scores_page(
    ctx: State, request: Request, who: Page, weeks: Annotated[int, Query(ge=1, le=52)] = 8
) -> HTMLResponse:
    with fleet_connection(ctx.engine, who.fleet_id) as conn:
        rows = recent_scores(conn, who.fleet_id, weeks=weeks)
    return render(request, "scores.html", who=who, rows=rows, weeks=weeks)


@router.get("/scores/explain", include_in_schema=False)
def score_page(
    ctx: State,
    request: Request,
    who: Page,
    driver: Annotated[str, Query(min_length=1, max_length=64)],
    week: Day,
) -> HTMLResponse:
    """Every number behind one score: the formula, the points per type, and the events with their clips."""
    with fleet_connection(ctx.engine, who.fleet_id) as conn:
        found = explain_score(conn, who.fleet_id, driver, week)
    if found is None:
        return render(
            request, "missing.html", 404, who=who, what=f"a score of driver {driver} in the week of {week}"
        )
    return render(request, "score.html", who=who, found=found, min_km=MIN_KM, min_hours=MIN_HOURS)


RULE_ROWS_SHOWN = 200  # disagreements listed on the page; the CSV has them all


@router.get("/rules", include_in_schema=False)
def rules_page(
    ctx: State,
    request: Request,
    who: Page,
    days: Annotated[int, Query(ge=1, le=366)] = 28,
    since: Day | None = None,
    until: Day | None = None,
) -> HTMLResponse:
    """Model vs telemetry rules: per rule type, the clips where both, only the rules or only the model found an
    event, and the disagreements with their clips (streams/console/rule_report.py)."""
    with fleet_connection(ctx.engine, who.fleet_id) as conn:
        start, end = rules_window(latest_day(conn, who.fleet_id), since, until, days)
        found = compare_rules(conn, who.fleet_id, start, end)
    shown = found.disagreements
    return render(
        request,
        "rules.html",
        who=who,
        found=found,
        days=days,
        disagreements=shown[:RULE_ROWS_SHOWN],
        more=max(0, len(shown) - RULE_ROWS_SHOWN),
    )


@router.get("/audit", include_in_schema=False)
def audit_page(ctx: State, request: Request, who: Page) -> HTMLResponse:
    """The fleet's audit log, for its admins only."""
    if not who.is_admin:
        return render(
            request, "forbidden.html", 403, who=who, what="the audit log: it is for the fleet's admins"
        )
    with fleet_connection(ctx.engine, who.fleet_id) as conn:
        entries = audit.recent(conn)
    return render(request, "audit.html", who=who, entries=entries)


@router.get("/queue", include_in_schema=False)
def queue_page(ctx: State, request: Request, who: Page) -> HTMLResponse:
    with fleet_connection(ctx.engine, who.fleet_id) as conn:
        items = review_queue(conn, Filters(fleet=who.fleet_id), limit=200)
    return render(request, "queue.html", who=who, items=items)


@router.get("/coaching", include_in_schema=False)
def coaching_page(ctx: State, request: Request, who: Page, created: str | None = None) -> HTMLResponse:
    """Events waiting for coaching, the sessions (overdue first) with each driver's link, and their effect."""
    today = datetime.now(UTC).date()
    with fleet_connection(ctx.engine, who.fleet_id) as conn:
        items = coaching_list(conn, who.fleet_id)
        assigned = coaching.sessions(conn, today)
        effect = coaching.effectiveness(conn)
    secret = ctx.link_secret()
    for row in assigned:
        row["link"] = "/driver/" + links.sign(
            secret, links.Link(who.fleet_id, row["public_id"], coaching.link_expiry(row["due_on"]))
        )
    return render(
        request, "coaching.html", who=who, items=items, sessions=assigned, effect=effect, created=created
    )


@router.get("/coaching/new", include_in_schema=False)
def new_session_page(
    ctx: State, request: Request, who: Page, driver: Annotated[str, Query(min_length=1, max_length=64)]
) -> HTMLResponse:
    with fleet_connection(ctx.engine, who.fleet_id) as conn:
        clips = coaching.waiting_clips(conn, driver)
    due = datetime.now(UTC).date() + timedelta(days=7)
    return render(request, "coaching_new.html", who=who, driver=driver, clips=clips, due=due, error=None)


@router.post("/coaching/sessions", include_in_schema=False)
def create_session_form(
    ctx: State,
    request: Request,
    who: Page,
    driver: Annotated[str, Form(min_length=1, max_length=64)],
    coach: Annotated[str, Form(max_length=200)] = "",
    due_on: Annotated[str, Form(max_length=10)] = "",
    notes: Annotated[str, Form(max_length=2000)] = "",
    clip: Annotated[list[str], Form()] = [],  # noqa: B006 (FastAPI form lists)
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    if not auth.same_token(who.csrf_token, csrf_token):
        raise HTTPException(403, "missing or wrong CSRF token; reload the page")
    try:
        try:
            due = date.fromisoformat(due_on)
        except ValueError as err:
            raise coaching.CoachingError("give the due day as YYYY-MM-DD") from err
        if "\x00" in coach + notes:
            raise coaching.CoachingError("the coach and the notes may not hold a NUL character")
        with fleet_connection(ctx.engine, who.fleet_id) as conn:
            public_id = coaching.create_session(
                conn,
                fleet_id=who.fleet_id,
                manager=who.username,
                driver_id=driver,
                coach=coach,
                due_on=due,
                notes=notes,
                clip_ids=clip,
            )
            audit.record(
                conn,
                fleet_id=who.fleet_id,
                username=who.username,
                action="coaching_assigned",
                subject=str(public_id),
                detail={"driver": driver, "clips": sorted(set(clip)), "due_on": str(due)},
            )
    except coaching.CoachingError as err:
        with fleet_connection(ctx.engine, who.fleet_id) as conn:
            clips = coaching.waiting_clips(conn, driver)
        return render(
            request, "coaching_new.html", 400, who=who, driver=driver, clips=clips, due=due_on, error=str(err)
        )
    log.info("%s assigned coaching session %s to driver %s", who.username, public_id, driver)
    return RedirectResponse(f"/coaching?created={public_id}", status_code=303)


def _driver_session(ctx: ConsoleState, token: str) -> tuple[links.Link, coaching.SessionView]:
    """The session a driver's link opens; 404 for a link that is not ours or names nothing, 410 once it expired."""
    try:
        link = links.verify(ctx.link_secret(), token, datetime.now(UTC))
    except links.LinkExpired as err:
        raise HTTPException(410, f"{err}: ask your safety manager for a new one") from err
    except links.LinkInvalid as err:
        raise HTTPException(404, "no such coaching session") from err
    try:
        with fleet_connection(ctx.engine, link.fleet_id) as conn:
            view = coaching.session_view(conn, link.session)
    except FleetAccessError as err:
        raise HTTPException(404, "no such coaching session") from err
    if view is None:
        raise HTTPException(404, "no such coaching session")
    return link, view


@router.get("/driver/{token}", include_in_schema=False)
def driver_page(
    ctx: State, request: Request, token: Annotated[str, PathParam(max_length=400)], done: str | None = None
) -> HTMLResponse:
    """A driver's self-coaching page: no account, the signed link is the key."""
    try:
        _, view = _driver_session(ctx, token)
    except HTTPException as err:
        return render(request, "driver.html", err.status_code, who=None, view=None, error=err.detail)
    return render(request, "driver.html", who=None, view=view, token=token, done=done, error=None)


@router.post("/driver/{token}/acknowledge", include_in_schema=False)
def driver_acknowledge(ctx: State, token: Annotated[str, PathParam(max_length=400)]) -> Response:
    link, view = _driver_session(ctx, token)
    with fleet_connection(ctx.engine, link.fleet_id) as conn:
        marked = coaching.acknowledge(conn, link.session)
        audit.record(
            conn,
            fleet_id=link.fleet_id,
            username=None,
            action="coaching_acknowledged",
            subject=str(link.session),
            detail={"driver": view.driver_id, "events_coached": marked},
        )
    log.info(
        "driver %s acknowledged coaching session %s (%d events coached)", view.driver_id, link.session, marked
    )
    return RedirectResponse(f"/driver/{token}?done=1", status_code=303)


@router.get("/driver/{token}/clips/{clip_id}/frames/{index}", include_in_schema=False)
def driver_frame(
    ctx: State,
    token: Annotated[str, PathParam(max_length=400)],
    clip_id: ClipId,
    index: Annotated[int, PathParam(ge=0, le=10_000)],
) -> Response:
    """A frame of one of the session's clips, for the driver's page (no other clip)."""
    link, _ = _driver_session(ctx, token)
    with fleet_connection(ctx.engine, link.fleet_id) as conn:
        found = clip_frames(conn, clip_id) if coaching.session_clip(conn, link.session, clip_id) else None
    if found is None:
        raise HTTPException(404, "no such clip in this session")
    return _frame_response(ctx, clip_id, *found, index)


UNBLURRED_AUDIT_EVERY_S = (
    600.0  # a manager's frame and footage requests this soon after a logged view are that view
)

# Unblurred views logged every time, never folded into a burst: a page, and a copy that leaves the console.
ALWAYS_AUDITED = ("clip page", "evidence package")


def _unblurred(ctx: ConsoleState, request: Request, who: auth.SignedIn, clip_id: str, what: str) -> None:
    """Let `who` see `clip_id` unblurred, and write it to the audit log, or refuse (403) without `view_unblurred`.
    A clip page viewed unblurred, or exported as an evidence package, is logged each time; its frames and footage
    then come in bursts, logged again only UNBLURRED_AUDIT_EVERY_S after the last entry for that manager and clip
    (so a direct request is logged too)."""
    if not who.view_unblurred:
        raise HTTPException(403, "your role may not see faces unblurred (the view_unblurred permission)")
    key, now = (who.username, clip_id), time.monotonic()
    with ctx.audit_lock:
        last = ctx.unblurred_audited.get(key)
        if what not in ALWAYS_AUDITED and last is not None and now - last < UNBLURRED_AUDIT_EVERY_S:
            return
        ctx.unblurred_audited[key] = now
    with fleet_connection(ctx.engine, who.fleet_id) as conn:
        audit.record(
            conn,
            fleet_id=who.fleet_id,
            username=who.username,
            action="unblurred_view",
            subject=clip_id,
            detail={"what": what},
            address=request.client.host if request.client else None,
        )
    log.info("%s viewed clip %s unblurred (%s)", who.username, clip_id, what)


@router.get("/clips/{clip_id}", include_in_schema=False)
def clip_page(
    ctx: State,
    request: Request,
    who: Page,
    clip_id: ClipId,
    done: str | None = None,
    unblurred: Annotated[bool, Query()] = False,
) -> HTMLResponse:
    with fleet_connection(ctx.engine, who.fleet_id) as conn:
        detail = clip_detail(conn, clip_id)
    if detail is None:
        return render(request, "missing.html", 404, who=who, what=f"clip {clip_id}")
    if unblurred:
        _unblurred(ctx, request, who, clip_id, "clip page")
    return render(request, "clip.html", who=who, clip=detail, done=done, error=None, unblurred=unblurred)


@router.post("/clips/{clip_id}/review", include_in_schema=False)
def review_form(
    ctx: State,
    request: Request,
    who: Page,
    clip_id: ClipId,
    action: Annotated[Literal["accept", "correct", "dismiss", "coached"], Form()],
    csrf_token: Annotated[str, Form()] = "",
    event_type: Annotated[list[str], Form()] = [],  # noqa: B006 (FastAPI form lists)
    event_start: Annotated[list[str], Form()] = [],  # noqa: B006
    event_end: Annotated[list[str], Form()] = [],  # noqa: B006
    instruction: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    if not auth.same_token(who.csrf_token, csrf_token):
        raise HTTPException(403, "missing or wrong CSRF token; reload the page")
    try:
        review = review_from_form(action, instruction, event_type, event_start, event_end)
        review_clip(ctx.engine, who, clip_id, review)
    except ReviewError as err:
        with fleet_connection(ctx.engine, who.fleet_id) as conn:
            detail = clip_detail(conn, clip_id)
        if detail is None:
            return render(request, "missing.html", 404, who=who, what=f"clip {clip_id}")
        return render(request, "clip.html", 400, who=who, clip=detail, done=None, error=str(err))
    return RedirectResponse(f"/clips/{clip_id}?done={action}", status_code=303)


@router.get(
    "/clips/{clip_id}/frames/{index}",
    response_class=Response,
    tags=["clips"],
    responses={
        200: {"content": {"image/jpeg": {}}, "description": "one stacked frame (road over driver)"},
        403: {"model": ErrorOut, "description": "unblurred without the view_unblurred permission"},
        404: {"model": ErrorOut, "description": "no such clip or frame, or the clip's frames are gone"},
        409: {"model": ErrorOut, "description": "the clip's frames file is damaged"},
        503: {"model": ErrorOut, "description": "the blob store does not answer"},
    },
)
def clip_frame(
    ctx: State,
    request: Request,
    who: Api,
    clip_id: ClipId,
    index: Annotated[int, PathParam(ge=0, le=10_000)],
    unblurred: Annotated[
        bool, Query(description="faces unblurred: needs the view_unblurred permission; audited")
    ] = False,
) -> Response:
    """One frame of the clip as JPEG (the clip page plays them in order), faces in the driver view blurred."""
    with fleet_connection(ctx.engine, who.fleet_id) as conn:
        found = clip_frames(conn, clip_id)
    if found is None:
        raise HTTPException(404, "no such clip")
    if unblurred:
        _unblurred(ctx, request, who, clip_id, "frames")
    return _frame_response(ctx, clip_id, *found, index, blurred=not unblurred)


@contextmanager
def _blob_errors(clip_id: str, what: str, gone: str, damaged: str) -> Iterator[None]:
    """A blob store's failures as the clip's pages answer them: 404 gone, 409 damaged, 503 unreachable. The
    blob's URI names a server path or bucket: for the log, not the page."""
    try:
        yield
    except BlobNotFound as err:
        log.warning("clip %s: its %s is gone: %s", clip_id, what, err)
        raise HTTPException(404, gone) from err
    except (FramesUnreadable, FootageUnreadable) as err:
        log.warning("clip %s: %s", clip_id, err)
        raise HTTPException(409, damaged) from err
    except BlobUnavailable as err:
        log.warning("clip %s: the blob store does not answer: %s", clip_id, err)
        raise HTTPException(503, "the blob store does not answer; try again later") from err


def _frame_response(
    ctx: ConsoleState, clip_id: str, frames_uri: str, num_frames: int, index: int, *, blurred: bool = True
) -> Response:
    with _blob_errors(
        clip_id,
        "frames",
        "the clip's frames are gone from the blob store",
        "the clip's frames file is damaged and cannot be shown",
    ):
        data = frame_jpeg(ctx.blobs, frames_uri, index, blurred=blurred)
    if data is None:
        raise HTTPException(404, f"the clip has {num_frames} frames")
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


@router.get(
    "/clips/{clip_id}/footage/{camera}/{index}",
    response_class=Response,
    tags=["clips"],
    responses={
        200: {"content": {"video/mp4": {}, "video/webm": {}}, "description": "the camera's video"},
        206: {"content": {"video/mp4": {}, "video/webm": {}}, "description": "the requested bytes of it"},
        403: {"model": ErrorOut, "description": "unblurred without the view_unblurred permission"},
        404: {"model": ErrorOut, "description": "no such clip or piece, or the video is gone"},
        409: {"model": ErrorOut, "description": "the camera's video cannot be decoded"},
        416: {"model": ErrorOut, "description": "the range asks for no byte of the video"},
        503: {"model": ErrorOut, "description": "the blob store does not answer"},
    },
)
def clip_footage_video(
    ctx: State,
    request: Request,
    who: Api,
    clip_id: ClipId,
    camera: Literal["road", "driver"],
    index: Annotated[int, PathParam(ge=0, le=1000)],
    range_header: Annotated[str | None, Header(alias="Range")] = None,
    unblurred: Annotated[
        bool, Query(description="the driver camera's faces unblurred: needs view_unblurred; audited")
    ] = False,
) -> Response:
    """One piece of a camera's own video for the clip page's players (the plan: `/api/v1/clips/{id}/footage`),
    with HTTP range requests: the original upload when the browser plays its codec, else its WebM transcoding;
    the driver camera's always a transcoding with the faces blurred, unless `unblurred` (and permitted)."""
    with fleet_connection(ctx.engine, who.fleet_id) as conn:
        found = clip_footage(conn, clip_id)
    pieces = plan(*found).get(camera, []) if found else []
    if index >= len(pieces):
        raise HTTPException(404, "no such clip or piece of its footage")
    if unblurred and camera == "driver":
        _unblurred(ctx, request, who, clip_id, "driver footage")
    with _blob_errors(
        clip_id,
        f"{camera} video",
        "the camera's video is gone from the blob store",
        "the camera's video cannot be decoded",
    ):
        uri, kind = playable(ctx.blobs, pieces[index].video_uri, blurred=camera == "driver" and not unblurred)
        size = ctx.blobs.size(uri)
        try:
            wanted = byte_range(range_header, size)
        except RangeNotSatisfiable as err:
            return JSONResponse({"detail": str(err)}, 416, headers={"Content-Range": f"bytes */{size}"})
        start, end = wanted if wanted is not None else (0, size - 1)
        data = ctx.blobs.read_range(uri, start, end - start + 1)
    headers = {"Accept-Ranges": "bytes", "Cache-Control": "private, max-age=3600"}
    if wanted is None:
        return Response(data, media_type=kind, headers=headers)
    headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    return Response(data, status_code=206, media_type=kind, headers=headers)
