"""The model registry in Postgres (`model_versions`): which version is in production, and promotions.

The worker serves the production version and polls for a change between batches; training (issue 6) and
`drivecoach model promote|rollback` move the stage.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from schemas.db import ModelVersion

SessionFactory = Callable[[], Session]


def production(session_factory: SessionFactory) -> ModelVersion | None:
    """The version marked production (the most recently promoted, should two ever be)."""
    with session_factory() as session:
        return session.scalars(
            select(ModelVersion)
            .where(ModelVersion.stage == "production")
            .order_by(ModelVersion.promoted_at.desc().nulls_last())
            .limit(1)
        ).first()


def register(
    session_factory: SessionFactory,
    *,
    version: str,
    path: str,
    demo: bool,
    metrics: dict[str, Any] | None = None,
) -> None:
    """Record a servable model as a candidate; an existing row (and its stage) is kept."""
    with session_factory() as session, session.begin():
        session.execute(
            insert(ModelVersion)
            .values(version=version, path=path, demo=demo, metrics=metrics or {}, stage="candidate")
            .on_conflict_do_nothing()
        )


def reject(session_factory: SessionFactory, version: str, reason: str) -> None:
    """Mark a candidate rejected (it stays registered, with the reason, for the record)."""
    with session_factory() as session, session.begin():
        row = session.get(ModelVersion, version, with_for_update=True)
        if row is None:
            raise KeyError(f"unknown model version {version!r}")
        row.stage = "rejected"
        row.metrics = {**row.metrics, "rejected_because": reason}


def promote(session_factory: SessionFactory, version: str) -> None:
    """Make `version` the production model; the previous one is retired (kept for rollback)."""
    with session_factory() as session, session.begin():
        if session.get(ModelVersion, version, with_for_update=True) is None:
            raise KeyError(f"unknown model version {version!r}")
        session.execute(
            update(ModelVersion)
            .where(ModelVersion.stage == "production", ModelVersion.version != version)
            .values(stage="retired")
        )
        session.execute(
            update(ModelVersion)
            .where(ModelVersion.version == version)
            .values(stage="production", promoted_at=datetime.now(UTC))
        )


def serve_or_adopt(session_factory: SessionFactory, *, version: str, path: str, demo: bool) -> ModelVersion:
    """What a starting worker serves: the production version, or the configured model when none is (first start)."""
    register(session_factory, version=version, path=path, demo=demo)
    current = production(session_factory)
    if current is None:
        promote(session_factory, version)
        current = production(session_factory)
    assert current is not None
    return current


def deploy(session_factory: SessionFactory, *, version: str, path: str, demo: bool) -> None:
    """Register and promote in one step: what an operator (or the demo) does to put a model into service."""
    register(session_factory, version=version, path=path, demo=demo)
    promote(session_factory, version)


def rollback(session_factory: SessionFactory) -> str:
    """Put the previous production version (the most recently retired) back into production; returns it."""
    with session_factory() as session:
        previous = session.scalars(
            select(ModelVersion.version)
            .where(ModelVersion.stage == "retired")
            .order_by(ModelVersion.promoted_at.desc().nulls_last())
            .limit(1)
        ).first()
    if previous is None:
        raise LookupError("no retired version to roll back to")
    promote(session_factory, previous)
    return previous


def evaluation_summary(metrics: dict[str, Any]) -> str:
    """How a retrained candidate was judged, in one line: the metric on the held-out vehicles, production's figure
    against the candidate's, in how many paired resamples of those clips the candidate won, and the bar a rejected
    one missed. Empty for a model no run evaluated."""
    metric = metrics.get("metric")
    base, candidate = metrics.get("base", {}).get(metric), metrics.get("candidate", {}).get(metric)
    if not isinstance(base, int | float) or not isinstance(candidate, int | float):
        return ""
    line = f"{metric} {base:.3f} -> {candidate:.3f}"
    confidence = metrics.get("confidence")
    if isinstance(confidence, int | float):
        line += f", better in {confidence:.0%} of resamples"
    if "rejected_because" not in metrics:
        return line
    bar = base + float(metrics.get("margin") or 0)
    if candidate <= bar:
        return f"{line}, not above {bar:.3f}: rejected"
    return f"{line} (< {float(metrics.get('min_confidence') or 0):.0%}): rejected"


def versions(session_factory: SessionFactory) -> list[ModelVersion]:
    with session_factory() as session:
        return list(session.scalars(select(ModelVersion).order_by(ModelVersion.created_at.desc())))
