"""The fleet settings page, for the fleet's admins: how long its data is kept (retention periods, legal holds and
what the nightly job deleted, migration 0019) and where its changes are sent (webhook endpoints and how their
deliveries fare, migration 0020). Read-only: periods, holds and endpoints are the operator's, through
`drivecoach retention ...` and `drivecoach webhooks ...`; the page shows the commands. Read under the fleet's role,
which sees neither an endpoint's secret nor a delivery's payload."""

# No `from __future__ import annotations`: FastAPI resolves the routes' Annotated dependencies at import.
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import text
from sqlalchemy.engine import Connection

from streams.console.deps import Page, State, render
from streams.infra.tenancy import fleet_connection

router = APIRouter()


def _rows(conn: Connection, sql: str) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.execute(text(sql)).mappings()]


def fleet_settings(conn: Connection) -> dict[str, Any]:
    """Everything the page shows, for the fleet whose role `conn` holds (row-level security keeps it to that)."""
    periods = conn.execute(text("SELECT video_days, results_days FROM fleet_retention")).mappings().first()
    return {
        "periods": dict(periods) if periods else {"video_days": None, "results_days": None},
        "holds": _rows(
            conn,
            """SELECT clip_id, reason, held_by, at FROM legal_holds WHERE released_at IS NULL
               ORDER BY at DESC LIMIT 200""",
        ),
        "deletions": _rows(
            conn,
            """SELECT kind, count(*) AS n, max(deleted_at) AS last FROM retention_deletions
               WHERE deleted_at IS NOT NULL GROUP BY kind ORDER BY kind""",
        ),
        "endpoints": _rows(
            conn,
            """SELECT e.id, e.url, e.kinds, e.min_severity, e.created_at,
                      count(o.id) FILTER (WHERE o.status = 'delivered') AS delivered,
                      count(o.id) FILTER (WHERE o.status = 'pending') AS pending,
                      count(o.id) FILTER (WHERE o.status = 'dead') AS dead
               FROM webhook_endpoints e LEFT JOIN webhook_outbox o ON o.endpoint_id = e.id
               GROUP BY e.id ORDER BY e.created_at""",
        ),
        "deliveries": _rows(
            conn,
            """SELECT o.id, e.url, o.kind, o.status, o.attempts, o.last_error, o.created_at, o.delivered_at,
                      o.next_attempt_at
               FROM webhook_outbox o JOIN webhook_endpoints e ON e.id = o.endpoint_id
               ORDER BY o.created_at DESC LIMIT 50""",
        ),
    }


@router.get("/settings", include_in_schema=False)
def settings_page(ctx: State, request: Request, who: Page) -> HTMLResponse:
    if not who.is_admin:
        return render(
            request, "forbidden.html", 403, who=who, what="the fleet's settings: they are for its admins"
        )
    with fleet_connection(ctx.engine, who.fleet_id) as conn:
        found = fleet_settings(conn)
    return render(request, "settings.html", who=who, **found)
