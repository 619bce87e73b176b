"""What a delivery looks like on the wire: its body, its headers and their HMAC-SHA256 signature (the scheme the
README's "Webhooks" section documents, with the receiver's verification snippet)."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import uuid
from datetime import UTC, datetime
from typing import Any

EVENT_ID_HEADER = "Drivecoach-Event-Id"
TIMESTAMP_HEADER = "Drivecoach-Timestamp"
SIGNATURE_HEADER = "Drivecoach-Signature"
SCHEME = "v1"
TOLERANCE_S = (
    300  # a receiver refuses a timestamp further from its clock: a captured request cannot be replayed later
)


def new_secret() -> str:
    """256 random bits, shown once when an endpoint is registered."""
    return f"whsec_{secrets.token_urlsafe(32)}"


def body(
    *, event_id: uuid.UUID, kind: str, fleet_id: str, created_at: datetime, data: dict[str, Any]
) -> bytes:
    """The JSON every attempt of one delivery sends, byte for byte (keys sorted): the same event id, the same body."""
    envelope = {
        "id": str(event_id),
        "type": kind,
        "fleet_id": fleet_id,
        "created_at": created_at.astimezone(UTC).isoformat(),  # whatever the session's TimeZone
        "data": data,
    }
    return json.dumps(envelope, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sign(secret: str, timestamp: int, payload: bytes) -> str:
    """`v1=` and the hex HMAC-SHA256, keyed by the secret, of `<timestamp>.<body>`: the timestamp is signed too, so
    an old request cannot be sent again with a fresh one."""
    message = str(timestamp).encode() + b"." + payload
    return f"{SCHEME}={hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()}"


def headers(*, secret: str, event_id: uuid.UUID, timestamp: int, payload: bytes) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        EVENT_ID_HEADER: str(event_id),
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(secret, timestamp, payload),
    }


def verify(
    secret: str,
    *,
    timestamp: str,
    signature: str,
    payload: bytes,
    now: float,
    tolerance_s: float = TOLERANCE_S,
) -> bool:
    """The receiver's check: a well-formed timestamp within `tolerance_s` of `now` and a matching signature (compared
    in constant time, so the comparison's duration tells an attacker nothing)."""
    if not timestamp.isdigit() or abs(now - int(timestamp)) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, int(timestamp), payload), signature)


__all__ = [
    "EVENT_ID_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "TOLERANCE_S",
    "body",
    "headers",
    "new_secret",
    "sign",
    "verify",
]
