"""Sign-in throttling (issue 17, findings 4 and 5): slow password guessing down without letting anyone lock a
manager out, and never run more argon2 checks at once than the console's memory allows.

Three backoff rules count failed sign-ins, each with a few free failures and then a delay that doubles with every
further failure, up to a cap:

- per client address and username (`PAIR`): a manager's own typos cost a few seconds, a guesser on one address a
  minute per try at most;
- per client address, whatever the username (`ADDRESS`): password spraying from one address;
- per username, from every address (`USERNAME`): a guesser spread over many addresses, with a short cap.

Neither of the last two applies where the manager signed in before (kind `trusted`: that address and username),
so a third party elsewhere, or on the same shared address (an office's NAT), can slow a manager down for half a
minute at most, on a new address only, and never lock them out; at a trusted address a guesser still meets the
first rule.

A refused try is not a failure (it checks no password), so a delay never grows while it lasts. The counts live in
Postgres (`console_signin_throttle`), shared by every console replica; a rule's count is forgotten after
`forget_s` without failures, and expired rows are purged (on each failure and by the console's housekeeping), so
the table holds only recent failures. Delays that start are logged (warning), with the address and username.

Behind a proxy or balancer, the client address is the forwarded one only if uvicorn trusts the proxy
(FORWARDED_ALLOW_IPS): otherwise every client shares the proxy's address.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import case, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session, sessionmaker

from schemas.db import SignInFailures
from streams.errors import DrivecoachError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rule:
    """`free` failures cost nothing; the n-th failure after them makes the next try wait `base_s * 2**n` seconds,
    at most `cap_s`. A count with no failure for `forget_s` starts again from zero."""

    kind: str
    free: int
    base_s: float
    cap_s: float
    forget_s: float

    def delay(self, failures: int) -> float:
        if failures < self.free:
            return 0.0
        return min(self.cap_s, self.base_s * 2.0 ** min(failures - self.free, 64))


PAIR = Rule("pair", free=3, base_s=2.0, cap_s=60.0, forget_s=900.0)
ADDRESS = Rule("address", free=10, base_s=2.0, cap_s=300.0, forget_s=3600.0)
USERNAME = Rule("username", free=10, base_s=1.0, cap_s=30.0, forget_s=900.0)
TRUSTED = "trusted"
TRUST_S = 30 * 86400.0  # an address a manager signed in from skips the address and username rules this long


def client_key(host: str | None) -> str:
    """How a client's address is counted: IPv4 as is, IPv6 by its /64 (one host's share of addresses)."""
    if not host:
        return "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host[:100]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def _digest(kind: str, value: str) -> str:
    return hashlib.sha256(f"{kind}\0{value}".encode("utf-8", "surrogatepass")).hexdigest()


def _shown(username: str) -> str:
    """A username as logs show it: quoted, control characters escaped, not too long."""
    return repr(username[:64])


@dataclass(frozen=True)
class Wait:
    """A sign-in refused for now: how long to wait, and which rule says so."""

    seconds: float
    rule: str

    @property
    def retry_after(self) -> int:
        return max(1, math.ceil(self.seconds))


def _now() -> datetime:
    return datetime.now(UTC)


class SignInThrottle:
    """The rules above over the `console_signin_throttle` table. `clock` is the time the rows are written with
    (replicas' clocks are assumed to agree to a second or so)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        rules: tuple[Rule, ...] = (PAIR, ADDRESS, USERNAME),
        trust_s: float = TRUST_S,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self.sessions, self.rules, self.trust_s, self.clock = sessions, rules, trust_s, clock

    @staticmethod
    def _keys(address: str | None, username: str) -> dict[str, str]:
        client, name = client_key(address), username.strip().lower()
        return {
            PAIR.kind: _digest(PAIR.kind, f"{client}\0{name}"),
            ADDRESS.kind: _digest(ADDRESS.kind, client),
            USERNAME.kind: _digest(USERNAME.kind, name),
            TRUSTED: _digest(TRUSTED, f"{client}\0{name}"),
        }

    def wait(self, address: str | None, username: str) -> Wait | None:
        """None when this client may try a password for `username` now, else how long it must wait."""
        now, keys = self.clock(), self._keys(address, username)
        with self.sessions() as session:
            rows = session.execute(
                select(SignInFailures.kind, SignInFailures.blocked_until).where(
                    SignInFailures.key.in_(list(keys.values())), SignInFailures.expires_at > now
                )
            ).all()
        until = {kind: blocked_until for kind, blocked_until in rows}
        if until.pop(TRUSTED, None) is not None:  # the manager's own address: only its own failures count
            until.pop(USERNAME.kind, None)
            until.pop(ADDRESS.kind, None)
        waits = [Wait((t - now).total_seconds(), kind) for kind, t in until.items() if t > now]
        return max(waits, key=lambda w: w.seconds, default=None)

    def failed(self, address: str | None, username: str) -> list[tuple[Rule, int, float]]:
        """Count a failed sign-in under each rule; (rule, failures, delay now imposed) for each, and the delays
        that start are logged. Expired rows are purged on the way."""
        now, keys = self.clock(), self._keys(address, username)
        counted: list[tuple[Rule, int, float]] = []
        table = SignInFailures
        with self.sessions() as session, session.begin():
            for rule in self.rules:  # always in this order: concurrent failures lock rows in the same order
                stale = table.expires_at <= now
                stmt = insert(table).values(
                    key=keys[rule.kind],
                    kind=rule.kind,
                    failures=1,
                    blocked_until=now,
                    expires_at=now + timedelta(seconds=rule.forget_s),
                )
                failures = session.execute(
                    stmt.on_conflict_do_update(
                        index_elements=[table.key],
                        set_={
                            "failures": case((stale, 1), else_=table.failures + 1),
                            "blocked_until": case((stale, now), else_=table.blocked_until),
                            "expires_at": stmt.excluded.expires_at,
                        },
                    ).returning(table.failures)
                ).scalar_one()
                delay = rule.delay(failures)
                if delay:  # the row stays locked until commit: a concurrent failure counts after this one
                    until = now + timedelta(seconds=delay)
                    session.execute(
                        update(table)
                        .where(table.key == keys[rule.kind])
                        .values(
                            blocked_until=func.greatest(table.blocked_until, until),
                            expires_at=func.greatest(table.expires_at, until),
                        )
                    )
                counted.append((rule, failures, delay))
            session.execute(delete(table).where(table.expires_at <= now))
        for rule, failures, delay in counted:
            if delay:
                log.warning(
                    "sign-in throttled (%s rule): %d failed sign-ins for %s from %s; the next try in %.0f s",
                    rule.kind,
                    failures,
                    _shown(username),
                    client_key(address),
                    delay,
                )
        return counted

    def succeeded(self, address: str | None, username: str) -> None:
        """The right password: this client's failures for the username are forgotten, and the address is one the
        manager uses (the address and username rules skip it for this username)."""
        now, keys = self.clock(), self._keys(address, username)
        with self.sessions() as session, session.begin():
            session.execute(delete(SignInFailures).where(SignInFailures.key == keys[PAIR.kind]))
            stmt = insert(SignInFailures).values(
                key=keys[TRUSTED],
                kind=TRUSTED,
                failures=0,
                blocked_until=now,
                expires_at=now + timedelta(seconds=self.trust_s),
            )
            session.execute(
                stmt.on_conflict_do_update(
                    index_elements=[SignInFailures.key], set_={"expires_at": stmt.excluded.expires_at}
                )
            )

    def purge(self) -> int:
        """Delete expired rows; how many."""
        with self.sessions() as session, session.begin():
            gone = session.execute(delete(SignInFailures).where(SignInFailures.expires_at <= self.clock()))
        return int(getattr(gone, "rowcount", 0) or 0)


# --- bounded password checks ---------------------------------------------------------------------------------------


class SignInBusy(DrivecoachError):
    """Every password-check slot is taken and the wait ran out (or too many sign-ins wait already)."""


def slots_for_memory(memory_mib: int, *, per_check_mib: int) -> int:
    """How many password checks fit in `memory_mib` at once (at least one)."""
    return max(1, memory_mib // max(1, per_check_mib))


class HashSlots:
    """At most `slots` argon2 checks at once (each takes its memory_cost, 64 MiB by default). A sign-in waits for
    a slot up to `wait_s`; when `max_waiting` sign-ins wait already, it is refused at once. Waiting holds no
    thread (the check itself runs in the thread pool)."""

    def __init__(self, slots: int, *, wait_s: float = 10.0, max_waiting: int | None = None) -> None:
        self.slots, self.wait_s = slots, wait_s
        self.max_waiting = 8 * slots if max_waiting is None else max_waiting
        self._waiting = 0
        self._semaphore: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _slots(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._semaphore is None or self._loop is not loop:  # an app served again on another loop (tests)
            self._semaphore, self._loop = asyncio.Semaphore(self.slots), loop
        return self._semaphore

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        semaphore = self._slots()
        if semaphore.locked() and self._waiting >= self.max_waiting:
            raise SignInBusy(f"{self._waiting} sign-ins wait for a password check already")
        self._waiting += 1
        try:
            await asyncio.wait_for(semaphore.acquire(), self.wait_s)
        except TimeoutError as err:
            raise SignInBusy(f"no password-check slot came free in {self.wait_s:g} s") from err
        finally:
            self._waiting -= 1
        try:
            yield
        finally:
            semaphore.release()


__all__ = [
    "ADDRESS",
    "PAIR",
    "TRUSTED",
    "USERNAME",
    "HashSlots",
    "Rule",
    "SignInBusy",
    "SignInThrottle",
    "Wait",
    "client_key",
    "slots_for_memory",
]
