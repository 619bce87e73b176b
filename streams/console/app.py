"""The safety managers' console: server-rendered pages for people (`pages.py`), a JSON API (`api.py`, OpenAPI at
/api/openapi.json), both reading and writing through `tenancy.fleet_connection` under the signed-in manager's
fleet role, so row-level security bounds what any handler can see."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy import Engine
from sqlalchemy.orm import sessionmaker

from schemas.taxonomy import TAXONOMY, EventType
from streams.console import api, auth, pages
from streams.console.deps import CSRF_HEADER, SESSION_COOKIE, ConsoleState, SignInRequired
from streams.console.review import ReviewError
from streams.infra.blobs import open_blob_store
from streams.settings import Settings

HERE = Path(__file__).parent
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


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
    app.state.console = _state(settings, engine)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.include_router(pages.router)
    app.include_router(api.router)
    _add_error_handlers(app)
    _add_security_headers(app)
    return app


def _state(settings: Settings, engine: Engine) -> ConsoleState:
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.globals.update(taxonomy=TAXONOMY, event_types=[t.value for t in EventType])
    return ConsoleState(
        settings=settings,
        engine=engine,
        sessions=sessionmaker(engine, expire_on_commit=False),
        templates=templates,
        blobs=open_blob_store(settings),
        lifetime=timedelta(hours=settings.console_session_hours),
        throttle=auth.SignInThrottle(),
    )


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(SignInRequired)
    async def _to_sign_in(request: Request, _: SignInRequired) -> RedirectResponse:
        return RedirectResponse(f"/login?next={request.url.path}", status_code=303)

    @app.exception_handler(ReviewError)
    async def _review_error(_: Request, error: ReviewError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=409)


def _add_security_headers(app: FastAPI) -> None:
    @app.middleware("http")
    async def _security_headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response


__all__ = ["CSRF_HEADER", "SESSION_COOKIE", "create_app"]
