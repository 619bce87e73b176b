"""The console's JSON API against its own OpenAPI document, fuzzed by schemathesis (Hypothesis underneath):
no server errors, status codes and bodies as documented, for a signed-in manager on the real Postgres. The HTML
pages and forms (left out of the served document) are fuzzed from a document of their own: no server errors."""

from __future__ import annotations

import tempfile
import uuid
import zlib
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from hypothesis import HealthCheck, settings
from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker

from streams.console.app import create_app
from streams.settings import Settings
from tests.integration.console_data import running_console, seed_fleet, sign_in

pytestmark = pytest.mark.integration


def _app() -> Any:
    """The console's app; building it (and its documents) touches no database."""
    with tempfile.TemporaryDirectory() as home:
        return create_app(Settings(home=Path(home)), create_engine("postgresql+psycopg://unused/unused"))


def _openapi_document() -> dict:
    """The document the console serves at /api/openapi.json."""
    return _app().openapi()


def _forms_document() -> dict:
    """The pages and forms people use (not in the served document), described as FastAPI sees them. Signing out
    is left out: it would end the fuzzing session."""
    routes = []
    for route in _app().routes:
        if isinstance(route, APIRoute) and not route.include_in_schema and route.path != "/logout":
            route.include_in_schema = True  # this app instance only: the routes are copies of the routers'
            routes.append(route)
    return get_openapi(title="drivecoach console pages", version="1", routes=routes)


schema = schemathesis.openapi.from_dict(_openapi_document())
forms = schemathesis.openapi.from_dict(_forms_document())


@pytest.fixture(scope="module")
def signed_in(own_database_url: str, tmp_path_factory: pytest.TempPathFactory):
    """The console on loopback over the real Postgres, a manager's cookie and CSRF header, and the fleet's clips."""
    engine = create_engine(own_database_url)
    settings_ = Settings(home=tmp_path_factory.mktemp("fuzz"))
    fleet = seed_fleet(
        sessionmaker(engine), settings_, f"fleet-fuzz-{uuid.uuid4().hex[:6]}", clips=2, seed=51
    )
    with running_console(settings_, engine) as url, httpx.Client(base_url=url, timeout=60) as client:
        csrf = sign_in(client, fleet.manager)
        headers = {
            "Cookie": f"drivecoach_session={client.cookies.get('drivecoach_session')}",
            "X-CSRF-Token": csrf,
        }
        yield url, headers, [c.scenario_id for c in fleet.clips]
    engine.dispose()


def test_the_served_document_is_the_fuzzed_one(signed_in) -> None:
    url, headers, _ = signed_in
    assert httpx.get(f"{url}/api/openapi.json", headers=headers).json() == schema.raw_schema
    assert httpx.get(f"{url}/api/openapi.json").status_code == 401


def test_the_forms_document_covers_the_forms() -> None:
    assert {("post", "/login"), ("post", "/clips/{clip_id}/review"), ("get", "/clips/{clip_id}")} <= {
        (method, path) for path, item in forms.raw_schema["paths"].items() for method in item
    }


@pytest.mark.attack("hostile_input")
@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_openapi_document(case, signed_in) -> None:
    url, headers, _ = signed_in
    case.call_and_validate(base_url=url, headers=headers)


@pytest.mark.attack("hostile_input")
@forms.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_pages_and_forms_answer_no_server_error(case, signed_in) -> None:
    """Generated form fields reach the handlers: the forms' CSRF tokens are the right ones (the sign-in form's
    double-submit cookie is set to match) and half the clip ids name a real clip of the fleet."""
    url, headers, clip_ids = signed_in
    headers = dict(headers)
    if isinstance(case.body, dict) and case.path == "/login":
        case.body["csrf_token"] = "fuzzed-login-token"
        headers["Cookie"] += "; drivecoach_login=fuzzed-login-token"
    elif isinstance(case.body, dict):
        case.body["csrf_token"] = headers["X-CSRF-Token"]
    clip_id = (case.path_parameters or {}).get("clip_id")
    if isinstance(clip_id, str) and (pick := zlib.crc32(clip_id.encode("utf-8", "surrogatepass"))) % 2:
        case.path_parameters["clip_id"] = clip_ids[pick // 2 % len(clip_ids)]
    response = case.call(base_url=url, headers=headers, allow_redirects=False)
    assert response.status_code < 500, (case.method, case.path, case.body, response.status_code)
