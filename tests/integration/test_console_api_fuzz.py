"""The console's JSON API against its own OpenAPI document, fuzzed by schemathesis (Hypothesis underneath):
no server errors, status codes and bodies as documented, for a signed-in manager on the real Postgres."""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker

from streams.console.app import create_app
from streams.settings import Settings
from tests.integration.console_data import running_console, seed_fleet, sign_in

pytestmark = pytest.mark.integration


def _openapi_document() -> dict:
    """The document the console serves at /api/openapi.json; building it touches no database."""
    with tempfile.TemporaryDirectory() as home:
        return create_app(
            Settings(home=Path(home)), create_engine("postgresql+psycopg://unused/unused")
        ).openapi()


schema = schemathesis.openapi.from_dict(_openapi_document())


@pytest.fixture(scope="module")
def signed_in(own_database_url: str, tmp_path_factory: pytest.TempPathFactory):
    """The console on loopback over the real Postgres, and a manager's cookie and CSRF header."""
    engine = create_engine(own_database_url)
    settings_ = Settings(home=tmp_path_factory.mktemp("fuzz"))
    fleet = seed_fleet(
        sessionmaker(engine), settings_, f"fleet-fuzz-{uuid.uuid4().hex[:6]}", clips=2, seed=51
    )
    with running_console(settings_, engine) as url, httpx.Client(base_url=url) as client:
        csrf = sign_in(client, fleet.manager)
        headers = {
            "Cookie": f"drivecoach_session={client.cookies.get('drivecoach_session')}",
            "X-CSRF-Token": csrf,
        }
        yield url, headers
    engine.dispose()


def test_the_served_document_is_the_fuzzed_one(signed_in) -> None:
    url, _headers = signed_in
    assert httpx.get(f"{url}/api/openapi.json").json() == schema.raw_schema


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_openapi_document(case, signed_in) -> None:
    url, headers = signed_in
    case.call_and_validate(base_url=url, headers=headers)
