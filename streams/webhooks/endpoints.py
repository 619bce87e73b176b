"""Registering a fleet's endpoints and reviving dead deliveries: the operator's side (`drivecoach webhooks`), run as
the database's owner."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import httpx
from sqlalchemy import Connection, delete, func, insert, select, update

from schemas.db import Fleet, WebhookDelivery, WebhookEndpoint
from streams.webhooks.exceptions import EndpointError
from streams.webhooks.signing import new_secret

KINDS = ("severe_event", "review_done", "coaching_acknowledged")  # migration 0020's triggers
SEVERITIES = range(1, 4)  # event_types.severity: 1 minor .. 3 critical


@dataclass(frozen=True)
class EndpointRow:
    id: uuid.UUID
    fleet_id: str
    url: str
    kinds: list[str]
    min_severity: int
    pending: int
    delivered: int
    dead: int


def parse_kinds(text: str) -> list[str]:
    """`severe_event,review_done` -> the kinds, checked against the ones the triggers write."""
    kinds = sorted({k.strip() for k in text.split(",") if k.strip()})
    if not kinds:
        raise EndpointError(f"name at least one kind: {', '.join(KINDS)}")
    if unknown := [k for k in kinds if k not in KINDS]:
        raise EndpointError(f"unknown kind {unknown[0]!r}; the kinds are {', '.join(KINDS)}")
    return kinds


def check_url(url: str) -> str:
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as err:
        raise EndpointError(f"{url!r} is not a URL ({err})") from err
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise EndpointError(f"{url!r} is not an http(s) URL with a host")
    return url


def add_endpoint(
    conn: Connection, *, fleet_id: str, url: str, kinds: list[str], min_severity: int = 3
) -> tuple[uuid.UUID, str]:
    """Register an endpoint of an existing fleet; its id and its new secret (shown to the operator once)."""
    if min_severity not in SEVERITIES:
        raise EndpointError(f"min severity {min_severity} is not one of 1 (minor) .. 3 (critical)")
    if conn.execute(select(Fleet.fleet_id).where(Fleet.fleet_id == fleet_id)).first() is None:
        raise EndpointError(f"fleet {fleet_id!r} does not exist")
    secret = new_secret()
    endpoint_id = conn.execute(
        insert(WebhookEndpoint)
        .values(
            fleet_id=fleet_id,
            url=check_url(url),
            secret=secret,
            kinds=parse_kinds(",".join(kinds)),
            min_severity=min_severity,
        )
        .returning(WebhookEndpoint.id)
    ).scalar_one()
    return endpoint_id, secret


def endpoints(conn: Connection, *, fleet_id: str | None = None) -> list[EndpointRow]:
    """Every endpoint (or a fleet's) with its deliveries counted by status."""
    counts = {
        (endpoint, status): n
        for endpoint, status, n in conn.execute(
            select(WebhookDelivery.endpoint_id, WebhookDelivery.status, func.count()).group_by(
                WebhookDelivery.endpoint_id, WebhookDelivery.status
            )
        )
    }
    query = select(WebhookEndpoint).order_by(WebhookEndpoint.fleet_id, WebhookEndpoint.created_at)
    if fleet_id is not None:
        query = query.where(WebhookEndpoint.fleet_id == fleet_id)
    return [
        EndpointRow(
            e.id,
            e.fleet_id,
            e.url,
            list(e.kinds),
            e.min_severity,
            *(counts.get((e.id, s), 0) for s in ("pending", "delivered", "dead")),
        )
        for e in conn.execute(query)
    ]


def remove_endpoint(conn: Connection, endpoint_id: uuid.UUID) -> bool:
    """Delete the endpoint and its deliveries (pending ones are never sent); False if there was none."""
    return bool(conn.execute(delete(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id)).rowcount)


def redeliver(
    conn: Connection,
    *,
    endpoint_id: uuid.UUID | None = None,
    fleet_id: str | None = None,
    event_id: uuid.UUID | None = None,
) -> int:
    """Dead deliveries (all, or an endpoint's, a fleet's, one event's) become pending, due now, with every attempt
    again; how many. Their event ids stay, so a receiver that did get one recognises it."""
    query = update(WebhookDelivery).where(WebhookDelivery.status == "dead")
    if endpoint_id is not None:
        query = query.where(WebhookDelivery.endpoint_id == endpoint_id)
    if fleet_id is not None:
        query = query.where(WebhookDelivery.fleet_id == fleet_id)
    if event_id is not None:
        query = query.where(WebhookDelivery.id == event_id)
    return conn.execute(query.values(status="pending", attempts=0, next_attempt_at=func.now())).rowcount


__all__ = [
    "KINDS",
    "EndpointRow",
    "add_endpoint",
    "check_url",
    "endpoints",
    "parse_kinds",
    "redeliver",
    "remove_endpoint",
]
