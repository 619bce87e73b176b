"""Drivers' self-coaching links (streams/console/links.py): signed, expiring, refused when touched."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from streams.console.links import Link, LinkExpired, LinkInvalid, sign, verify

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)
LINK = Link("fleet.a/b", uuid.uuid4(), NOW + timedelta(days=14))


def test_a_link_opens_its_session_until_it_expires() -> None:
    token = sign("k" * 64, LINK)
    assert verify("k" * 64, token, NOW) == LINK
    with pytest.raises(LinkExpired, match="expired on 2026-12-15"):
        verify("k" * 64, token, NOW + timedelta(days=14))


@pytest.mark.attack("sessions")
def test_a_touched_or_foreign_link_is_refused() -> None:
    token = sign("k" * 64, LINK)
    payload, mac = token.split(".")
    other = sign("k" * 64, Link("fleet-b", LINK.session, LINK.expires)).split(".")[0]
    forgeries = (f"{other}.{mac}", f"{payload}.{mac[:-2]}AA", f"{payload}.", payload, "", "..", "a.b.c")
    for forged in (*forgeries, "0.\x80", f"{payload}.{mac[:-1]}é"):  # non-ASCII: was a TypeError, a 500
        with pytest.raises(LinkInvalid):
            verify("k" * 64, forged, NOW)
    with pytest.raises(LinkInvalid):
        verify("another key", token, NOW)
