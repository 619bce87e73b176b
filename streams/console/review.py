"""Review actions of a safety manager, and what each one writes.

- accept: the answer is right. A `reviews` row (verdict accepted, a training label); its events need coaching.
- correct: the events or the instruction were wrong. A `reviews` row (verdict corrected) with the corrected turn 1
  and/or instruction (the training labels); the clip's event rows and instruction become the corrected ones, so
  reports count what the manager saw. The model's own answer stays in `inferences.raw_turn1/raw_turn2`.
- dismiss: nothing to coach (a false alarm). A `reviews` row (verdict dismissed, not a label); events dismissed.
- coached: the driver was coached. Only the events' coaching status changes: a review row would become the
  clip's latest review and hide its label from the training export.

Every write runs on a fleet connection (`streams.infra.tenancy`), so row-level security checks it too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal
from uuid import UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import delete, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Connection

from schemas.db import Event, Inference, Instruction, Review
from schemas.messages import DetectedEvent
from schemas.prompts import format_turn1
from schemas.taxonomy import TAXONOMY, EventType
from streams.errors import DrivecoachError

Action = Literal["accept", "correct", "dismiss", "coached"]
VERDICTS: dict[str, str] = {"accept": "accepted", "correct": "corrected", "dismiss": "dismissed"}


class ReviewError(DrivecoachError):
    """A review that cannot be applied (unknown clip, nothing to correct, an event outside the clip, ...)."""


def _storable(text: str) -> str:
    """Text Postgres can store: no NUL character, no lone UTF-16 surrogate (JSON's "\\ud800")."""
    if "\0" in text:
        raise ValueError("the text holds a NUL character")
    if any("\ud800" <= c <= "\udfff" for c in text):
        raise ValueError("the text is not valid Unicode (a lone surrogate)")
    return text


StorableText = Annotated[str, AfterValidator(_storable)]


class EventIn(BaseModel):
    # Finite numbers only: NaN, Infinity and 1e400 (which JSON parsing turns into Infinity) are refused.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    type: EventType
    start: float = Field(ge=0, le=86_400)
    end: float = Field(ge=0, le=86_400)


class ReviewIn(BaseModel):
    """A review as the JSON API takes it (the HTML form is turned into the same)."""

    model_config = ConfigDict(extra="forbid")

    action: Action
    events: list[EventIn] | None = Field(
        None, max_length=64, description="correct: the right events (all of them)"
    )
    instruction: StorableText | None = Field(
        None, max_length=2000, description="correct: the right instruction"
    )


@dataclass(frozen=True)
class ReviewOutcome:
    answer_id: UUID  # public ids (migration 0014): the keys come from sequences every fleet shares
    action: Action
    review_id: UUID | None
    events: int


def corrected_events(items: list[EventIn], duration: float) -> list[DetectedEvent]:
    """The taxonomy fixes each type's view; times must lie inside the clip and not run backwards."""
    events = []
    for item in items:
        if item.end < item.start:
            raise ReviewError(
                f"{item.type.value}: the end ({item.end:g} s) is before the start ({item.start:g} s)"
            )
        if item.end > duration + 0.5:
            raise ReviewError(
                f"{item.type.value}: the end ({item.end:g} s) is after the clip ends ({duration:.0f} s)"
            )
        try:
            events.append(
                DetectedEvent(type=item.type, view=TAXONOMY[item.type].view, start=item.start, end=item.end)
            )
        except ValidationError as err:
            raise ReviewError(str(err.errors()[0]["msg"])) from err
    return events


def form_events(types: list[str], starts: list[str], ends: list[str]) -> list[EventIn]:
    """The clip page's event rows: a row whose type is empty is removed; a bad row is a ReviewError."""
    items = []
    for i, kind in enumerate(types):
        if not kind:
            continue
        try:
            event_type = EventType(kind)
        except ValueError as err:
            raise ReviewError(f"event row {i + 1}: there is no event type {kind!r}") from err
        try:
            items.append(EventIn(type=event_type, start=float(starts[i]), end=float(ends[i])))
        except (ValueError, IndexError, ValidationError) as err:
            raise ReviewError(
                f"event row {i + 1} ({kind}): give a start and an end in seconds (0 to 86400)"
            ) from err
    return items


def validation_sentence(error: ValidationError) -> str:
    """The first problem of a validation error as a sentence for a page ("events: List should have at most 64
    items after validation, not 65")."""
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    message = str(first["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def review_from_form(
    action: Action, instruction: str, types: list[str], starts: list[str], ends: list[str]
) -> ReviewIn:
    """The clip page's review form as a ReviewIn; a ReviewError (a sentence for the page) when it is not one."""
    try:
        return ReviewIn(
            action=action,
            instruction=instruction or None,
            events=form_events(types, starts, ends) if action == "correct" else None,
        )
    except ValidationError as err:
        raise ReviewError(validation_sentence(err)) from err


def apply_review(
    conn: Connection,
    *,
    fleet_id: str,
    reviewer: str,
    inference_id: int,
    clip_duration: float,
    review: ReviewIn,
) -> ReviewOutcome:
    if review.action == "coached":
        moved = conn.execute(
            update(Event)
            .where(Event.inference_id == inference_id, Event.coaching_status == "needs_coaching")
            .values(coaching_status="coached")
        ).rowcount
        if not moved:
            raise ReviewError("no event of this clip is waiting for coaching (accept or correct it first)")
        return ReviewOutcome(_public_id(conn, inference_id), review.action, None, moved)
    corrected_turn1 = corrected_instruction = None
    if review.action == "correct":
        if review.events is None and not (review.instruction or "").strip():
            raise ReviewError("a correction needs the right events or the right instruction")
        if review.events is not None:
            events = corrected_events(review.events, clip_duration)
            corrected_turn1 = format_turn1(events)
            conn.execute(delete(Event).where(Event.inference_id == inference_id))
            if events:
                conn.execute(
                    insert(Event),
                    [
                        {
                            "fleet_id": fleet_id,
                            "inference_id": inference_id,
                            "type": e.type.value,
                            "view": e.view.value,
                            "start_s": e.start,
                            "end_s": e.end,
                            "coaching_status": "needs_coaching",
                        }
                        for e in events
                    ],
                )
        if review.instruction and review.instruction.strip():
            corrected_instruction = review.instruction.strip()
            stmt = pg_insert(Instruction).values(
                inference_id=inference_id, fleet_id=fleet_id, text=corrected_instruction
            )
            conn.execute(
                stmt.on_conflict_do_update(index_elements=["inference_id"], set_={"text": stmt.excluded.text})
            )
    status = {"accept": "needs_coaching", "correct": "needs_coaching", "dismiss": "dismissed"}[review.action]
    conn.execute(
        update(Event)
        .where(Event.inference_id == inference_id, Event.coaching_status == "needs_review")
        .values(coaching_status=status)
    )
    review_id = conn.execute(
        insert(Review)
        .values(
            fleet_id=fleet_id,
            inference_id=inference_id,
            reviewer=reviewer,
            verdict=VERDICTS[review.action],
            corrected_turn1=corrected_turn1,
            corrected_instruction=corrected_instruction,
        )
        .returning(Review.public_id)
    ).scalar_one()
    count = conn.execute(select(Event.id).where(Event.inference_id == inference_id)).all()
    return ReviewOutcome(_public_id(conn, inference_id), review.action, review_id, len(count))


def _public_id(conn: Connection, inference_id: int) -> UUID:
    return conn.execute(select(Inference.public_id).where(Inference.id == inference_id)).scalar_one()


__all__ = [
    "Action",
    "EventIn",
    "ReviewError",
    "ReviewIn",
    "ReviewOutcome",
    "StorableText",
    "apply_review",
    "corrected_events",
    "form_events",
    "review_from_form",
    "validation_sentence",
]
