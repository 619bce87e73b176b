"""Helpers for tests that run pipeline processes against the real broker: read topics, wait for clips, scrape
metrics, connect as the worker's own login, report where stalled stages wait."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from schemas.messages import SegmentMessage
from streams.infra.processes import settings_env, start_command
from streams.producer import make_producer, publish
from streams.settings import Settings


def read_topic(bootstrap: str, topic: str, partitions: int, *, idle_s: float = 3.0) -> list[dict[str, Any]]:
    """Every record of a topic (JSON values), read until nothing new arrives for `idle_s`."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
    out: list[dict[str, Any]] = []
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < idle_s:
        got = consumer.poll(300)
        for records in got.values():
            out += [json.loads(r.value) for r in records]
        if got:
            quiet_since = time.monotonic()
    consumer.close()
    return out


def wait_until(condition, timeout_s: float = 120.0, what: str = "") -> None:
    """Poll `condition` every half second until it holds; fail with `what` once `timeout_s` has passed."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what or condition}"
        time.sleep(0.5)


@contextmanager
def service_login(database_url: str, group: str) -> Iterator[str]:
    """A new login in a service's group role (`drivecoach_pipeline`, the worker's; `drivecoach_web`, the console's:
    migration 0011) and the URL that connects as it; dropped afterwards. The test server trusts loopback: the
    password is set but not checked here."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from streams.infra.roles import ensure_login

    login = f"dc_{group.removeprefix('drivecoach_')}_{uuid.uuid4().hex[:8]}"
    owner = create_engine(database_url)
    ensure_login(owner, login, "s3cret", group)
    try:
        yield (
            make_url(database_url)
            .set(username=login, password="s3cret")
            .render_as_string(hide_password=False)
        )
    finally:
        with owner.connect() as conn:
            conn.execute(text(f'DROP ROLE IF EXISTS "{login}"'))
            conn.commit()
        owner.dispose()


def stalled_report(procs: list[subprocess.Popen[bytes]], logs: Path, lines: int = 40) -> str:
    """What a test prints when stages stall: each process writes its threads' stacks to its log (SIGUSR1, see
    `configure_logging`), then the tail of every log, so a CI failure says where each stage waits."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGUSR1)
    # Only called once the test has already failed: a moment for the signalled processes to write their dumps.
    time.sleep(1.0)
    parts = []
    for log in sorted(logs.glob("*.log")):
        tail = log.read_text(errors="replace").splitlines()[-lines:]
        parts.append(f"--- {log.name} (last {len(tail)} lines) ---\n" + "\n".join(tail))
    return "\n".join(parts)


def wait_for_clips(
    settings: Settings,
    want: set[str],
    procs: dict[str, tuple[subprocess.Popen[bytes], Path]],
    timeout_s: float = 180.0,
    topic: str = "clips",
) -> list[dict[str, Any]]:
    """Clip messages on the clips topic (or the joiner's plans on `clip-plans`: a joiner-only test needs no builder)
    once every wanted id is there (or the timeout passes); fails fast when a process that should run has died."""
    assert settings.kafka_bootstrap
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    consumer.assign([TopicPartition(settings.topic(topic), p) for p in range(settings.partitions)])
    clips: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and not want <= {c["clip_id"] for c in clips}:
            for name, (proc, log) in procs.items():
                assert proc.poll() is None, f"{name} died:\n{log.read_text()[-3000:]}"
            for records in consumer.poll(500).values():
                clips += [json.loads(r.value) for r in records]
        for records in consumer.poll(1500).values():  # anything published right after the last wanted clip
            clips += [json.loads(r.value) for r in records]
    finally:
        consumer.close()
    return clips


def start_joiner_and_builder(
    settings: Settings,
    logs: Path,
    *,
    builder_metrics_port: int = 0,
    builder_env: dict[str, str] | None = None,
) -> dict[str, tuple[subprocess.Popen[bytes], Path]]:
    """A joiner and a clip builder, as `drivecoach` processes; the builder scrapes on its own port."""
    env = settings_env(settings)
    builder = env | {"DRIVECOACH_METRICS_PORT": str(builder_metrics_port)} | (builder_env or {})
    return {
        name: (start_command([name], e, logs / f"{name}.log"), logs / f"{name}.log")
        for name, e in (("joiner", env), ("builder", builder))
    }


def scrape_all(ports: list[int]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The metrics pages of several processes (a joiner and its builders), each sample summed over them."""
    total: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for port in ports:
        for sample, value in scrape(port).items():
            total[sample] = total.get(sample, 0.0) + value
    return total


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """A Prometheus /metrics page as {(sample name, sorted labels): value}."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


class Replay(threading.Thread):
    """Publishes a fleet's uploads in end-time order at `speed` x real time, as the fleet would have sent them
    (a vehicle's silences included), in the background."""

    def __init__(self, settings: Settings, messages: list[SegmentMessage], speed: float = 2.0) -> None:
        super().__init__(daemon=True)
        self.settings, self.speed = settings, speed
        self.messages = sorted(messages, key=lambda m: m.end_ts)
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        assert self.settings.kafka_bootstrap
        producer = make_producer(self.settings.kafka_bootstrap, self.settings)
        try:
            started, first = time.monotonic(), self.messages[0].end_ts
            for m in self.messages:
                time.sleep(max(0.0, (m.end_ts - first) / self.speed - (time.monotonic() - started)))
                publish(producer, [m], self.settings)
                self.sent += 1
        except Exception as err:  # noqa: BLE001 - the test thread reports it in finish()
            self.error = err
        finally:
            producer.close()

    def finish(self, timeout_s: float = 300.0) -> None:
        self.join(timeout_s)
        assert not self.is_alive() and self.error is None, f"replay stopped at {self.sent}: {self.error!r}"
