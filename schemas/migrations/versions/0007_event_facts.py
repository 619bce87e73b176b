"""event facts: report_events reads one table, kept current on write

`drivecoach bench reports` at a million events (docs/benchmarks.md) still spent 60-115 ms per report, nearly all of
it in joining a fleet's events to the current answers (a DISTINCT ON per clip) and their clips on every query; the
dashboard page runs three such queries. `event_facts` holds one row per event of each clip's current answer with
what reports filter and group by (fleet, day, week, vehicle, driver, type, coaching status), so a report is one
index range of one table; `report_events` keeps its columns and rows and reads it.

- Triggers keep it right in the transaction of every write, whoever writes (the sink, the console's review
  actions, bulk loads): inserted or updated events, inserted, updated or deleted answers, and updated clips make
  `drivecoach_refresh_event_facts` recompute the facts of the clips they touch (delete, then insert from the join
  0002's report_events made). The triggers are per statement, with transition tables, so a bulk insert recomputes
  each clip once. A deleted event takes its fact with it (foreign key, ON DELETE CASCADE).
- Concurrent writers of one clip: the refresh first locks the clips' rows (the sink's upsert of a clip takes the
  same lock), so the second writer recomputes after the first has committed and sees its rows.
- The functions run with their owner's rights (SECURITY DEFINER, search_path pinned): a fleet's role may set its
  events' coaching status (0004) but only reads event_facts, and row-level security shows it its own fleet's rows.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

GROUP_ROLE = "drivecoach_console"
OWN_FLEET = "fleet_id = (SELECT drivecoach_current_fleet())"

REFRESH = """
CREATE FUNCTION drivecoach_refresh_event_facts(clip_ids text[]) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    PERFORM 1 FROM clips WHERE clip_id = ANY(clip_ids) ORDER BY clip_id FOR NO KEY UPDATE;
    DELETE FROM event_facts WHERE clip_id = ANY(clip_ids);
    INSERT INTO event_facts (event_id, fleet_id, vehicle_id, driver_id, clip_id, inference_id, model_version, type,
                             view, coaching_status, occurred_at, day, week)
    SELECT e.id, e.fleet_id, c.vehicle_id, c.driver_id, c.clip_id, i.id, i.model_version, e.type, e.view,
           e.coaching_status, to_timestamp(c.start_ts + e.start_s),
           (to_timestamp(c.start_ts + e.start_s) AT TIME ZONE 'UTC')::date,
           date_trunc('week', to_timestamp(c.start_ts + e.start_s) AT TIME ZONE 'UTC')::date
    FROM clips c
    CROSS JOIN LATERAL (SELECT id, model_version FROM inferences WHERE inferences.clip_id = c.clip_id
                        ORDER BY updated_at DESC, id DESC LIMIT 1) i  -- the current answer (current_inferences)
    JOIN events e ON e.inference_id = i.id
    WHERE c.clip_id = ANY(clip_ids);
END $$"""

# table -> (trigger events, the SQL giving the clip ids of the changed rows, `changed` being the transition table)
SOURCES = {
    "events": (["INSERT", "UPDATE"],
               "SELECT i.clip_id FROM changed JOIN inferences i ON i.id = changed.inference_id"),
    "inferences": (["INSERT", "UPDATE", "DELETE"], "SELECT clip_id FROM changed"),
    "clips": (["UPDATE"], "SELECT clip_id FROM changed"),
}

# 0002's report_events (through 0005's rewrite: same rows), now over the facts; severity stays event_types'.
REPORT_EVENTS = """
    SELECT f.event_id, f.fleet_id, f.vehicle_id, f.driver_id, f.clip_id, f.inference_id, f.model_version, f.type,
           t.severity, f.view, f.coaching_status, f.occurred_at, f.day, f.week
    FROM event_facts f
    JOIN event_types t ON t.type = f.type"""


def upgrade() -> None:
    op.create_table(
        "event_facts",
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column("fleet_id", sa.String(length=64), nullable=False),
        sa.Column("vehicle_id", sa.String(length=64), nullable=False),
        sa.Column("driver_id", sa.String(length=64), nullable=True),
        sa.Column("clip_id", sa.String(length=64), nullable=False),
        sa.Column("inference_id", sa.BigInteger(), nullable=False),
        sa.Column("model_version", sa.String(length=200), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("view", sa.String(length=16), nullable=False),
        sa.Column("coaching_status", sa.String(length=16), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("week", sa.Date(), nullable=False),
        sa.ForeignKeyConstraint(["event_id"], ["events.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("event_id"),
    )
    op.create_index("ix_event_facts_fleet_day", "event_facts", ["fleet_id", "day", "type"],
                    postgresql_include=["vehicle_id", "driver_id", "coaching_status"])
    op.create_index("ix_event_facts_clip", "event_facts", ["clip_id"])
    op.execute("ALTER TABLE event_facts ENABLE ROW LEVEL SECURITY")
    op.execute(f"CREATE POLICY fleet_isolation ON event_facts USING ({OWN_FLEET})")
    op.execute(f"GRANT SELECT ON event_facts TO {GROUP_ROLE}")
    op.execute(REFRESH)
    for table, (events, clips) in SOURCES.items():
        op.execute(f"""
            CREATE FUNCTION drivecoach_event_facts_from_{table}() RETURNS trigger
            LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
            BEGIN
                PERFORM drivecoach_refresh_event_facts(ARRAY(SELECT DISTINCT clip_id FROM ({clips}) ids));
                RETURN NULL;
            END $$""")
        for event in events:
            transition = "OLD" if event == "DELETE" else "NEW"
            op.execute(f"""CREATE TRIGGER event_facts_on_{event.lower()} AFTER {event} ON {table}
                           REFERENCING {transition} TABLE AS changed FOR EACH STATEMENT
                           EXECUTE FUNCTION drivecoach_event_facts_from_{table}()""")
    op.execute("SELECT drivecoach_refresh_event_facts(ARRAY(SELECT DISTINCT clip_id FROM inferences))")
    op.execute(f"CREATE OR REPLACE VIEW report_events WITH (security_invoker = true) AS {REPORT_EVENTS}")
    op.execute(f"GRANT SELECT ON report_events TO {GROUP_ROLE}")


def downgrade() -> None:
    from importlib import import_module

    previous = import_module("schemas.migrations.versions.0005_report_indexes")
    op.execute(f"CREATE OR REPLACE VIEW report_events WITH (security_invoker = true) AS {previous.REPORT_EVENTS}")
    op.execute(f"GRANT SELECT ON report_events TO {GROUP_ROLE}")
    for table, (events, _) in SOURCES.items():
        for event in events:
            op.execute(f"DROP TRIGGER event_facts_on_{event.lower()} ON {table}")
        op.execute(f"DROP FUNCTION drivecoach_event_facts_from_{table}()")
    op.execute("DROP FUNCTION drivecoach_refresh_event_facts(text[])")
    op.drop_table("event_facts")
