"""Webhooks' pure logic: the body, the signature and its check (ours and the README's snippet for receivers), the
backoff schedule, the endpoint options."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from pydantic import ValidationError

from streams.settings import Settings
from streams.webhooks.delivery import backoff_s
from streams.webhooks.endpoints import check_url, parse_kinds
from streams.webhooks.exceptions import EndpointError
from streams.webhooks.signing import body, headers, new_secret, sign, verify

README = Path(__file__).resolve().parents[2] / "README.md"
SECRET = "whsec_test"
PAYLOAD = b'{"id":"e1","type":"review_done"}'

Verifier = Callable[[str, Mapping[str, str], bytes], bool]


def readme_verifier() -> Verifier:
    """`verify_drivecoach_webhook` from the README's "Webhooks" section, as a receiver would paste it."""
    section = README.read_text().split("### Webhooks", 1)[1].split("\n### ", 1)[0]
    (snippet,) = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    scope: dict[str, object] = {}
    exec(compile(snippet, "README.md", "exec"), scope)
    return scope["verify_drivecoach_webhook"]  # type: ignore[return-value]


def ours(secret: str, request_headers: Mapping[str, str], payload: bytes) -> bool:
    return verify(
        secret,
        timestamp=request_headers.get("Drivecoach-Timestamp", ""),
        signature=request_headers.get("Drivecoach-Signature", ""),
        payload=payload,
        now=time.time(),
    )


VERIFIERS = {"ours": ours, "readme": readme_verifier()}


def _signed(timestamp: int, *, secret: str = SECRET, payload: bytes = PAYLOAD) -> dict[str, str]:
    return headers(secret=secret, event_id=uuid.uuid4(), timestamp=timestamp, payload=payload)


def test_the_signature_is_the_documented_hmac() -> None:
    expected = hmac.new(SECRET.encode(), b"1700000000." + PAYLOAD, hashlib.sha256).hexdigest()
    assert sign(SECRET, 1700000000, PAYLOAD) == f"v1={expected}"
    signed = _signed(1700000000)
    assert signed["Drivecoach-Signature"] == f"v1={expected}"
    assert signed["Drivecoach-Timestamp"] == "1700000000"
    uuid.UUID(signed["Drivecoach-Event-Id"])


CASES = {  # name -> (headers given the current time, body checked, accepted)
    "fresh": (lambda now: _signed(now), PAYLOAD, True),
    "a minute ahead (clock skew)": (lambda now: _signed(now + 60), PAYLOAD, True),
    "wrong secret": (lambda now: _signed(now, secret="whsec_other"), PAYLOAD, False),
    "tampered body": (lambda now: _signed(now), PAYLOAD.replace(b"e1", b"e2"), False),
    "old timestamp": (lambda now: _signed(now - 301), PAYLOAD, False),
    "far future timestamp": (lambda now: _signed(now + 301), PAYLOAD, False),
    "timestamp swapped after signing": (
        lambda now: {**_signed(now - 600), "Drivecoach-Timestamp": str(now)},
        PAYLOAD,
        False,
    ),
    "no signature": (lambda now: {"Drivecoach-Timestamp": str(now)}, PAYLOAD, False),
    "no timestamp": (
        lambda now: {"Drivecoach-Signature": _signed(now)["Drivecoach-Signature"]},
        PAYLOAD,
        False,
    ),
    "signature without scheme": (
        lambda now: {**_signed(now), "Drivecoach-Signature": _signed(now)["Drivecoach-Signature"][3:]},
        PAYLOAD,
        False,
    ),
}


@pytest.mark.parametrize("verifier", VERIFIERS)
@pytest.mark.parametrize("case", CASES)
def test_verification_accepts_only_fresh_requests_signed_with_the_secret(verifier: str, case: str) -> None:
    make_headers, payload, accepted = CASES[case]
    assert VERIFIERS[verifier](SECRET, make_headers(int(time.time())), payload) is accepted


def test_the_body_is_the_same_bytes_on_every_attempt() -> None:
    event_id = uuid.uuid4()
    created = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)
    data = {"b": [1, 2], "a": {"z": 1.5, "y": "ü"}}
    first = body(event_id=event_id, kind="severe_event", fleet_id="f", created_at=created, data=data)
    # another session's TimeZone, and the same data in another key order
    again = body(
        event_id=event_id,
        kind="severe_event",
        fleet_id="f",
        created_at=created.astimezone(timezone(timedelta(hours=5))),
        data={"a": {"y": "ü", "z": 1.5}, "b": [1, 2]},
    )
    assert first == again
    parsed = json.loads(first)
    assert parsed == {
        "id": str(event_id),
        "type": "severe_event",
        "fleet_id": "f",
        "created_at": "2026-12-02T08:00:00+00:00",
        "data": data,
    }


@pytest.mark.parametrize(
    ("attempts", "rand", "expected"),
    [
        (1, 0.0, 15.0),  # base 30 s, jittered down to half
        (1, 0.999999, 30.0),
        (2, 0.999999, 60.0),
        (5, 0.0, 240.0),
        (10, 0.999999, 15360.0),
        (11, 0.0, 10800.0),  # capped at 6 h, then jittered
        (11, 0.999999, 21600.0),
        (40, 0.5, 16200.0),
    ],
)
def test_backoff_doubles_to_a_cap_with_jitter(attempts: int, rand: float, expected: float) -> None:
    assert backoff_s(attempts, base_s=30.0, cap_s=21600.0, rand=rand) == pytest.approx(expected, rel=1e-5)


def test_default_schedule_gives_up_after_7_to_15_hours() -> None:
    """The README's and the settings' promise, from the defaults themselves."""
    s = Settings()
    waits = range(1, s.webhook_max_attempts)
    shortest = sum(
        backoff_s(a, base_s=s.webhook_backoff_s, cap_s=s.webhook_backoff_max_s, rand=0) for a in waits
    )
    longest = sum(
        backoff_s(a, base_s=s.webhook_backoff_s, cap_s=s.webhook_backoff_max_s, rand=1) for a in waits
    )
    assert 7 * 3600 <= shortest < longest <= 15 * 3600


def test_backoff_settings_must_fit_together() -> None:
    with pytest.raises(ValidationError, match="webhook_backoff_max_s"):
        Settings(webhook_backoff_s=60, webhook_backoff_max_s=30)


def test_secrets_are_random_and_long() -> None:
    secrets = {new_secret() for _ in range(100)}
    assert len(secrets) == 100
    assert all(s.startswith("whsec_") and len(s) >= 6 + 43 for s in secrets)


@pytest.mark.parametrize(
    ("text", "kinds"),
    [
        ("severe_event", ["severe_event"]),
        (" review_done , severe_event,review_done", ["review_done", "severe_event"]),
    ],
)
def test_kinds_parse(text: str, kinds: list[str]) -> None:
    assert parse_kinds(text) == kinds


@pytest.mark.parametrize("text", ["", " , ", "severe_events", "severe_event,everything"])
def test_unknown_kinds_are_refused(text: str) -> None:
    with pytest.raises(EndpointError):
        parse_kinds(text)


@pytest.mark.parametrize("url", ["ftp://example.com/x", "example.com/hook", "http://", "file:///etc/passwd"])
def test_only_http_urls_with_a_host(url: str) -> None:
    with pytest.raises(EndpointError):
        check_url(url)
    assert check_url("https://hooks.example.com/x?y=1") == "https://hooks.example.com/x?y=1"
