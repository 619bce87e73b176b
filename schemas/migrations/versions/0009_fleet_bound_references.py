"""fleet-bound references, and functions only their owner may call (issue 17, findings 1 and 2)

1. Row-level security checks the fleet of the row written, never the fleet of the row it points at: a fleet's role
   could insert an event or a review carrying its own fleet_id and another fleet's inference_id, and the facts'
   triggers (SECURITY DEFINER) joined it across fleets, so the other fleet's clip, driver and vehicle appeared in
   the attacker's reports and the other fleet's queue gained or lost the clip. Every reference to a fleet's answer,
   clip or segment now carries the fleet, so such a row is refused whoever writes it (fleet roles, the sink, bulk
   loads):
   - UNIQUE (id, fleet_id) on inferences, (clip_id, fleet_id) on clips, (segment_id, fleet_id) on segments: what
     the composite keys point at (the primary keys already make them unique, so adding them cannot fail);
   - (inference_id, fleet_id) -> inferences (id, fleet_id) from events, instructions, reviews and answer_facts;
     (clip_id, fleet_id) -> clips from inferences and clip_segments; (segment_id, fleet_id) -> segments from
     clip_segments. They replace the single-column keys, with the same ON DELETE.
   Not made composite: clips and segments -> vehicles and drivers (their ids are global keys, VINs say, that the
   sink inserts first-writer-wins: a vehicle seen under two fleets would stop the sink; no fleet role may write
   clips or segments), model_versions (rows shared by all fleets), event_facts -> events (written only by the
   refresh below, which takes its fleet from the clip and joins events on it).
   The facts' functions take the fleet from the clip (the parent), and join answers, events and reviews on it.
2. `drivecoach_refresh_event_facts` was executable by PUBLIC: a fleet's role called it on another fleet's clips and
   held their row locks. EXECUTE is revoked from PUBLIC on every SECURITY DEFINER function (the refresh and the
   five trigger functions), whose search_path is pinned to `pg_catalog, public, pg_temp`. Triggers still fire for
   every writer: Postgres checks EXECUTE on a trigger function when a trigger is created, not when it fires.
   `drivecoach_current_fleet()`, which the policies call with the caller's rights, had no search_path of its own:
   a fleet's role could create a temporary table named `fleet_roles` (pg_temp comes first in a default
   search_path), which its body then read, and pass every policy as any fleet it wrote there. Its search_path is
   pinned (pg_temp last) and the table qualified; PUBLIC's EXECUTE is revoked (drivecoach_console keeps 0004's
   grant). A fleet's role may now execute that function and none other of ours
   (tests/integration/test_tenancy_writes.py lists them): a new function is executable by PUBLIC unless revoked.

Upgrading checks the rows first: a row that names another fleet's parent (written before this revision) stops it
with the query that finds such rows; nothing is changed until they are removed.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from __future__ import annotations

from importlib import import_module

from alembic import op
from sqlalchemy import text

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

PINNED = "pg_catalog, public, pg_temp"

# parent table -> (the unique constraint the composite keys point at, its key column)
PARENTS = {
    "inferences": ("uq_inferences_id_fleet", "id"),
    "clips": ("uq_clips_clip_fleet", "clip_id"),
    "segments": ("uq_segments_segment_fleet", "segment_id"),
}
# (table, column, parent table, the single-column key it replaces, the composite key, ON DELETE)
REFERENCES = [
    (
        "events",
        "inference_id",
        "inferences",
        "events_inference_id_fkey",
        "fk_events_inference_fleet",
        "CASCADE",
    ),
    (
        "instructions",
        "inference_id",
        "inferences",
        "instructions_inference_id_fkey",
        "fk_instructions_inference_fleet",
        "CASCADE",
    ),
    (
        "reviews",
        "inference_id",
        "inferences",
        "reviews_inference_id_fkey",
        "fk_reviews_inference_fleet",
        None,
    ),
    (
        "answer_facts",
        "inference_id",
        "inferences",
        "answer_facts_inference_id_fkey",
        "fk_answer_facts_inference_fleet",
        "CASCADE",
    ),
    ("inferences", "clip_id", "clips", "inferences_clip_id_fkey", "fk_inferences_clip_fleet", None),
    (
        "clip_segments",
        "clip_id",
        "clips",
        "clip_segments_clip_id_fkey",
        "fk_clip_segments_clip_fleet",
        "CASCADE",
    ),
    (
        "clip_segments",
        "segment_id",
        "segments",
        "clip_segments_segment_id_fkey",
        "fk_clip_segments_segment_fleet",
        None,
    ),
]

# 0007's refresh, with the fleet taken from the clip: its answers, their events and reviews are read in that fleet.
REFRESH = f"""
CREATE OR REPLACE FUNCTION drivecoach_refresh_event_facts(clip_ids text[]) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = {PINNED} AS $$
BEGIN
    PERFORM 1 FROM clips WHERE clip_id = ANY(clip_ids) ORDER BY clip_id FOR NO KEY UPDATE;
    DELETE FROM event_facts WHERE clip_id = ANY(clip_ids);
    DELETE FROM answer_facts WHERE clip_id = ANY(clip_ids);
    INSERT INTO answer_facts (inference_id, fleet_id, clip_id, vehicle_id, driver_id, model_version, occurred_at,
                              events, max_severity, reviewed)
    SELECT i.id, c.fleet_id, c.clip_id, c.vehicle_id, c.driver_id, i.model_version, to_timestamp(c.start_ts),
           ev.events, ev.max_severity,
           EXISTS (SELECT 1 FROM reviews r WHERE r.fleet_id = c.fleet_id AND r.inference_id = i.id)
    FROM clips c
    CROSS JOIN LATERAL (SELECT id, model_version FROM inferences
                        WHERE inferences.fleet_id = c.fleet_id AND inferences.clip_id = c.clip_id
                        ORDER BY updated_at DESC, id DESC LIMIT 1) i  -- the current answer (current_inferences)
    CROSS JOIN LATERAL (SELECT count(e.id) AS events, coalesce(max(t.severity), 0) AS max_severity
                        FROM events e LEFT JOIN event_types t ON t.type = e.type
                        WHERE e.fleet_id = c.fleet_id AND e.inference_id = i.id) ev
    WHERE c.clip_id = ANY(clip_ids);
    INSERT INTO event_facts (event_id, fleet_id, vehicle_id, driver_id, clip_id, inference_id, model_version, type,
                             view, coaching_status, occurred_at, day, week)
    SELECT e.id, a.fleet_id, a.vehicle_id, a.driver_id, a.clip_id, a.inference_id, a.model_version, e.type, e.view,
           e.coaching_status, to_timestamp(c.start_ts + e.start_s),
           (to_timestamp(c.start_ts + e.start_s) AT TIME ZONE 'UTC')::date,
           date_trunc('week', to_timestamp(c.start_ts + e.start_s) AT TIME ZONE 'UTC')::date
    FROM answer_facts a  -- the current answers, just written, with their clip's fleet
    JOIN clips c ON c.clip_id = a.clip_id
    JOIN events e ON e.fleet_id = a.fleet_id AND e.inference_id = a.inference_id
    WHERE a.clip_id = ANY(clip_ids);
