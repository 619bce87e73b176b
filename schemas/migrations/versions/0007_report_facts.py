"""report facts: report_events and review_queue read tables kept current on write

`drivecoach bench reports` at a million events (docs/benchmarks.md) still spent 60-115 ms per report, nearly all of
it in joining a fleet's events to the current answers (a DISTINCT ON per clip) and their clips on every query; the
dashboard page runs three such queries, and the review queue found the fleet's unreviewed current answers the same
way. `event_facts` holds one row per event of each clip's current answer with what reports filter and group by
(fleet, day, week, vehicle, driver, type, coaching status), so a report is one index range of one table;
`answer_facts` one row per clip's current answer with its event count, highest severity and whether it was
reviewed, so the queue's top is the head of one partial index. `report_events` and `review_queue` keep their
columns and rows and read them.

- Triggers keep them right in the transaction of every write, whoever writes (the sink, the console's review
  actions, bulk loads): changed events, answers and reviews, updated clips and severities make
  `drivecoach_refresh_event_facts` recompute the facts of the clips they touch (delete, then insert from the joins
  0002's views made). The triggers are per statement, with transition tables, so a bulk insert recomputes each
  clip once.
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
    DELETE FROM answer_facts WHERE clip_id = ANY(clip_ids);
    INSERT INTO answer_facts (inference_id, fleet_id, clip_id, vehicle_id, driver_id, model_version, occurred_at,
                              events, max_severity, reviewed)
    SELECT i.id, c.fleet_id, c.clip_id, c.vehicle_id, c.driver_id, i.model_version, to_timestamp(c.start_ts),
           ev.events, ev.max_severity, EXISTS (SELECT 1 FROM reviews r WHERE r.inference_id = i.id)
    FROM clips c
    CROSS JOIN LATERAL (SELECT id, model_version FROM inferences WHERE inferences.clip_id = c.clip_id
                        ORDER BY updated_at DESC, id DESC LIMIT 1) i  -- the current answer (current_inferences)
    CROSS JOIN LATERAL (SELECT count(e.id) AS events, coalesce(max(t.severity), 0) AS max_severity
                        FROM events e LEFT JOIN event_types t ON t.type = e.type WHERE e.inference_id = i.id) ev
    WHERE c.clip_id = ANY(clip_ids);
    INSERT INTO event_facts (event_id, fleet_id, vehicle_id, driver_id, clip_id, inference_id, model_version, type,
                             view, coaching_status, occurred_at, day, week)
    SELECT e.id, e.fleet_id, a.vehicle_id, a.driver_id, a.clip_id, a.inference_id, a.model_version, e.type, e.view,
           e.coaching_status, to_timestamp(c.start_ts + e.start_s),
           (to_timestamp(c.start_ts + e.start_s) AT TIME ZONE 'UTC')::date,
           date_trunc('week', to_timestamp(c.start_ts + e.start_s) AT TIME ZONE 'UTC')::date
    FROM answer_facts a  -- the current answers, just written
    JOIN clips c ON c.clip_id = a.clip_id
    JOIN events e ON e.inference_id = a.inference_id
    WHERE a.clip_id = ANY(clip_ids);
END $$"""

# table -> (trigger events, the SQL giving the clip ids of the changed rows, `changed` being the transition table)
BY_INFERENCE = "SELECT i.clip_id FROM changed JOIN inferences i ON i.id = changed.inference_id"
SOURCES = {
    "events": (["INSERT", "UPDATE", "DELETE"], BY_INFERENCE),
    "inferences": (["INSERT", "UPDATE", "DELETE"], "SELECT clip_id FROM changed"),
    "clips": (["UPDATE"], "SELECT clip_id FROM changed"),
    "reviews": (["INSERT", "DELETE"], BY_INFERENCE),
    "event_types": (
        ["UPDATE"],
        """SELECT i.clip_id FROM events e JOIN inferences i ON i.id = e.inference_id
                                   WHERE e.type IN (SELECT type FROM changed)""",
    ),
}

# 0002's report_events (through 0005's rewrite: same rows), now over the facts; severity stays event_types'.
REPORT_EVENTS = """
    SELECT f.event_id, f.fleet_id, f.vehicle_id, f.driver_id, f.clip_id, f.inference_id, f.model_version, f.type,
           t.severity, f.view, f.coaching_status, f.occurred_at, f.day, f.week
    FROM event_facts f
    JOIN event_types t ON t.type = f.type"""

REVIEW_QUEUE = """
    SELECT inference_id, clip_id, fleet_id, vehicle_id, driver_id, model_version, occurred_at, events, max_severity
    FROM answer_facts
    WHERE NOT reviewed"""


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
    op.create_index(
        "ix_event_facts_fleet_day",
        "event_facts",
        ["fleet_id", "day", "type"],
        postgresql_include=["vehicle_id", "driver_id", "coaching_status"],
    )
    op.create_index("ix_event_facts_clip", "event_facts", ["clip_id"])
    op.create_table(
        "answer_facts",
        sa.Column("inference_id", sa.BigInteger(), nullable=False),
        sa.Column("fleet_id", sa.String(length=64), nullable=False),
        sa.Column("clip_id", sa.String(length=64), nullable=False),
        sa.Column("vehicle_id", sa.String(length=64), nullable=False),
        sa.Column("driver_id", sa.String(length=64), nullable=True),
        sa.Column("model_version", sa.String(length=200), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("events", sa.BigInteger(), nullable=False),
        sa.Column("max_severity", sa.Integer(), nullable=False),
        sa.Column("reviewed", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["inference_id"], ["inferences.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("inference_id"),
    )
    op.create_index(
        "ix_answer_facts_queue",
        "answer_facts",
        ["fleet_id", sa.text("max_severity DESC"), sa.text("occurred_at DESC")],
        postgresql_where=sa.text("NOT reviewed"),
    )
    op.create_index("ix_answer_facts_clip", "answer_facts", ["clip_id"])
    for table in ("event_facts", "answer_facts"):
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"CREATE POLICY fleet_isolation ON {table} USING ({OWN_FLEET})")
        op.execute(f"GRANT SELECT ON {table} TO {GROUP_ROLE}")
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
    _replace_views({"report_events": REPORT_EVENTS, "review_queue": REVIEW_QUEUE})


def _replace_views(views: dict[str, str]) -> None:
    for name, body in views.items():
        op.execute(f"CREATE OR REPLACE VIEW {name} WITH (security_invoker = true) AS {body}")
        op.execute(f"GRANT SELECT ON {name} TO {GROUP_ROLE}")


def downgrade() -> None:
    from importlib import import_module

    previous = import_module("schemas.migrations.versions.0005_report_indexes")
    _replace_views({"report_events": previous.REPORT_EVENTS, "review_queue": previous.REVIEW_QUEUE})
    for table, (events, _) in SOURCES.items():
        for event in events:
            op.execute(f"DROP TRIGGER event_facts_on_{event.lower()} ON {table}")
        op.execute(f"DROP FUNCTION drivecoach_event_facts_from_{table}()")
    op.execute("DROP FUNCTION drivecoach_refresh_event_facts(text[])")
    op.drop_table("answer_facts")
    op.drop_table("event_facts")
