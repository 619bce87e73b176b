"""The safety managers' console: server-rendered pages for people (`pages.py`), a JSON API (`api.py`, its OpenAPI
document at /api/openapi.json for signed-in managers), both reading and writing through `tenancy.fleet_connection`
under the signed-in manager's fleet role, so row-level security bounds what any handler can see."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy import Engine
from sqlalchemy.exc import DataError
from sqlalchemy.orm import sessionmaker
from starlette.concurrency import run_in_threadpool

from schemas.taxonomy import TAXONOMY, EventType
from streams.console import api, auth, export, fleet_settings, pages
from streams.console.deps import CSRF_HEADER, SESSION_COOKIE, ConsoleState, SignInRequired
from streams.console.review import ReviewError
from streams.console.throttle import HashSlots, SignInThrottle, slots_for_memory
from streams.infra.blobs import open_blob_store
from streams.settings import Settings

HERE = Path(__file__).parent
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
HOUSEKEEPING_S = 300.0  # how often expired sessions and throttle rows are purged (and once at start)
ECHO_MAX_CHARS = 200  # of a rejected input shown back in a 422
log = logging.getLogger(__name__)


def create_app(settings: Settings, engine: Engine) -> FastAPI:
    state = _state(settings, engine)
    # No Swagger or ReDoc page (they load scripts from a CDN that the console's own CSP refuses), and the OpenAPI
    # document is served to signed-in managers only (api.py).
    app = FastAPI(
        title="drivecoach console",
        version="1",
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        lifespan=_housekeeping(state),
        description="Safety managers' review queue, clips and reports. Sign in at /login; "
        f"API writes need the session's CSRF token in the {CSRF_HEADER} header.",
    )
    app.state.console = state
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.include_router(pages.router)
    app.include_router(api.router)
    app.include_router(export.router)
    app.include_router(fleet_settings.router)
    _add_error_handlers(app)
    _add_security_headers(app)
    return app


def _state(settings: Settings, engine: Engine) -> ConsoleState:
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.globals.update(taxonomy=TAXONOMY, event_types=[t.value for t in EventType])
    sessions = sessionmaker(engine, expire_on_commit=False)
    return ConsoleState(
        settings=settings,
        engine=engine,
        sessions=sessions,
        templates=templates,
        blobs=open_blob_store(settings),
        lifetime=timedelta(hours=settings.console_session_hours),
        idle=timedelta(minutes=settings.console_idle_minutes),
        throttle=SignInThrottle(sessions),
        hash_slots=HashSlots(
            slots_for_memory(settings.console_signin_memory_mib, per_check_mib=auth.HASH_MEMORY_MIB)
        ),
    )


def _purge(state: ConsoleState) -> None:
    with state.sessions() as session, session.begin():
        sessions = auth.purge_expired_sessions(session)
    throttled = state.throttle.purge()
    if sessions or throttled:
        log.info("housekeeping: purged %d expired sessions and %d throttle rows", sessions, throttled)


def _housekeeping(state: ConsoleState) -> Callable[[FastAPI], contextlib.AbstractAsyncContextManager[None]]:
    """While the console runs: purge expired sessions and throttle rows at start and every HOUSEKEEPING_S (each
    replica does; the deletes are idempotent). A failure (the database away) is logged and tried again later."""

    async def every_few_minutes() -> None:
        while True:
            try:
                await run_in_threadpool(_purge, state)
            except Exception:  # housekeeping must not stop the console
                log.warning(
                    "console housekeeping failed; trying again in %.0f s", HOUSEKEEPING_S, exc_info=True
                )
            await asyncio.sleep(HOUSEKEEPING_S)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(every_few_minutes(), name="console-housekeeping")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    return lifespan


def _echo(value: Any) -> Any:
    """A rejected input as JSON can carry it: non-finite numbers as text, lone surrogates escaped, long text cut,
    anything else (an exception in `ctx`, say) as its text (FastAPI's own 422 answer failed with a 500 on NaN,
    Infinity, 1e400 and "\\ud800")."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, str):
        shown = value.encode("utf-8", "backslashreplace").decode("utf-8")
        return shown if len(shown) <= ECHO_MAX_CHARS else shown[:ECHO_MAX_CHARS] + "…"
    if isinstance(value, bytes):
        return _echo(value.decode("utf-8", "backslashreplace"))
    if isinstance(value, dict):
        return {str(_echo(str(k))): _echo(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_echo(v) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return _echo(str(value))


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(SignInRequired)
    async def _to_sign_in(request: Request, _: SignInRequired) -> RedirectResponse:
        return RedirectResponse(f"/login?next={request.url.path}", status_code=303)

    @app.exception_handler(ReviewError)
    async def _review_error(_: Request, error: ReviewError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=409)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        detail = [
            {key: _echo(item[key]) for key in ("type", "loc", "msg", "input", "ctx") if key in item}
            for item in error.errors()
        ]
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(DataError)
    async def _unstorable(request: Request, error: DataError) -> JSONResponse:
        # The handlers refuse what Postgres cannot store before it gets there; this is the net under them.
        log.warning("%s %s: the database refused a value: %s", request.method, request.url.path, error.orig)
        return JSONResponse(
            {"detail": "the request holds a value the database cannot store"}, status_code=400
        )


def _add_security_headers(app: FastAPI) -> None:
    @app.middleware("http")
    async def _security_headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response


__all__ = ["CSRF_HEADER", "SESSION_COOKIE", "create_app"]
