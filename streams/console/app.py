"""The safety managers' console: server-rendered pages for people, a JSON API (OpenAPI at /api/openapi.json).

Sign-in checks an argon2 hash and opens a server-side session (`auth.py`). Every page and API call then reads
and writes through `tenancy.fleet_connection`, under the manager's fleet role, so row-level security bounds what
any handler can see. Forms carry the session's CSRF token; API writes carry it in the `X-CSRF-Token` header.
"""

# No `from __future__ import annotations`: the routes' Annotated dependencies are closures of create_app, which
# FastAPI could not resolve from strings.
import re
import secrets
from dataclasses import asdict
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Form, Header, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, BeforeValidator
from sqlalchemy import Engine
from sqlalchemy.orm import sessionmaker

from schemas.taxonomy import TAXONOMY, EventType
from streams.console import auth
from streams.console.frames import frame_jpeg
from streams.console.queries import (
    ClipDetail,
    clip_detail,
    clip_frames,
    coaching_list,
    current_answer,
    dashboard,
)
from streams.console.reports import Filters, event_rates, review_queue, trend
from streams.console.review import ReviewError, ReviewIn, apply_review, form_events
from streams.infra.blobs import BlobNotFound, LocalBlobStore
from streams.infra.tenancy import fleet_connection
from streams.settings import Settings

