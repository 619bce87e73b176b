"""Drivers' self-coaching links: a signed, expiring token that opens one coaching session without an account.

The token carries the fleet (the console must assume the fleet's role to read the session), the session's public
id and the expiry, signed with HMAC-SHA256 under the database's link key (migration 0016), so every console
replica checks what any other signed, and a changed byte or a passed expiry is refused. Hand-written rather than a
library's because it is two standard-library calls and the payload is ours; nothing is stored per link.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from dataclasses import dataclass
from datetime import datetime


class LinkInvalid(ValueError):
    """Not a link the console signed (or a damaged one)."""


class LinkExpired(ValueError):
    """A link the console signed, past its expiry."""


@dataclass(frozen=True)
class Link:
    fleet_id: str
    session: uuid.UUID
    expires: datetime


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: str, payload: str) -> str:
    return _b64(hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest())


def sign(secret: str, link: Link) -> str:
    payload = _b64(
        json.dumps(
            [link.fleet_id, str(link.session), int(link.expires.timestamp())], separators=(",", ":")
        ).encode()
    )
    return f"{payload}.{_mac(secret, payload)}"


def verify(secret: str, token: str, now: datetime) -> Link:
    """The link's contents; LinkInvalid for a token this key did not sign, LinkExpired after its expiry."""
    payload, _, mac = token.partition(".")
    if not token.isascii():  # never one of ours, and compare_digest refuses non-ASCII text (a 500 before)
        raise LinkInvalid("this link is not valid")
    if not payload or not mac or not hmac.compare_digest(mac, _mac(secret, payload)):
        raise LinkInvalid("this link is not valid")
    try:
        fleet_id, session, expires = json.loads(_unb64(payload))
        link = Link(str(fleet_id), uuid.UUID(session), datetime.fromtimestamp(int(expires), now.tzinfo))
    except (ValueError, TypeError) as err:  # signed by us, so only a bug gets here; still no 500
        raise LinkInvalid("this link is not valid") from err
    if link.expires <= now:
        raise LinkExpired(f"this link expired on {link.expires:%Y-%m-%d}")
    return link
