"""driver week facts: the safety scores read one row per fleet, week, driver and vehicle (issue 18, item 1)

`drivecoach bench reports` at a million events put "safety scores, 8 weeks" at 124 ms p95 (docs/benchmarks.md):
every page grouped the fleet's counted events of 8 weeks from event_facts and its clips of 8 weeks from the clips'
index. `driver_week_facts` holds those two aggregates per (fleet, ISO week, driver, vehicle): the driving (clips,
seconds, clips of known distance, their km) and the counted events per type (reviewed and kept: coaching status
`needs_coaching` or `coached`, streams.console.safety_score.COUNTED_STATUSES), so a page reads a few hundred rows.
Counts, not points: a fleet's weights and penalties (0015) apply when the score is read, so changing them needs no
rebuild. The vehicle is in the key because `drivecoach report scores --vehicle` narrows by it.

- Driving is a clip's start week (as the scores read it before); an event's week is its own (event_facts.week),
  so one row may hold only driving or only events. Drivers unknown (NULL) are not scored and not kept.
- Kept by deltas, not by recomputation: statement-level triggers with transition tables on clips (the sink, clip
  revisions of 0008, the retention job's deletes) and on event_facts (which 0007's triggers rewrite on every change
  of events, answers, reviews and severities, and FK cascades delete) add the new rows and subtract the old ones
  with `INSERT ... ON CONFLICT DO UPDATE`, keys in order; rows left with nothing are deleted. Sums are numeric, so
  adding and subtracting is exact in any order (float8 sums would drift from a recomputation). Concurrent writers
  of one key serialize on its row. The key holds the vehicle, whose clips reach one worker (topics keyed by
  vehicle), so workers do not contend; a worker's batch and a review that both span two weeks of one vehicle could
  deadlock (one is aborted: the worker retries its batch).
- The trigger functions run as the owner (SECURITY DEFINER, search_path pinned, not executable by PUBLIC), so the
  writers (the pipeline's login, fleet roles' reviews, the retention job) need no right on the table; fleet roles
  (drivecoach_console) read their own fleet's rows through row-level security, like event_facts.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

GROUP_ROLE = "drivecoach_console"  # migration 0004
OWN_FLEET = "fleet_id = (SELECT drivecoach_current_fleet())"
DEFINER = "LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp"
KEY = "fleet_id, week, driver_id, vehicle_id"
COUNTED = "('needs_coaching', 'coached')"  # streams.console.safety_score.COUNTED_STATUSES
CLIP_WEEK = "date_trunc('week', to_timestamp(start_ts) AT TIME ZONE 'UTC')::date"
DRIVING = ("clips", "seconds", "km_clips", "km")


def driving(rows: str, sign: int = 1) -> str:
    """Each clip of `rows` with a driver as a signed row of driving."""
    return f"""SELECT fleet_id, {CLIP_WEEK} AS week, driver_id, vehicle_id, {sign} AS clips,
                      {sign} * (end_ts - start_ts)::numeric AS seconds,
                      CASE WHEN distance_km IS NULL THEN 0 ELSE {sign} END AS km_clips,
                      {sign} * coalesce(distance_km::numeric, 0) AS km
               FROM {rows} WHERE driver_id IS NOT NULL"""


def counted(rows: str, sign: int = 1) -> str:
    """Each counted event of `rows` (event_facts' rows) with a driver as a signed row."""
    return f"""SELECT {KEY}, type, {sign} AS events FROM {rows}
               WHERE driver_id IS NOT NULL AND coaching_status IN {COUNTED}"""


def per_key(events: str) -> str:
    """Signed event rows as one `{type: count}` per key, counts that cancel out left out."""
    return f"""SELECT {KEY}, jsonb_object_agg(type, events) AS events
               FROM (SELECT {KEY}, type, sum(events) AS events FROM ({events}) e
                     GROUP BY {KEY}, type HAVING sum(events) <> 0) t
               GROUP BY {KEY}"""


# The whole table from the base tables: the upgrade's backfill, and what the tests compare the table with.
RECOMPUTE = f"""
    SELECT {KEY}, coalesce(d.clips, 0) AS clips, coalesce(d.seconds, 0) AS seconds,
           coalesce(d.km_clips, 0) AS km_clips, coalesce(d.km, 0) AS km, coalesce(e.events, '{{}}') AS events
    FROM (SELECT {KEY}, sum(clips) AS clips, sum(seconds) AS seconds, sum(km_clips) AS km_clips, sum(km) AS km
          FROM ({driving("clips")}) c GROUP BY {KEY}) d
    FULL JOIN ({per_key(counted("event_facts"))}) e USING ({KEY})"""

MERGE_EVENTS = """(SELECT coalesce(jsonb_object_agg(key, n), '{}')
                   FROM (SELECT key, sum(value::bigint) AS n
                         FROM (SELECT * FROM jsonb_each(f.events) UNION ALL SELECT * FROM jsonb_each(EXCLUDED.events)) kv
                         GROUP BY key HAVING sum(value::bigint) <> 0) s)"""
CONFLICT = f"ON CONFLICT ({KEY}) DO UPDATE SET"
LEFT_EMPTY = f"""DELETE FROM driver_week_facts f USING (SELECT DISTINCT {KEY} FROM (CHANGES) c) k
                 WHERE (f.fleet_id, f.week, f.driver_id, f.vehicle_id) = (k.fleet_id, k.week, k.driver_id, k.vehicle_id)
                       AND f.clips = 0 AND f.km_clips = 0 AND f.seconds = 0 AND f.km = 0 AND f.events = '{{}}'"""


def _add_driving(changes: str) -> str:
    sums = ", ".join(f"sum({c})" for c in DRIVING)
    return f"""
        INSERT INTO driver_week_facts AS f ({KEY}, {", ".join(DRIVING)})
        SELECT {KEY}, {sums} FROM ({changes}) c GROUP BY {KEY}
        HAVING {" OR ".join(f"sum({c}) <> 0" for c in DRIVING)}
        ORDER BY {KEY}
        {CONFLICT} {", ".join(f"{c} = f.{c} + EXCLUDED.{c}" for c in DRIVING)};
        {LEFT_EMPTY.replace("CHANGES", changes)};"""


def _add_events(changes: str) -> str:
    return f"""
        INSERT INTO driver_week_facts AS f ({KEY}, events)
        SELECT * FROM ({per_key(changes)}) d ORDER BY {KEY}
        {CONFLICT} events = {MERGE_EVENTS};
        {LEFT_EMPTY.replace("CHANGES", changes)};"""


# (table, its rows as signed changes, how they are added) per trigger event; `new_rows` and `old_rows` are the
# transition tables (a trigger with transition tables has one event, hence one function each).
SOURCES = {
    "clips": (driving, _add_driving),
    "event_facts": (counted, _add_events),
}
EVENTS = {
    "insert": ("REFERENCING NEW TABLE AS new_rows", [("new_rows", 1)]),
    "update": (
        "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows",
        [("old_rows", -1), ("new_rows", 1)],
    ),
    "delete": ("REFERENCING OLD TABLE AS old_rows", [("old_rows", -1)]),
}


def upgrade() -> None:
    op.create_table(
        "driver_week_facts",
        sa.Column("fleet_id", sa.String(length=64), nullable=False),
        sa.Column("week", sa.Date(), nullable=False),
        sa.Column("driver_id", sa.String(length=64), nullable=False),
        sa.Column("vehicle_id", sa.String(length=64), nullable=False),
        sa.Column("clips", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("seconds", sa.Numeric(), server_default="0", nullable=False),
        sa.Column("km_clips", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("km", sa.Numeric(), server_default="0", nullable=False),
        sa.Column("events", postgresql.JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.PrimaryKeyConstraint("fleet_id", "week", "driver_id", "vehicle_id"),
    )
    op.execute("ALTER TABLE driver_week_facts ENABLE ROW LEVEL SECURITY")
    op.execute(f"CREATE POLICY fleet_isolation ON driver_week_facts USING ({OWN_FLEET})")
    op.execute(f"GRANT SELECT ON driver_week_facts TO {GROUP_ROLE}")
    for table, (rows, add) in SOURCES.items():
        for event, (referencing, transitions) in EVENTS.items():
            changes = " UNION ALL ".join(rows(name, sign) for name, sign in transitions)
            function = f"drivecoach_driver_week_facts_{event}_{table}"
            op.execute(
                f"CREATE FUNCTION {function}() RETURNS trigger {DEFINER} AS $$ BEGIN {add(changes)} "
                "RETURN NULL; END $$"
            )
            op.execute(f"REVOKE ALL ON FUNCTION {function}() FROM PUBLIC")
            op.execute(f"""CREATE TRIGGER driver_week_facts_on_{event} AFTER {event.upper()} ON {table}
                           {referencing} FOR EACH STATEMENT EXECUTE FUNCTION {function}()""")
    op.execute(f"INSERT INTO driver_week_facts ({KEY}, {', '.join(DRIVING)}, events) {RECOMPUTE}")


def downgrade() -> None:
    for table in SOURCES:
        for event in EVENTS:
            op.execute(f"DROP TRIGGER driver_week_facts_on_{event} ON {table}")
            op.execute(f"DROP FUNCTION drivecoach_driver_week_facts_{event}_{table}()")
    op.drop_table("driver_week_facts")
