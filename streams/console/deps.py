"""What the console's routes depend on: its state (database, templates, blobs, sign-in throttle and password-check
slots), the signed-in manager (API: 401; pages: a redirect to the sign-in page), CSRF checks, and the shared
parameter types."""

# No `from __future__ import annotations`: FastAPI resolves the routes' Annotated dependencies at import.
import re
import threading
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from typing import Annotated, Any

from fastapi import Depends, Header, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import BeforeValidator
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from streams.console import audit, auth
from streams.console.models import ReviewResultOut
from streams.console.queries import current_answer
from streams.console.review import ReviewError, ReviewIn, apply_review
from streams.console.throttle import HashSlots, SignInThrottle
from streams.infra.blobs import BlobStore
from streams.infra.tenancy import fleet_connection
from streams.settings import Settings

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


@dataclass(frozen=True)
class ConsoleState:
    """Built once by `create_app`, kept on `app.state.console`."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    templates: Jinja2Templates
    blobs: BlobStore
    lifetime: timedelta  # of a sign-in
    idle: timedelta  # a sign-in unused this long ends
    throttle: SignInThrottle
    hash_slots: HashSlots
    _link_key: list[str] = field(default_factory=list, repr=False, compare=False)  # read once, then kept
    # (manager, clip) -> when an unblurred view of it was last written to the audit log (pages._unblurred)
    unblurred_audited: dict[tuple[str, str], float] = field(default_factory=dict, repr=False, compare=False)
    audit_lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def link_secret(self) -> str:
        """The key drivers' links are signed with (migration 0016), read once as the console's own login (fleet
        roles may not read it): a driver's page asks for it on every frame, and the key never changes."""
        if not self._link_key:
            with self.engine.connect() as conn:
                key = conn.execute(text("SELECT secret FROM console_link_keys WHERE id = 1")).scalar_one()
            self._link_key.append(str(key))
        return self._link_key[0]


def console_state(request: Request) -> ConsoleState:
    return request.app.state.console


State = Annotated[ConsoleState, Depends(console_state)]


class SignInRequired(Exception):
    """A page was asked for without a session: the browser is sent to the sign-in page."""


# --- JSON API models: what the OpenAPI document describes and schemathesis fuzzes ---------------------------------


def session_of(request: Request) -> auth.SignedIn | None:
    """The request's manager; using the session moves its idle end forward (a write now and then)."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    ctx = console_state(request)
    with ctx.sessions() as session, session.begin():
        return auth.signed_in(session, token, idle=ctx.idle, lifetime=ctx.lifetime)


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
CsrfChecked = Annotated[auth.SignedIn, Depends(csrf_checked)]


def render(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    return console_state(request).templates.TemplateResponse(request, name, context, status_code=status)


def set_cookie(request: Request, response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        httponly=True,
        samesite="lax",
        secure=console_state(request).settings.console_secure_cookies,
        path="/",
    )


def review_clip(engine: Engine, who: auth.SignedIn, clip_id: str, review: ReviewIn) -> ReviewResultOut:
    """Apply a manager's review to the clip's current answer, under the manager's fleet role."""
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
        audit.record(
            conn,
            fleet_id=who.fleet_id,
            username=who.username,
            action="review",
            subject=clip_id,
            detail={"action": review.action, "events": outcome.events},
        )
    return ReviewResultOut(**asdict(outcome))


def local_path(target: str) -> str:
    """Only same-site paths after sign-in (no open redirect to another host)."""
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/"