HERE = Path(__file__).parent
SESSION_COOKIE = "drivecoach_session"
LOGIN_COOKIE = "drivecoach_login"  # double-submit token of the sign-in form (no session exists yet)
CSRF_HEADER = "X-CSRF-Token"
ClipId = Annotated[str, PathParam(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]


def _iso_day(value: Any) -> Any:
    """Only YYYY-MM-DD: pydantic's lax mode would also read "0" as a Unix timestamp."""
    if isinstance(value, str) and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        raise ValueError("a day is YYYY-MM-DD")
    return value


Day = Annotated[date, BeforeValidator(_iso_day), Query(description="UTC day, YYYY-MM-DD")]


class SignInRequired(Exception):
    """A page was asked for without a session: the browser is sent to the sign-in page."""


# --- JSON API models: what the OpenAPI document describes and schemathesis fuzzes ---------------------------------


class MeOut(BaseModel):
    username: str
    display_name: str
    fleet_id: str


class QueueItemOut(BaseModel):
    inference_id: int
    clip_id: str
    vehicle_id: str
    driver_id: str | None
    occurred_at: datetime
    events: int
    max_severity: int


class CoachingItemOut(BaseModel):
    clip_id: str
    vehicle_id: str
    driver_id: str | None
    occurred_at: datetime
    events: int
    max_severity: int
    types: str


class RateRowOut(BaseModel):
    who: str | None
    period: date
    type: str
    severity: int
    events: int
    hours: float
    per_hour: float | None
    km: float | None = None
    per_100km: float | None = None


class TrendRowOut(BaseModel):
    who: str | None
    type: str
    events: int
    previous: int
    change: int


class EventOut(BaseModel):
    id: int
    type: str
    view: str
    start_s: float
    end_s: float
    coaching_status: str
    severity: int


class ReviewRowOut(BaseModel):
    id: int
    reviewer: str
    verdict: str
    corrected_turn1: str | None
    corrected_instruction: str | None
    created_at: datetime
    clip_revision: int
    model_version: str
    current: bool  # False: a review of an earlier revision of the clip, or of another model's answer


class ClipOut(BaseModel):
    clip_id: str
    vehicle_id: str
    driver_id: str | None
    start: datetime
    duration_s: float
    num_frames: int
    sample_fps: float
    revision: int
    inference_id: int | None
    model_version: str | None
    valid: bool | None
    description: str
    instruction: str
    events: list[EventOut]
    reviews: list[ReviewRowOut]


class ReviewResultOut(BaseModel):
    inference_id: int
    action: str
    review_id: int | None
    events: int


class ErrorOut(BaseModel):
    detail: str


def _clip_out(detail: ClipDetail) -> ClipOut:
    fields = {k: v for k, v in asdict(detail).items() if k in ClipOut.model_fields}
    return ClipOut(**fields)


def create_app(settings: Settings, engine: Engine) -> FastAPI:
    app = FastAPI(
        title="drivecoach console",
        version="1",
        openapi_url="/api/openapi.json",
        docs_url="/api/docs",
        redoc_url=None,
        description="Safety managers' review queue, clips and reports. Sign in at /login; "
        f"API writes need the session's CSRF token in the {CSRF_HEADER} header.",
    )
    sessions = sessionmaker(engine, expire_on_commit=False)
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.globals.update(taxonomy=TAXONOMY, event_types=[t.value for t in EventType])
    blobs = LocalBlobStore(settings.blobs)
    lifetime = timedelta(hours=settings.console_session_hours)
    throttle = auth.SignInThrottle()
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    def session_of(request: Request) -> auth.SignedIn | None:
        with sessions() as session:
            return auth.signed_in(session, request.cookies.get(SESSION_COOKIE))

    def api_manager(request: Request) -> auth.SignedIn:
        who = session_of(request)
        if who is None:
            raise HTTPException(401, "sign in first (POST /login) and send the session cookie")
        return who

    def page_manager(request: Request) -> auth.SignedIn:
        who = session_of(request)
        if who is None:
            raise SignInRequired
        return who

    def csrf_checked(
        who: Annotated[auth.SignedIn, Depends(api_manager)],
        token: Annotated[str | None, Header(alias=CSRF_HEADER)] = None,
    ) -> auth.SignedIn:
        if not auth.same_token(who.csrf_token, token):
            raise HTTPException(403, f"missing or wrong {CSRF_HEADER} header")
        return who

    Api = Annotated[auth.SignedIn, Depends(api_manager)]
    Page = Annotated[auth.SignedIn, Depends(page_manager)]

    @app.exception_handler(SignInRequired)
    async def _to_sign_in(request: Request, _: SignInRequired) -> RedirectResponse:
        return RedirectResponse(f"/login?next={request.url.path}", status_code=303)

    @app.middleware("http")
    async def _security_headers(request: Request, call_next: Any) -> Response:
        response = await call_next(request)
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; "
            "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        )
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        return response

    def render(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        return templates.TemplateResponse(request, name, context, status_code=status)

    def set_cookie(response: Response, name: str, value: str, max_age: int) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            httponly=True,
            samesite="lax",
            secure=settings.console_secure_cookies,
            path="/",
        )

    # --- sign-in ------------------------------------------------------------------------------------------------

    @app.get("/login", include_in_schema=False)
    def login_page(request: Request, next: str = "/") -> HTMLResponse:
        token = secrets.token_urlsafe(24)
        response = render(request, "login.html", csrf_token=token, next=_local(next), error=None)
        set_cookie(response, LOGIN_COOKIE, token, 3600)
        return response

    @app.post("/login", include_in_schema=False)
    def login(
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
                next=_local(next),
                error="The sign-in form expired; please try again.",
            )
        username = username.strip()
        if throttle.blocked(username):
            return render(
                request,
                "login.html",
                429,
                csrf_token=csrf_token,
                next=_local(next),
                error="Too many failed sign-ins for this user; try again in a few minutes.",
            )
        with sessions() as session, session.begin():
            token = auth.sign_in(session, username, password, lifetime=lifetime)
        if token is None:
            throttle.failed(username)
            return render(
                request,
                "login.html",
                401,
                csrf_token=csrf_token,
                next=_local(next),
                error="Wrong username or password.",
            )
        throttle.succeeded(username)
        response = RedirectResponse(_local(next), status_code=303)
        set_cookie(response, SESSION_COOKIE, token, int(lifetime.total_seconds()))
        response.delete_cookie(LOGIN_COOKIE, path="/")
        return response

    @app.post("/logout", include_in_schema=False)
    def logout(request: Request, who: Page, csrf_token: Annotated[str, Form()] = "") -> Response:
        if not auth.same_token(who.csrf_token, csrf_token):
            raise HTTPException(403, "missing or wrong CSRF token")
        with sessions() as session, session.begin():
            auth.sign_out(session, request.cookies.get(SESSION_COOKIE))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    # --- pages --------------------------------------------------------------------------------------------------

    @app.get("/", include_in_schema=False)
    def dashboard_page(
        request: Request, who: Page, days: Annotated[int, Query(ge=7, le=366)] = 28
    ) -> HTMLResponse:
        with fleet_connection(engine, who.fleet_id) as conn:
            board = dashboard(conn, who.fleet_id, days=days)
        return render(
            request,
            "dashboard.html",
            who=who,
            board=board,
            days=days,
            max_rate=max([d["per_hour"] for d in board.days] + [0.01]),
        )

    @app.get("/queue", include_in_schema=False)
    def queue_page(request: Request, who: Page) -> HTMLResponse:
        with fleet_connection(engine, who.fleet_id) as conn:
            items = review_queue(conn, Filters(fleet=who.fleet_id), limit=200)
        return render(request, "queue.html", who=who, items=items)

    @app.get("/coaching", include_in_schema=False)
    def coaching_page(request: Request, who: Page) -> HTMLResponse:
        with fleet_connection(engine, who.fleet_id) as conn:
            items = coaching_list(conn, who.fleet_id)
        return render(request, "coaching.html", who=who, items=items)

    @app.get("/clips/{clip_id}", include_in_schema=False)
    def clip_page(request: Request, who: Page, clip_id: ClipId, done: str | None = None) -> HTMLResponse:
        with fleet_connection(engine, who.fleet_id) as conn:
            detail = clip_detail(conn, clip_id)
        if detail is None:
            return render(request, "missing.html", 404, who=who, what=f"clip {clip_id}")
        return render(request, "clip.html", who=who, clip=detail, done=done, error=None)

    @app.post("/clips/{clip_id}/review", include_in_schema=False)
    def review_form(
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
            _review(who, clip_id, review)
        except ReviewError as err:
            with fleet_connection(engine, who.fleet_id) as conn:
                detail = clip_detail(conn, clip_id)
            if detail is None:
                return render(request, "missing.html", 404, who=who, what=f"clip {clip_id}")
            return render(request, "clip.html", 400, who=who, clip=detail, done=None, error=str(err))
        return RedirectResponse(f"/clips/{clip_id}?done={action}", status_code=303)

    @app.get(
        "/clips/{clip_id}/frames/{index}",
        response_class=Response,
        tags=["clips"],
        responses={
            200: {"content": {"image/jpeg": {}}, "description": "one stacked frame (road over driver)"},
            404: {"model": ErrorOut},
        },
    )
    def clip_frame(who: Api, clip_id: ClipId, index: Annotated[int, PathParam(ge=0, le=10_000)]) -> Response:
        """One frame of the clip as JPEG (the clip page plays them in order)."""
        with fleet_connection(engine, who.fleet_id) as conn:
            found = clip_frames(conn, clip_id)
        if found is None:
            raise HTTPException(404, "no such clip")
        frames_uri, num_frames = found
        try:
            data = frame_jpeg(blobs, frames_uri, index)
        except BlobNotFound as err:
            raise HTTPException(404, f"the clip's frames are gone: {err}") from err
        if data is None:
            raise HTTPException(404, f"the clip has {num_frames} frames")
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

    # --- JSON API -----------------------------------------------------------------------------------------------

    def _review(who: auth.SignedIn, clip_id: str, review: ReviewIn) -> ReviewResultOut:
        with fleet_connection(engine, who.fleet_id) as conn:
            answer = current_answer(conn, clip_id)
            if answer is None:
                raise HTTPException(404, "no such clip")
            inference_id, duration_s = answer
            if inference_id is None:
                raise ReviewError("this clip has no answer to review yet")
            outcome = apply_review(
                conn,
                fleet_id=who.fleet_id,
                reviewer=who.username,
                inference_id=inference_id,
                clip_duration=duration_s,
                review=review,
            )
        return ReviewResultOut(**asdict(outcome))

    # 422 stays FastAPI's own (request validation); a well-formed review that does not fit the clip's state (times
    # past its end, nothing waiting for coaching) is a 409 with a sentence.
    err: dict[int | str, dict[str, Any]] = {401: {"model": ErrorOut}}

    @app.get("/api/v1/me", response_model=MeOut, tags=["session"], responses=err)
    def api_me(who: Api) -> MeOut:
        return MeOut(username=who.username, display_name=who.display_name, fleet_id=who.fleet_id)

    @app.get("/api/v1/queue", response_model=list[QueueItemOut], tags=["review"], responses=err)
    def api_queue(who: Api, limit: Annotated[int, Query(ge=1, le=500)] = 50) -> list[dict[str, Any]]:
        """Unreviewed answers of the manager's fleet, most severe and most recent first."""
        with fleet_connection(engine, who.fleet_id) as conn:
            return review_queue(conn, Filters(fleet=who.fleet_id), limit=limit)

    @app.get("/api/v1/coaching", response_model=list[CoachingItemOut], tags=["review"], responses=err)
    def api_coaching(who: Api, limit: Annotated[int, Query(ge=1, le=500)] = 200) -> list[dict[str, Any]]:
        """Reviewed clips whose events wait for the driver to be coached, most severe and oldest first."""
        with fleet_connection(engine, who.fleet_id) as conn:
            return coaching_list(conn, who.fleet_id, limit=limit)

    @app.get(
        "/api/v1/clips/{clip_id}",
        response_model=ClipOut,
        tags=["clips"],
        responses={**err, 404: {"model": ErrorOut}},
    )
    def api_clip(who: Api, clip_id: ClipId) -> ClipOut:
        with fleet_connection(engine, who.fleet_id) as conn:
            detail = clip_detail(conn, clip_id)
        if detail is None:
            raise HTTPException(404, "no such clip")
        return _clip_out(detail)

    @app.post(
        "/api/v1/clips/{clip_id}/review",
        response_model=ReviewResultOut,
        tags=["review"],
        responses={
            **err,
            400: {"model": ErrorOut, "description": "the body is not JSON"},
            403: {"model": ErrorOut},
            404: {"model": ErrorOut},
            409: {"model": ErrorOut},
        },
    )
    def api_review(
        who: Annotated[auth.SignedIn, Depends(csrf_checked)], clip_id: ClipId, review: ReviewIn
    ) -> ReviewResultOut:
        """Accept, correct (events and/or instruction), dismiss, or mark coached; writes `reviews`."""
        try:
            return _review(who, clip_id, review)
        except ReviewError as error:
            raise HTTPException(409, str(error)) from error

    @app.get("/api/v1/reports/events", response_model=list[RateRowOut], tags=["reports"], responses=err)
    def api_events(
        who: Api,
        since: Day | None = None,
        until: Day | None = None,
        group: Literal["fleet", "vehicle", "driver"] = "driver",
        period: Literal["day", "week"] = "week",
        event_type: Annotated[EventType | None, Query(alias="type")] = None,
    ) -> list[dict[str, Any]]:
        """Events per group, period and type with rates per driving hour (and per 100 km where known)."""
        filters = Filters(
            fleet=who.fleet_id, event_type=event_type.value if event_type else None, since=since, until=until
        )  # [since, until): an empty or backward window has no rows
        with fleet_connection(engine, who.fleet_id) as conn:
            return event_rates(conn, filters, group=group, period=period)

    @app.get("/api/v1/reports/trend", response_model=list[TrendRowOut], tags=["reports"], responses=err)
    def api_trend(
        who: Api, since: Day, until: Day, group: Literal["fleet", "vehicle", "driver"] = "driver"
    ) -> list[dict[str, Any]]:
        """Events per group and type in [since, until) against the period of the same length before it."""
        with fleet_connection(engine, who.fleet_id) as conn:
            return trend(conn, Filters(fleet=who.fleet_id, since=since, until=until), group=group)

    @app.exception_handler(ReviewError)
    async def _review_error(_: Request, error: ReviewError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=409)

    return app


def _local(target: str) -> str:
    """Only same-site paths after sign-in (no open redirect to another host)."""
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/"


__all__ = ["CSRF_HEADER", "SESSION_COOKIE", "create_app"]
