"""What the database's owner sets for retention: a fleet's periods, and legal holds on clips (`drivecoach retention
settings|hold|release`). Neither the services nor the fleets' roles may write these (migration 0019)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from schemas.db import Clip, Fleet, FleetRetention, LegalHold, RetentionDeletion
from streams.retention.exceptions import RetentionError
from streams.retention.policy import Periods


@dataclass(frozen=True)
class HoldResult:
    hold_id: int
    already_deleted: list[str]  # what retention deleted of the clip before the hold: it cannot come back


def periods(session: Session, fleet_id: str) -> Periods:
    if session.scalar(select(Fleet.fleet_id).where(Fleet.fleet_id == fleet_id)) is None:
        raise RetentionError(f"there is no fleet {fleet_id!r} in this database")
    row = session.get(FleetRetention, fleet_id)
    return Periods(row.video_days, row.results_days) if row else Periods()


def set_periods(session: Session, fleet_id: str, wanted: Periods) -> None:
    periods(session, fleet_id)  # the fleet exists
    values = {"video_days": wanted.video_days, "results_days": wanted.results_days}
    upsert = insert(FleetRetention).values(fleet_id=fleet_id, **values)
    session.execute(upsert.on_conflict_do_update(index_elements=["fleet_id"], set_=values))


def place_hold(session: Session, *, fleet_id: str, clip_id: str, reason: str, held_by: str) -> HoldResult:
    """Hold the clip: retention keeps all of it until the hold is released."""
    if not reason.strip():
        raise RetentionError("give the hold's reason (a case or request number)")
    if session.scalar(select(Clip.clip_id).where(Clip.clip_id == clip_id, Clip.fleet_id == fleet_id)) is None:
        raise RetentionError(f"fleet {fleet_id!r} has no clip {clip_id!r} (or retention deleted it)")
    hold = LegalHold(clip_id=clip_id, fleet_id=fleet_id, reason=reason.strip(), held_by=held_by)
    session.add(hold)
    session.flush()
    gone = session.scalars(
        select(RetentionDeletion.kind)
        .where(RetentionDeletion.fleet_id == fleet_id, RetentionDeletion.subject == clip_id)
        .order_by(RetentionDeletion.id)
    )
    return HoldResult(hold.id, sorted(set(gone)))


def release_hold(session: Session, *, fleet_id: str, clip_id: str, released_by: str, at: datetime) -> int:
    """Release the clip's active holds; returns how many (0: none was active)."""
    released = session.execute(
        update(LegalHold)
        .where(LegalHold.fleet_id == fleet_id, LegalHold.clip_id == clip_id, LegalHold.released_at.is_(None))
        .values(released_at=at, released_by=released_by)
    )
    return int(released.rowcount)  # type: ignore[attr-defined]
