"""The console's JSON API (`/api/v1`, OpenAPI at /api/openapi.json for signed-in managers): the same reads and
reviews as the pages, for the fleets' other systems. Writes carry the session's CSRF token in the `X-CSRF-Token`
header."""

# No `from __future__ import annotations`: FastAPI resolves the routes' Annotated dependencies at import.
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import JSONResponse

from schemas.taxonomy import EventType
from streams.console.deps import Api, ClipId, CsrfChecked, Day, State, review_clip
from streams.console.footage import plan
from streams.console.models import (
    ClipOut,
    CoachingItemOut,
    ErrorOut,
    FootageOut,
    MeOut,
    QueueItemOut,
    RateRowOut,
    ReviewResultOut,
    RuleComparisonOut,
    ScoreRowOut,
    TrendRowOut,
    clip_out,
    footage_out,
)
from streams.console.queries import clip_detail, clip_footage, coaching_list
from streams.console.reports import (
    Filters,
    event_rates,
    review_queue,
    safety_scores,
    score_rows,
    score_settings,
    trend,
)
from streams.console.review import ReviewError, ReviewIn
from streams.console.rule_report import compare_rules
from streams.infra.tenancy import fleet_connection

router = APIRouter()

# 422 stays FastAPI's own (request validation); a well-formed review that does not fit the clip's state (times
# past its end, nothing waiting for coaching) is a 409 with a sentence.
err: dict[int | str, dict[str, Any]] = {401: {"model": ErrorOut}}


@router.get("/api/openapi.json", include_in_schema=False)
def api_openapi(request: Request, _: Api) -> JSONResponse:
    """This API's OpenAPI document, for a signed-in manager's tools (not for strangers: it maps the API)."""
    return JSONResponse(request.app.openapi())


@router.get("/api/v1/me", response_model=MeOut, tags=["session"], responses=err)
def api_me(who: Api) -> MeOut:
    return MeOut(username=who.username, display_name=who.display_name, fleet_id=who.fleet_id)


@router.get("/api/v1/queue", response_model=list[QueueItemOut], tags=["review"], responses=err)
def api_queue(ctx: State, who: Api, limit: Annotated[int, Query(ge=1, le=500)] = 50) -> list[dict[str, Any]]:
    """Unreviewed answers of the manager's fleet, most severe and most recent first."""
    with fleet_connection(ctx.engine, who.fleet_id) as conn:
        return review_queue(conn, Filters(fleet=who.fleet_id), limit=limit)


@router.get("/api/v1/coaching", response_model=list[CoachingItemOut], tags=["review"], responses=err)
def api_coaching(
    ctx: State, who: Api, limit: Annotated[int, Query(ge=1, le=500)] = 200
) -> list[dict[str, Any]]:
    """Reviewed clips whose events wait for the driver to be coached, most severe and oldest first."""
    with fleet_connection(ctx.engine, who.fleet_id) as conn:
        return coaching_list(conn, who.fleet_id, limit=limit)


@router.get(
    "/api/v1/clips/{clip_id}",
    response_model=ClipOut,
    tags=["clips"],
    responses={**err, 404: {"model": ErrorOut}},
)
def api_clip(ctx: State, who: Api, clip_id: ClipId) -> ClipOut:
    with fleet_connection(ctx.engine, who.fleet_id) as conn:
        detail = clip_detail(conn, clip_id)
    if detail is None:
        raise HTTPException(404, "no such clip")
    return clip_out(detail)


@router.get(
    "/api/v1/clips/{clip_id}/footage",
    response_model=FootageOut,
    tags=["clips"],
    responses={
        **err,
        403: {"model": ErrorOut, "description": "unblurred without the view_unblurred permission"},
        404: {"model": ErrorOut},
    },
)
def api_footage(
    ctx: State,
    who: Api,
    clip_id: ClipId,
    unblurred: Annotated[
        bool, Query(description="URLs of the driver camera's unblurred video (needs view_unblurred; audited)")
    ] = False,
) -> FootageOut:
    """What the clip page plays: each camera's uploads laid on the clip's timeline, trimmed to its window (`at`:
    where a piece starts on the clip's timeline; `offset`: where in its video; `length`: for how long), each with
    the URL of its video (range requests; the driver camera's with faces blurred unless `unblurred`)."""
    if unblurred and not who.view_unblurred:
        raise HTTPException(403, "your role may not see faces unblurred (the view_unblurred permission)")
    with fleet_connection(ctx.engine, who.fleet_id) as conn:
        found = clip_footage(conn, clip_id)
    if found is None:
        raise HTTPException(404, "no such clip")
    start, end, stretches = found
    return footage_out(clip_id, start, end, plan(start, end, stretches), unblurred=unblurred)


