"""Sign-in for safety managers: argon2 password hashes, server-side sessions and per-session CSRF tokens.

Sessions live in Postgres rather than in a signed cookie so that signing out (or disabling a manager) ends them
at once; the cookie carries a random token and the table only its SHA-256.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from schemas.db import ConsoleSession, Manager
from streams.errors import DrivecoachError
from streams.infra.tenancy import ensure_fleet_role

_hasher = PasswordHasher()
# Verified against when the username is unknown, so a wrong name costs the same time as a wrong password.
_DUMMY_HASH = _hasher.hash("not a password of anyone")
MIN_PASSWORD_LENGTH = 8


class ManagerError(DrivecoachError):
    """A manager cannot be created as asked (a too-short password, say)."""


@dataclass(frozen=True)
class SignedIn:
    """Who a request is from: crosses from the session lookup into every handler."""

    username: str
    display_name: str
    fleet_id: str
    csrf_token: str


class SignInThrottle:
    """Slows password guessing: after `limit` failed sign-ins for one username within `window_s`, that username is
    refused until the window passes. Per console process (in memory): enough for one console; several replicas
    behind a balancer each count their own."""

    def __init__(
        self, limit: int = 5, window_s: float = 300.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit, self.window_s, self.clock = limit, window_s, clock
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, username: str) -> deque[float]:
        failures = self._failures.setdefault(username.lower(), deque())
        while failures and failures[0] <= self.clock() - self.window_s:
            failures.popleft()
        return failures

    def blocked(self, username: str) -> bool:
        return len(self._recent(username)) >= self.limit

    def failed(self, username: str) -> None:
        self._recent(username).append(self.clock())

    def succeeded(self, username: str) -> None:
        self._failures.pop(username.lower(), None)


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def same_token(expected: str, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(expected.encode(), given.encode())


def add_manager(
    session: Session, *, username: str, fleet_id: str, password: str, display_name: str = ""
) -> None:
    """Create or update a manager (and the fleet's Postgres role); updating a password ends their sessions."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ManagerError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    ensure_fleet_role(session.connection(), fleet_id)
    values = {
        "username": username,
        "fleet_id": fleet_id,
        "display_name": display_name or username,
        "password_hash": hash_password(password),
        "disabled": False,
    }
    stmt = insert(Manager).values(values)
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=["username"], set_={k: stmt.excluded[k] for k in values if k != "username"}
        )
    )
    session.execute(delete(ConsoleSession).where(ConsoleSession.username == username))


def sign_in(session: Session, username: str, password: str, *, lifetime: timedelta) -> str | None:
    """A new session token for the right password of an enabled manager, else None."""
    manager = session.get(Manager, username)
    if manager is None or manager.disabled:
        verify_password(_DUMMY_HASH, password)
        return None
    if not verify_password(manager.password_hash, password):
        return None
    if _hasher.check_needs_rehash(manager.password_hash):
        manager.password_hash = hash_password(password)
    token = secrets.token_urlsafe(32)
    session.execute(delete(ConsoleSession).where(ConsoleSession.expires_at <= datetime.now(UTC)))
    session.add(
        ConsoleSession(
            token_hash=token_digest(token),
            username=username,
            csrf_token=secrets.token_urlsafe(32),
            expires_at=datetime.now(UTC) + lifetime,
        )
    )
    return token


def signed_in(session: Session, token: str | None) -> SignedIn | None:
    if not token:
        return None
    row = session.execute(
        select(ConsoleSession, Manager)
        .join(Manager, Manager.username == ConsoleSession.username)
        .where(ConsoleSession.token_hash == token_digest(token))
    ).first()
    if row is None:
        return None
    console_session, manager = row
    if manager.disabled or console_session.expires_at <= datetime.now(UTC):
        return None
    return SignedIn(manager.username, manager.display_name, manager.fleet_id, console_session.csrf_token)


def sign_out(session: Session, token: str | None) -> None:
    if token:
        session.execute(delete(ConsoleSession).where(ConsoleSession.token_hash == token_digest(token)))


__all__ = [
    "MIN_PASSWORD_LENGTH",
    "ManagerError",
    "SignInThrottle",
    "SignedIn",
    "add_manager",
    "hash_password",
    "same_token",
    "sign_in",
    "sign_out",
    "signed_in",
    "token_digest",
    "verify_password",
]
