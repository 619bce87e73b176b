"""Sign-in for safety managers: argon2 password hashes, server-side sessions and per-session CSRF tokens.

Sessions live in Postgres rather than in a signed cookie so that signing out (or disabling a manager) ends them
at once; the cookie carries a random token and the table only its SHA-256.
"""

from __future__ import annotations

import difflib
import hashlib
import hmac
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from schemas.db import ConsoleSession, Fleet, Manager
from streams.errors import DrivecoachError
from streams.infra.tenancy import ensure_fleet_role

_hasher = PasswordHasher()
# Verified against when the username is unknown, so a wrong name costs the same time as a wrong password.
_DUMMY_HASH = _hasher.hash("not a password of anyone")
MIN_PASSWORD_LENGTH = 8
MAX_USERNAME_LENGTH = 200
HASH_MEMORY_MIB = max(1, _hasher.memory_cost // 1024)  # what one password check takes (argon2's memory_cost)


class ManagerError(DrivecoachError):
    """A manager cannot be created as asked (a too-short password, say)."""


@dataclass(frozen=True)
class SignedIn:
    """Who a request is from: crosses from the session lookup into every handler."""

    username: str
    display_name: str
    fleet_id: str
    csrf_token: str
    is_admin: bool = False  # reads the fleet's audit log
    view_unblurred: bool = False  # may see faces unblurred (migration 0018), each time audited


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError, UnicodeEncodeError):  # a lone surrogate is no one's password
        return False


def username_problem(username: str) -> str | None:
    """Why no manager can have this username (a sentence), or None: the sign-in form refuses such a name before
    it reaches the database (Postgres text cannot hold NUL), and `add_manager` never creates one."""
    if not username:
        return "it is empty"
    if len(username) > MAX_USERNAME_LENGTH:
        return f"it is longer than {MAX_USERNAME_LENGTH} characters"
    if "\0" in username:
        return "it holds a NUL character"
    if any("\ud800" <= c <= "\udfff" for c in username):
        return "it is not valid Unicode text"
    if any(unicodedata.category(c) == "Cc" for c in username):
        return "it holds a control character"
    return None


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def same_token(expected: str, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(expected.encode(), given.encode())


def add_manager(
    session: Session,
    *,
    username: str,
    fleet_id: str,
    password: str,
    display_name: str = "",
    create_fleet: bool = False,
    is_admin: bool | None = None,
    view_unblurred: bool | None = None,
) -> None:
    """Create or update a manager (and the fleet's Postgres role); updating a password ends their sessions. The
    fleet must exist unless `create_fleet` (a mistyped fleet would otherwise become a new, empty one). `is_admin`:
    whether they read the fleet's audit log; `view_unblurred`: whether they may see faces unblurred (None: each
    unchanged)."""
    problem = username_problem(username)
    if problem is not None:
        raise ManagerError(f"{username!r} cannot be a username: {problem}")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ManagerError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    if not create_fleet and session.get(Fleet, fleet_id) is None:
        known = list(session.scalars(select(Fleet.fleet_id)))
        close = difflib.get_close_matches(fleet_id, known, n=3)
        hint = f" (did you mean {', '.join(repr(f) for f in close)}?)" if close else ""
        raise ManagerError(
            f"there is no fleet {fleet_id!r}{hint}; check its spelling, or pass --create-fleet to create it"
        )
    ensure_fleet_role(session.connection(), fleet_id)
    values = {
        "username": username,
        "fleet_id": fleet_id,
        "display_name": display_name or username,
        "password_hash": hash_password(password),
        "disabled": False,
    }
    if is_admin is not None:  # None: a new manager is not an admin, an existing one keeps what they were
        values["is_admin"] = is_admin
    if view_unblurred is not None:
        values["view_unblurred"] = view_unblurred
    stmt = insert(Manager).values(values)
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=["username"], set_={k: stmt.excluded[k] for k in values if k != "username"}
        )
    )
    session.execute(delete(ConsoleSession).where(ConsoleSession.username == username))


def sign_in(
    session: Session, username: str, password: str, *, lifetime: timedelta, idle: timedelta | None = None
) -> str | None:
    """A new session token for the right password of an enabled manager, else None. The session ends after
    `lifetime`, or earlier when unused for `idle`."""
    manager = session.get(Manager, username)
    if manager is None or manager.disabled:
        verify_password(_DUMMY_HASH, password)
        return None
    if not verify_password(manager.password_hash, password):
        return None
    if _hasher.check_needs_rehash(manager.password_hash):
        manager.password_hash = hash_password(password)
    token = secrets.token_urlsafe(32)
    now = datetime.now(UTC)
    session.add(
        ConsoleSession(
            token_hash=token_digest(token),
            username=username,
            csrf_token=secrets.token_urlsafe(32),
            expires_at=now + (lifetime if idle is None else min(lifetime, idle)),
        )
    )
    return token


def signed_in(
    session: Session,
    token: str | None,
    *,
    idle: timedelta | None = None,
    lifetime: timedelta | None = None,
) -> SignedIn | None:
    """Who holds this session token, if it is still valid. With `idle`, using the session moves its end to `idle`
    from now (never past `created_at + lifetime`): a session unused for `idle` ends. The move is written only when
    it gains more than a tenth of `idle` (a minute at most), not on every request; it needs a transaction."""
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
    now = datetime.now(UTC)
    if manager.disabled or console_session.expires_at <= now:
        return None
    if idle is not None:
        moved = now + idle
        if lifetime is not None:
            moved = min(moved, console_session.created_at + lifetime)
        if moved - console_session.expires_at > min(idle / 10, timedelta(minutes=1)):
            console_session.expires_at = moved
    return SignedIn(
        manager.username,
        manager.display_name,
        manager.fleet_id,
        console_session.csrf_token,
        manager.is_admin,
        manager.view_unblurred,
    )


def sign_out(session: Session, token: str | None) -> None:
    if token:
        session.execute(delete(ConsoleSession).where(ConsoleSession.token_hash == token_digest(token)))


def purge_expired_sessions(session: Session) -> int:
    """Delete sessions past their end (the console's housekeeping does, every few minutes); how many."""
    gone = session.execute(delete(ConsoleSession).where(ConsoleSession.expires_at <= datetime.now(UTC)))
    return int(getattr(gone, "rowcount", 0) or 0)


__all__ = [
    "HASH_MEMORY_MIB",
    "MAX_USERNAME_LENGTH",
    "MIN_PASSWORD_LENGTH",
    "ManagerError",
    "SignedIn",
    "add_manager",
    "hash_password",
    "purge_expired_sessions",
    "same_token",
    "sign_in",
    "sign_out",
    "signed_in",
    "token_digest",
    "username_problem",
    "verify_password",
]
