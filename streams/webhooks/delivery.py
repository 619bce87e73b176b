"""The delivery process (`drivecoach webhooks deliver`): send the outbox's due rows, retry failures with capped
exponential backoff and jitter, and give a row up as `dead` after its last attempt.

Each worker thread claims one due row (`FOR UPDATE SKIP LOCKED`, so replicas and threads never send a row at once)
and holds that lock while it sends: a process killed mid-request leaves the row pending and due, and the next
claimer sends it again with the same event id. A row is marked delivered only on a 2xx, in the claim's transaction;
a 2xx whose commit is lost (the process dies between the two) is the one way a receiver gets an event twice besides
a timeout on a request it did process. So delivery is at least once, and receivers deduplicate on the event id.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from dataclasses import dataclass

import httpx
from prometheus_client import Counter
from sqlalchemy import Connection, Engine, RowMapping, text
from sqlalchemy.exc import InterfaceError, OperationalError

from streams.settings import Settings
from streams.webhooks.signing import body, headers

log = logging.getLogger(__name__)

DELIVERIES = Counter(
    "drivecoach_webhook_deliveries",
    "Webhook attempts by kind and outcome (delivered, retry, dead)",
    ["kind", "outcome"],
)
ERROR_CHARS = 500  # of last_error: the reason, not a receiver's whole error page

CLAIM = text("""
    SELECT o.id, o.fleet_id, o.kind, o.payload, o.created_at, o.attempts, e.url, e.secret
    FROM webhook_outbox o JOIN webhook_endpoints e ON e.id = o.endpoint_id
    WHERE o.status = 'pending' AND o.next_attempt_at <= clock_timestamp()
    ORDER BY o.next_attempt_at
    LIMIT 1
    FOR UPDATE OF o SKIP LOCKED""")
DELIVERED = text("""UPDATE webhook_outbox SET status = 'delivered', attempts = attempts + 1, last_error = NULL,
                           delivered_at = clock_timestamp()
                    WHERE id = :id""")
FAILED = text("""UPDATE webhook_outbox SET status = :status, attempts = attempts + 1, last_error = :error,
                        next_attempt_at = clock_timestamp() + make_interval(secs => :delay)
                 WHERE id = :id""")


def backoff_s(attempts: int, *, base_s: float, cap_s: float, rand: float) -> float:
    """Seconds to wait after the `attempts`-th failed attempt: base, doubling per attempt, capped, then scaled into
    [1/2, 1) by `rand` in [0, 1), so endpoints that failed together do not all come back at once."""
    return min(cap_s, base_s * 2 ** (attempts - 1)) * (0.5 + rand / 2)


@dataclass(frozen=True)
class Attempt:
    delivered: bool
    error: str | None  # None when delivered


def attempt(client: httpx.Client, *, url: str, secret: str, event_id: uuid.UUID, payload: bytes) -> Attempt:
    """POST one delivery, signed with a fresh timestamp; only a 2xx delivers it. Redirects are not followed (the
    signature is for the registered URL), and the response body is not read."""
    signed = headers(secret=secret, event_id=event_id, timestamp=int(time.time()), payload=payload)
    try:
        with client.stream("POST", url, content=payload, headers=signed) as response:
            status = response.status_code
    except httpx.TimeoutException as err:
        return Attempt(False, f"timed out ({err.__class__.__name__})")
    except httpx.HTTPError as err:
        return Attempt(False, f"{err.__class__.__name__}: {err}"[:ERROR_CHARS])
    if 200 <= status < 300:
        return Attempt(True, None)
    return Attempt(False, f"HTTP {status}")


class Deliverer:
    """Worker threads that send due rows until stopped; `settings.webhook_*` hold the timeout, the attempts and the
    backoff."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        self.stop = threading.Event()
        self.client = httpx.Client(timeout=settings.webhook_timeout_s, follow_redirects=False)

    def deliver_one(self) -> bool:
        """Claim, send and record one due row; False when none is due."""
        with self.engine.begin() as conn:
            row = conn.execute(CLAIM).mappings().first()
            if row is None:
                return False
            self._send(conn, row)
        return True

    def _send(self, conn: Connection, row: RowMapping) -> None:
        payload = body(
            event_id=row["id"],
            kind=row["kind"],
            fleet_id=row["fleet_id"],
            created_at=row["created_at"],
            data=row["payload"],
        )
        result = attempt(
            self.client, url=row["url"], secret=row["secret"], event_id=row["id"], payload=payload
        )
        if result.delivered:
            conn.execute(DELIVERED, {"id": row["id"]})
            DELIVERIES.labels(row["kind"], "delivered").inc()
            return
        attempts = row["attempts"] + 1
        dead = attempts >= self.settings.webhook_max_attempts
        delay = backoff_s(
            attempts,
            base_s=self.settings.webhook_backoff_s,
            cap_s=self.settings.webhook_backoff_max_s,
            rand=random.random(),
        )
        conn.execute(
            FAILED,
            {"id": row["id"], "status": "dead" if dead else "pending", "error": result.error, "delay": delay},
        )
        DELIVERIES.labels(row["kind"], "dead" if dead else "retry").inc()
        log.warning(
            "webhook %s (%s) attempt %d failed: %s%s",
            row["id"],
            row["kind"],
            attempts,
            result.error,
            "; dead" if dead else f"; again in {delay:.1f} s",
        )

    def work(self, *, once: bool) -> None:
        """One thread's loop. A lost database is waited out (the row it held stays pending); `once`: return when
        nothing is due."""
        while not self.stop.is_set():
            try:
                sent = self.deliver_one()
            except (OperationalError, InterfaceError) as err:
                log.warning("database unavailable, retrying: %s", str(err).splitlines()[0])
                self.stop.wait(self.settings.webhook_poll_s)
                continue
            if not sent:
                if once:
                    return
                self.stop.wait(self.settings.webhook_poll_s)

    def run(self, *, once: bool = False) -> None:
        """`webhook_concurrency` threads until `stop` is set (each finishes the request it is in) or, with `once`,
        until nothing is due."""
        threads = [
            threading.Thread(target=self.work, kwargs={"once": once}, name=f"webhooks-{n}", daemon=True)
            for n in range(self.settings.webhook_concurrency)
        ]
        for thread in threads:
            thread.start()
        try:
            while any(t.is_alive() for t in threads):
                for thread in threads:
                    thread.join(
                        timeout=0.2
                    )  # short joins: the main thread stays free for the SIGTERM handler
        finally:
            self.stop.set()
            for thread in threads:
                thread.join()
            self.client.close()


__all__ = ["DELIVERIES", "Attempt", "Deliverer", "attempt", "backoff_s"]
