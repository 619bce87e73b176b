"""The audit log of managers' actions (migration 0017): one row per sign-in, review, coaching assignment and
acknowledgement, export (evidence packages, report CSVs) and view of faces unblurred, written in the transaction of
the action itself where there is one (so an action and its record commit together), and read by the fleet's
admins."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

ACTIONS = ("sign_in", "review", "coaching_assigned", "coaching_acknowledged", "export", "unblurred_view")


def record(
    conn: Connection,
    *,
    fleet_id: str,
    username: str | None,
    action: str,
    subject: str = "",
    detail: dict[str, Any] | None = None,
    address: str | None = None,
) -> None:
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")
    # Plain SQL: SQLAlchemy's insert() asks for the new key back (RETURNING), which needs SELECT, and the console's
    # own login may insert sign-ins but read nothing.
    conn.execute(
        text("""INSERT INTO audit_log (fleet_id, username, action, subject, detail, address)
                VALUES (:fleet_id, :username, :action, :subject, CAST(:detail AS jsonb), :address)"""),
        {
            "fleet_id": fleet_id,
            "username": username,
            "action": action,
            "subject": subject[:200],
            "detail": json.dumps(detail or {}, default=str),
            "address": address,
        },
    )


def recent(conn: Connection, *, limit: int = 500) -> list[dict[str, Any]]:
    """The fleet's newest entries (row-level security keeps them to the fleet whose role reads)."""
    return [
        dict(r)
        for r in conn.execute(
            text("""SELECT at, username, action, subject, detail, address FROM audit_log
                    ORDER BY at DESC, id DESC LIMIT :limit"""),
            {"limit": limit},
        ).mappings()
    ]