END $$"""

# 0007's trigger sources (`changed`: the transition table), the answer looked up in the changed row's own fleet.
BY_INFERENCE = """SELECT i.clip_id FROM changed
                  JOIN inferences i ON i.id = changed.inference_id AND i.fleet_id = changed.fleet_id"""
SOURCES = {
    "events": BY_INFERENCE,
    "inferences": "SELECT clip_id FROM changed",
    "clips": "SELECT clip_id FROM changed",
    "reviews": BY_INFERENCE,
    "event_types": """SELECT i.clip_id FROM events e
                      JOIN inferences i ON i.id = e.inference_id AND i.fleet_id = e.fleet_id
                      WHERE e.type IN (SELECT type FROM changed)""",
}

CURRENT_FLEET = f"""
CREATE OR REPLACE FUNCTION drivecoach_current_fleet() RETURNS text LANGUAGE sql STABLE SET search_path = {PINNED}
AS $$ SELECT fleet_id FROM public.fleet_roles WHERE role_name = current_user $$"""
CURRENT_FLEET_0004 = """
CREATE OR REPLACE FUNCTION drivecoach_current_fleet() RETURNS text LANGUAGE sql STABLE
AS $$ SELECT fleet_id FROM fleet_roles WHERE role_name = current_user $$"""

FUNCTIONS = [
    "drivecoach_current_fleet()",
    "drivecoach_refresh_event_facts(text[])",
    *(f"drivecoach_event_facts_from_{table}()" for table in SOURCES),
]


def _trigger_function(table: str, clips: str, search_path: str) -> str:
    return f"""
        CREATE OR REPLACE FUNCTION drivecoach_event_facts_from_{table}() RETURNS trigger
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = {search_path} AS $$
        BEGIN
            PERFORM drivecoach_refresh_event_facts(ARRAY(SELECT DISTINCT clip_id FROM ({clips}) ids));
            RETURN NULL;
        END $$"""


def _crossing_rows(table: str, column: str, parent: str) -> str:
    key = PARENTS[parent][1]
    return (
        f"SELECT t.* FROM {table} t JOIN {parent} p ON p.{key} = t.{column} "
        "WHERE p.fleet_id IS DISTINCT FROM t.fleet_id"
    )


def upgrade() -> None:
    conn = op.get_bind()
    for table, column, parent, *_ in REFERENCES:
        query = _crossing_rows(table, column, parent)
        crossing = conn.execute(text(f"SELECT count(*) FROM ({query}) x")).scalar_one()
        if crossing:
            raise RuntimeError(
                f"migration 0009: {crossing} row(s) of {table} name another fleet's {parent} row by {column} "
                f"(written before this revision, by a fleet role or a bad load); remove or correct them "
                f"({query}) and upgrade again"
            )
    for parent, (name, key) in PARENTS.items():
        op.create_unique_constraint(name, parent, [key, "fleet_id"])
    for table, column, parent, old, new, ondelete in REFERENCES:
        op.drop_constraint(old, table, type_="foreignkey")
        op.create_foreign_key(
            new, table, parent, [column, "fleet_id"], [PARENTS[parent][1], "fleet_id"], ondelete=ondelete
        )
    op.execute(REFRESH)
    for table, clips in SOURCES.items():
        op.execute(_trigger_function(table, clips, PINNED))
    op.execute(CURRENT_FLEET)
    for function in FUNCTIONS:
        op.execute(f"REVOKE EXECUTE ON FUNCTION {function} FROM PUBLIC")


def downgrade() -> None:
    previous = import_module("schemas.migrations.versions.0007_report_facts")
    for function in FUNCTIONS:
        op.execute(f"GRANT EXECUTE ON FUNCTION {function} TO PUBLIC")
    op.execute(CURRENT_FLEET_0004)
    op.execute(previous.REFRESH.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1))
    for table, (_, clips) in previous.SOURCES.items():
        op.execute(_trigger_function(table, clips, "public, pg_temp"))
    for table, column, parent, old, new, ondelete in reversed(REFERENCES):
        op.drop_constraint(new, table, type_="foreignkey")
        op.create_foreign_key(old, table, parent, [column], [PARENTS[parent][1]], ondelete=ondelete)
    for parent, (name, _) in PARENTS.items():
        op.drop_constraint(name, parent, type_="unique")