@router.post(
    "/api/v1/clips/{clip_id}/review",
    response_model=ReviewResultOut,
    tags=["review"],
    responses={
        **err,
        400: {"model": ErrorOut, "description": "the body is not JSON"},
        403: {"model": ErrorOut},
        404: {"model": ErrorOut},
        409: {"model": ErrorOut},
    },
)
def api_review(ctx: State, who: CsrfChecked, clip_id: ClipId, review: ReviewIn) -> ReviewResultOut:
    """Accept, correct (events and/or instruction), dismiss, or mark coached; writes `reviews`."""
    try:
        return review_clip(ctx.engine, who, clip_id, review)
    except ReviewError as error:
        raise HTTPException(409, str(error)) from error


@router.get("/api/v1/reports/events", response_model=list[RateRowOut], tags=["reports"], responses=err)
def api_events(
    ctx: State,
    who: Api,
    since: Day | None = None,
    until: Day | None = None,
    group: Literal["fleet", "vehicle", "driver"] = "driver",
    period: Literal["day", "week"] = "week",
    event_type: Annotated[EventType | None, Query(alias="type")] = None,
) -> list[dict[str, Any]]:
    """Events per group, period and type with rates per driving hour (and per 100 km where known)."""
    filters = Filters(
        fleet=who.fleet_id, event_type=event_type.value if event_type else None, since=since, until=until
    )  # [since, until): an empty or backward window has no rows
    with fleet_connection(ctx.engine, who.fleet_id) as conn:
        return event_rates(conn, filters, group=group, period=period)


@router.get("/api/v1/reports/scores", response_model=list[ScoreRowOut], tags=["reports"], responses=err)
def api_scores(ctx: State, who: Api, since: Day, until: Day) -> list[dict[str, Any]]:
    """Each driver's safety score per week overlapping [since, until), with its change against the week before,
    the events it counted (type, count x weight) and its formula (README "Driver safety score")."""
    with fleet_connection(ctx.engine, who.fleet_id) as conn:
        filters = Filters(fleet=who.fleet_id, since=since, until=until)
        return score_rows(safety_scores(conn, filters, score_settings(conn, who.fleet_id)))


@router.get("/api/v1/reports/trend", response_model=list[TrendRowOut], tags=["reports"], responses=err)
def api_trend(
    ctx: State, who: Api, since: Day, until: Day, group: Literal["fleet", "vehicle", "driver"] = "driver"
) -> list[dict[str, Any]]:
    """Events per group and type in [since, until) against the period of the same length before it."""
    with fleet_connection(ctx.engine, who.fleet_id) as conn:
        return trend(conn, Filters(fleet=who.fleet_id, since=since, until=until), group=group)


@router.get("/api/v1/reports/rules", response_model=RuleComparisonOut, tags=["reports"], responses=err)
def api_rules(ctx: State, who: Api, since: Day, until: Day) -> RuleComparisonOut:
    """Model vs telemetry rules for the clips that started in [since, until): per rule type (harsh braking,
    acceleration, turn, speeding) the clips where both found an event, only the rules, only the model, or the model
    where the telemetry could not show it; and every compared event with its outcome."""
    with fleet_connection(ctx.engine, who.fleet_id) as conn:
        found = compare_rules(conn, who.fleet_id, since, until)
    return RuleComparisonOut(
        since=found.since,
        until=found.until,
        clips=found.clips,
        with_telemetry=found.with_telemetry,
        types=found.types,  # validated into the row models
        rows=found.rows,
    )
