"""The versioned two-turn chain-of-thought: turn 1 names the events, turn 2 gives the instruction."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from schemas.messages import DetectedEvent
from schemas.taxonomy import TAXONOMY, EventType, View

PROMPT_VERSION = "cot-v1"

SYSTEM_PROMPT = "You are a fleet safety coach reviewing dashcam video."

TURN1_QUESTION = (
    "The video stacks the road-facing camera (top) over the driver-facing camera (bottom). "
    "Which safety events happened? Answer with JSON: "
    '{"events": [{"type": ..., "view": "road" or "driver", "start": seconds, "end": seconds}], '
    '"description": ...}. Event types: ' + ", ".join(t.value for t in EventType) + "."
)

TURN2_QUESTION = "Given these events, what should the driver do? Give one concrete instruction."

NO_EVENTS_DESCRIPTION = "Normal driving: no safety events."


class InvalidAnswer(ValueError):
    """The model's turn-1 text is not the JSON the taxonomy allows."""


class Turn1Answer(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    events: list[DetectedEvent]
    description: str


# Turn 1 is compact JSON (as `format_turn1` writes it); constrained decoding allows no other separators.
TURN1_JSON_SEPARATORS = (",", ":")


def turn1_json_schema() -> dict[str, Any]:
    """The JSON schema for structured (constrained) decoding of turn 1."""
    return Turn1Answer.model_json_schema()


def describe(events: list[DetectedEvent]) -> str:
    """The free-text description that accompanies the structured events (used for reference answers)."""
    if not events:
        return NO_EVENTS_DESCRIPTION
    parts = [f"{TAXONOMY[e.type].definition.rstrip('.')} ({round(e.start)}-{round(e.end)} s)" for e in events]
    return "; ".join(parts) + "."


def format_turn1(events: list[DetectedEvent], description: str | None = None) -> str:
    """Canonical turn-1 text: compact JSON, events in time order, times in whole seconds."""
    ordered = sorted(events, key=lambda e: (e.start, e.type.value))
    answer = {
        "events": [
            {"type": e.type.value, "view": e.view.value, "start": round(e.start), "end": round(e.end)}
            for e in ordered
        ],
        "description": description if description is not None else describe(ordered),
    }
    return json.dumps(answer, separators=(",", ":"))


def parse_turn1(text: str) -> Turn1Answer:
    """Parse and validate turn 1 against the taxonomy; every failure is an InvalidAnswer with the reason."""
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        raise InvalidAnswer("no JSON object in the answer")
    try:
        answer = Turn1Answer.model_validate_json(text[start : end + 1])
    except ValidationError as err:
        first = err.errors()[0]
        raise InvalidAnswer(f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from err
    for event in answer.events:
        if TAXONOMY[event.type].view is not event.view:
            raise InvalidAnswer(f"{event.type.value} belongs to the {TAXONOMY[event.type].view.value} view")
        if event.end < event.start:
            raise InvalidAnswer(f"{event.type.value} ends before it starts")
    return answer


def conversation(turn1_answer: str | None = None, turn2_answer: str | None = None) -> list[dict[str, Any]]:
    """HF chat messages for the two turns; the video is a placeholder the processor fills in."""
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": [{"type": "text", "text": SYSTEM_PROMPT}]},
        {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": TURN1_QUESTION}]},
    ]
    if turn1_answer is None:
        return messages
    messages.append({"role": "assistant", "content": [{"type": "text", "text": turn1_answer}]})
    messages.append({"role": "user", "content": [{"type": "text", "text": TURN2_QUESTION}]})
    if turn2_answer is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": turn2_answer}]})
    return messages


__all__ = [
    "PROMPT_VERSION",
    "TURN1_JSON_SEPARATORS",
    "InvalidAnswer",
    "Turn1Answer",
    "View",
    "conversation",
    "describe",
    "format_turn1",
    "parse_turn1",
    "turn1_json_schema",
]
