"""Checks that a report view gives the rows of a reference definition (an earlier migration's), for some fleets."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Connection


def differing_rows(
    conn: Connection, view: str, reference: str, fleets: list[str], columns: str = "*"
) -> tuple[int, int]:
    """(rows of the view, rows found in only one of the two) over `fleets`."""
    now = f"SELECT {columns} FROM {view} WHERE fleet_id = ANY(:fleets)"
    old = f"SELECT {columns} FROM ({reference}) v WHERE fleet_id = ANY(:fleets)"
    total = conn.execute(text(f"SELECT count(*) FROM ({now}) x"), {"fleets": fleets}).scalar_one()
    differ = conn.execute(
        text(f"SELECT count(*) FROM (({now} EXCEPT ALL {old}) UNION ALL ({old} EXCEPT ALL {now})) d"),
        {"fleets": fleets},
    ).scalar_one()
    return total, differ
