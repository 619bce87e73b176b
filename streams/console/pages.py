"""The console's pages for people: sign-in and out, dashboard, review queue, coaching list, clip page (and its
frames), the review form. Server-rendered; every form carries the session's CSRF token."""

# No `from __future__ import annotations`: FastAPI resolves the routes' Annotated dependencies at import.
import secrets
from typing import Annotated, Literal

from fastapi import APIRouter, Form, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from streams.console import auth
from streams.console.deps import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    Api,
    ClipId,
    Page,
    State,
    local_path,
    render,
    review_clip,
    set_cookie,
)
from streams.console.frames import frame_jpeg
from streams.console.models import ErrorOut
from streams.console.queries import clip_detail, clip_frames, coaching_list, dashboard
from streams.console.reports import Filters, review_queue
from streams.console.review import ReviewError, ReviewIn, form_events
from streams.infra.blobs import BlobNotFound
from streams.infra.tenancy import fleet_connection

router = APIRouter()


@router.get("/login", include_in_schema=False)
def login_page(request: Request, next: str = "/") -> HTMLResponse:
    token = secrets.token_urlsafe(24)
    response = render(request, "login.html", csrf_token=token, next=local_path(next), error=None)
    set_cookie(request, response, LOGIN_COOKIE, token, 3600)
    return response


@router.post("/login", include_in_schema=False)
def login(
    ctx: State,
    request: Request,
    username: Annotated[str, Form(max_length=200)],
    password: Annotated[str, Form(max_length=1000)],
    csrf_token: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/",
) -> Response:
    if not auth.same_token(request.cookies.get(LOGIN_COOKIE, ""), csrf_token) or not csrf_token:
        return render(
            request,
            "login.html",
            403,
            csrf_token=csrf_token,
            next=local_path(next),
            error="The sign-in form expired; please try again.",
        )
    username = username.strip()
    if ctx.throttle.blocked(username):
        return render(
            request,
            "login.html",
            429,
            csrf_token=csrf_token,
            next=local_path(next),
            error="Too many failed sign-ins for this user; try again in a few minutes.",
        )
    with ctx.sessions() as session, session.begin():
        token = auth.sign_in(session, username, password, lifetime=ctx.lifetime)
    if token is None:
        ctx.throttle.failed(username)
        return render(
            request,
            "login.html",
            401,
            csrf_token=csrf_token,
            next=local_path(next),
            error="Wrong username or password.",
        )
    ctx.throttle.succeeded(username)
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


@router.get("/queue", include_in_schema=False)
def queue_page(ctx: State, request: Request, who: Page) -> HTMLResponse:
    with fleet_connection(ctx.engine, who.fleet_id) as conn:
        items = review_queue(conn, Filters(fleet=who.fleet_id), limit=200)
    return render(request, "queue.html", who=who, items=items)


@router.get("/coaching", include_in_schema=False)
def coaching_page(ctx: State, request: Request, who: Page) -> HTMLResponse:
    with fleet_connection(ctx.engine, who.fleet_id) as conn:
        items = coaching_list(conn, who.fleet_id)
    return render(request, "coaching.html", who=who, items=items)


@router.get("/clips/{clip_id}", include_in_schema=False)
def clip_page(
    ctx: State, request: Request, who: Page, clip_id: ClipId, done: str | None = None
) -> HTMLResponse:
    with fleet_connection(ctx.engine, who.fleet_id) as conn:
        detail = clip_detail(conn, clip_id)
    if detail is None:
        return render(request, "missing.html", 404, who=who, what=f"clip {clip_id}")
    return render(request, "clip.html", who=who, clip=detail, done=done, error=None)


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
        review = ReviewIn(
            action=action,
            instruction=instruction or None,
            events=form_events(event_type, event_start, event_end) if action == "correct" else None,
        )
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
        404: {"model": ErrorOut},
    },
)
def clip_frame(
    ctx: State, who: Api, clip_id: ClipId, index: Annotated[int, PathParam(ge=0, le=10_000)]
) -> Response:
    """One frame of the clip as JPEG (the clip page plays them in order)."""
    with fleet_connection(ctx.engine, who.fleet_id) as conn:
        found = clip_frames(conn, clip_id)
    if found is None:
        raise HTTPException(404, "no such clip")
    frames_uri, num_frames = found
    try:
        data = frame_jpeg(ctx.blobs, frames_uri, index)
    except BlobNotFound as err:
        raise HTTPException(404, f"the clip's frames are gone: {err}") from err
    if data is None:
        raise HTTPException(404, f"the clip has {num_frames} frames")
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})
