"""webhooks: a fleet's endpoints get signed HTTP deliveries of new severe events, finished reviews and coaching
acknowledgements (issue 18, item 5)

- webhook_endpoints: a fleet's URL, the event kinds it wants, the lowest severity of `severe_event` it wants, and the
  random secret that signs its deliveries (kept: the delivery process needs it to sign).
- webhook_outbox: one row per delivery (change x endpoint), written by triggers in the transaction of the change
  itself, whoever writes it (the worker's sink, the console's review, a driver's acknowledgement, a bulk load): a
  change that commits has its deliveries, one that rolls back has none. `id` is the event id every attempt of the
  delivery carries; `subject` names the change, so a change written twice (a replayed answer, a second
  acknowledgement) is delivered once. `drivecoach webhooks deliver` sends due rows (streams/webhooks/delivery.py).
- Which changes: `severe_event`, an event the model found (coaching status `needs_review` on insert) whose type's
  severity reaches the endpoint's `min_severity`, keyed by its answer, type, camera and start (a replay re-creates
  the same events); `review_done`, a reviews row; `coaching_acknowledged`, a session's first acknowledgement.
- The trigger functions run as the owner (SECURITY DEFINER, search_path pinned, not executable by PUBLIC): the
  writers (the pipeline's login, fleet roles) hold no right on either table. Endpoints only join their own fleet's
  changes, and the outbox's `(endpoint_id, fleet_id)` references the endpoint's, so no row sends one fleet's change
  to another fleet's endpoint.
- drivecoach_webhooks: the delivery process's NOLOGIN group role: read endpoints (with their secrets) and due rows,
  record attempts; a permissive policy for this role alone, since it serves every fleet. Fleet roles and the console
  get nothing: a secret never reaches a manager's query. Endpoints are registered by the owner (`drivecoach
  webhooks add`).

A login joins the role with `drivecoach migrate --webhooks-login NAME` (password from
DRIVECOACH_WEBHOOKS_DB_PASSWORD).

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

WEBHOOKS_ROLE = "drivecoach_webhooks"
RETENTION_ROLE = "drivecoach_retention"  # migration 0019: deletes a clip's deliveries with its results
GROUP_ROLE = (
    "drivecoach_console"  # migration 0004: every fleet's role; the console's admin page reads its own
)
OWN_FLEET = "fleet_id = (SELECT drivecoach_current_fleet())"
KINDS = ("severe_event", "review_done", "coaching_acknowledged")
DEFINER = "LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp"
ADD = """INSERT INTO webhook_outbox (fleet_id, endpoint_id, kind, subject, payload)"""
SKIP_SEEN = "ON CONFLICT ON CONSTRAINT uq_webhook_outbox_subject DO NOTHING"
# Without any endpoint (most databases, and bulk loads into them) a trigger returns before it joins anything.
NO_ENDPOINTS = "IF NOT EXISTS (SELECT 1 FROM webhook_endpoints) THEN RETURN NULL; END IF;"
CLIP_FIELDS = (
    "'answer_id', i.public_id, 'clip_id', c.clip_id, 'vehicle_id', c.vehicle_id, 'driver_id', c.driver_id"
)

# function -> (table, trigger timing and level, body)
TRIGGERS = {
    "drivecoach_webhooks_from_events": (
        "events",
        "AFTER INSERT ON events REFERENCING NEW TABLE AS changed FOR EACH STATEMENT",
        f"""{ADD}
            SELECT e.fleet_id, w.id, 'severe_event', concat_ws(':', i.public_id, e.type, e.view, e.start_s),
                   jsonb_build_object(
                       'event', jsonb_build_object(
                           'id', e.public_id, 'type', e.type, 'severity', t.severity, 'view', e.view,
                           'start_s', e.start_s, 'end_s', e.end_s,
                           'occurred_at', to_timestamp(c.start_ts + e.start_s)),
                       'model_version', i.model_version, {CLIP_FIELDS})
            FROM changed e
            JOIN event_types t ON t.type = e.type
            JOIN inferences i ON i.id = e.inference_id
            JOIN clips c ON c.clip_id = i.clip_id
            JOIN webhook_endpoints w ON w.fleet_id = e.fleet_id AND 'severe_event' = ANY (w.kinds)
                                    AND t.severity >= w.min_severity
            WHERE e.coaching_status = 'needs_review'
            ORDER BY e.id
            {SKIP_SEEN};
            RETURN NULL;""",
    ),
    "drivecoach_webhooks_from_reviews": (
        "reviews",
        "AFTER INSERT ON reviews FOR EACH ROW",
        f"""{ADD}
            SELECT NEW.fleet_id, w.id, 'review_done', NEW.public_id::text,
                   jsonb_build_object(
                       'review', jsonb_build_object('id', NEW.public_id, 'verdict', NEW.verdict,
                                                    'reviewed_at', NEW.created_at),
                       'events', coalesce((
                           SELECT jsonb_agg(jsonb_build_object(
                                      'id', e.public_id, 'type', e.type, 'severity', t.severity, 'view', e.view,
                                      'start_s', e.start_s, 'end_s', e.end_s, 'coaching_status', e.coaching_status)
                                  ORDER BY e.start_s, e.type)
                           FROM events e LEFT JOIN event_types t ON t.type = e.type
                           WHERE e.inference_id = NEW.inference_id), '[]'::jsonb),
                       {CLIP_FIELDS})
            FROM inferences i
            JOIN clips c ON c.clip_id = i.clip_id
            JOIN webhook_endpoints w ON w.fleet_id = NEW.fleet_id AND 'review_done' = ANY (w.kinds)
            WHERE i.id = NEW.inference_id
            {SKIP_SEEN};
            RETURN NULL;""",
    ),
    "drivecoach_webhooks_from_coaching_sessions": (
        "coaching_sessions",
        """AFTER UPDATE OF acknowledged_at ON coaching_sessions FOR EACH ROW
           WHEN (OLD.acknowledged_at IS NULL AND NEW.acknowledged_at IS NOT NULL)""",
        f"""{ADD}
            SELECT NEW.fleet_id, w.id, 'coaching_acknowledged', NEW.public_id::text,
                   jsonb_build_object(
                       'session', jsonb_build_object(
                           'id', NEW.public_id, 'driver_id', NEW.driver_id, 'coach', NEW.coach, 'due_on', NEW.due_on,
                           'assigned_at', NEW.created_at, 'acknowledged_at', NEW.acknowledged_at),
                       'clip_ids', coalesce((SELECT jsonb_agg(sc.clip_id ORDER BY sc.clip_id)
                                             FROM coaching_session_clips sc WHERE sc.session_id = NEW.id),
                                            '[]'::jsonb))
            FROM webhook_endpoints w
            WHERE w.fleet_id = NEW.fleet_id AND 'coaching_acknowledged' = ANY (w.kinds)
            {SKIP_SEEN};
            RETURN NULL;""",
    ),
}


def upgrade() -> None:
    kinds = ", ".join(f"'{k}'" for k in KINDS)
    op.create_table(
        "webhook_endpoints",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("fleet_id", sa.String(length=64), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("secret", sa.Text(), nullable=False),
        sa.Column("kinds", postgresql.ARRAY(sa.String(length=32)), nullable=False),
        sa.Column("min_severity", sa.Integer(), server_default="3", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            f"cardinality(kinds) > 0 AND kinds <@ ARRAY[{kinds}]::varchar[]",
            name="ck_webhook_endpoints_kinds",
        ),
        sa.CheckConstraint("url ~ '^https?://'", name="ck_webhook_endpoints_url"),
        sa.ForeignKeyConstraint(["fleet_id"], ["fleets.fleet_id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("id", "fleet_id", name="uq_webhook_endpoints_id_fleet"),
    )
    op.create_index("ix_webhook_endpoints_fleet", "webhook_endpoints", ["fleet_id"])
    op.create_table(
        "webhook_outbox",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("fleet_id", sa.String(length=64), nullable=False),
        sa.Column("endpoint_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("subject", sa.String(length=300), nullable=False),
        sa.Column("payload", postgresql.JSONB(), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "next_attempt_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("status IN ('pending', 'delivered', 'dead')", name="ck_webhook_outbox_status"),
        sa.ForeignKeyConstraint(
            ["endpoint_id", "fleet_id"],
            ["webhook_endpoints.id", "webhook_endpoints.fleet_id"],
            name="fk_webhook_outbox_endpoint_fleet",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("endpoint_id", "kind", "subject", name="uq_webhook_outbox_subject"),
    )
    op.create_index(
        "ix_webhook_outbox_due",
        "webhook_outbox",
        ["next_attempt_at"],
        postgresql_where=sa.text("status = 'pending'"),
    )
    for function, (_, trigger, body) in TRIGGERS.items():
        op.execute(
            f"CREATE FUNCTION {function}() RETURNS trigger {DEFINER} AS $$ BEGIN {NO_ENDPOINTS} {body} END $$"
        )
        op.execute(f"REVOKE ALL ON FUNCTION {function}() FROM PUBLIC")
        op.execute(
            f"CREATE TRIGGER {function.removeprefix('drivecoach_')} {trigger} EXECUTE FUNCTION {function}()"
        )

    op.execute(f"""DO $$ BEGIN CREATE ROLE {WEBHOOKS_ROLE} NOLOGIN NOBYPASSRLS;
                   EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$""")
    for table in ("webhook_endpoints", "webhook_outbox"):
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(
            f"CREATE POLICY webhooks_delivery ON {table} TO {WEBHOOKS_ROLE} USING (true) WITH CHECK (true)"
        )
    op.execute(f"GRANT SELECT (id, fleet_id, url, secret) ON webhook_endpoints TO {WEBHOOKS_ROLE}")
    op.execute(
        f"GRANT SELECT, UPDATE (status, attempts, next_attempt_at, last_error, delivered_at) ON webhook_outbox "
        f"TO {WEBHOOKS_ROLE}"
    )
    op.execute(f"GRANT SELECT ON alembic_version TO {WEBHOOKS_ROLE}")  # the revision check at start
    # The console's fleet settings page shows a fleet its own endpoints and deliveries: never a secret or a payload.
    for table in ("webhook_endpoints", "webhook_outbox"):
        op.execute(f"CREATE POLICY fleet_isolation ON {table} TO {GROUP_ROLE} USING ({OWN_FLEET})")
    op.execute(
        f"GRANT SELECT (id, fleet_id, url, kinds, min_severity, created_at) ON webhook_endpoints TO {GROUP_ROLE}"
    )
    op.execute(
        f"GRANT SELECT (id, fleet_id, endpoint_id, kind, status, attempts, next_attempt_at, last_error, created_at, "
        f"delivered_at) ON webhook_outbox TO {GROUP_ROLE}"
    )
    # A delivery's payload names its clip, vehicle and driver: it expires with the clip's results.
    op.execute(f"CREATE POLICY retention_job ON webhook_outbox TO {RETENTION_ROLE} USING (true)")
    op.execute(f"GRANT SELECT, DELETE ON webhook_outbox TO {RETENTION_ROLE}")


def downgrade() -> None:
    op.execute(f"REVOKE ALL ON alembic_version FROM {WEBHOOKS_ROLE}")
    for function, (table, _, _) in TRIGGERS.items():
        op.execute(f"DROP TRIGGER {function.removeprefix('drivecoach_')} ON {table}")
        op.execute(f"DROP FUNCTION {function}()")
    op.drop_table("webhook_outbox")
    op.drop_table("webhook_endpoints")
    # The role is cluster-wide and may serve other databases of this cluster: it stays, with nothing granted here.
