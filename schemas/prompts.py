"""The versioned two-turn chain-of-thought: turn 1 names the events, turn 2 gives the instruction.

Prompt versions (`PROMPT_VERSIONS`), each a fixed text, so answers of one version stay comparable:
- `cot-v1`: the video alone. Its text never changes (a test pins it byte for byte).
- `cot-v2` (the production default, `PROMPT_VERSION`): turn 1 adds the clip's telemetry as one line of text,
  `schemas.motion_summary.summarize` (speed profile, peak braking, acceleration and lateral g with their times, peak
  yaw rate, speed against the posted limit; "Vehicle motion: no telemetry." without any), between the sentence
  on the video and the question. Turn 2 and the system prompt are those of `cot-v1`.

`Prompt` is a clip's prompt (its version and, for `cot-v2`, its motion text); `Prompt.for_clip(telemetry, version)`
makes one, and `conversation(..., prompt=...)` renders it: the one rendering every engine (transformers, vLLM in
process, the OpenAI-compatible server), the training export (LLaMA-Factory's view too) and fine-tuning use.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, ValidationError

from schemas.messages import DetectedEvent, TelemetrySample
from schemas.motion_summary import NO_TELEMETRY, summarize
from schemas.taxonomy import TAXONOMY, EventType, View

VIDEO_ONLY: Final = "cot-v1"
WITH_MOTION: Final = "cot-v2"
PROMPT_VERSIONS: Final = (VIDEO_ONLY, WITH_MOTION)
# The production default: what the worker asks, the export renders and fine-tuning trains, unless told otherwise.
PROMPT_VERSION: Final = WITH_MOTION

SYSTEM_PROMPT = "You are a fleet safety coach reviewing dashcam video."

_VIDEO_SENTENCE = "The video stacks the road-facing camera (top) over the driver-facing camera (bottom). "
_QUESTION = (
    "Which safety events happened? Answer with JSON: "
    '{"events": [{"type": ..., "view": "road" or "driver", "start": seconds, "end": seconds}], '
    '"description": ...}. Event types: ' + ", ".join(t.value for t in EventType) + "."
)
TURN1_QUESTION = _VIDEO_SENTENCE + _QUESTION  # cot-v1's turn 1, unchanged

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


def answer_types(turn1: str) -> set[EventType] | None:
    """The event types a turn-1 answer names; None when it is not a valid answer (what scoring counts as naming
    nothing)."""
    try:
        return {e.type for e in parse_turn1(turn1).events}
    except InvalidAnswer:
        return None


def turn1_question(motion: str) -> str:
    """cot-v2's turn 1: the video sentence, the clip's motion summary, then cot-v1's question."""
    return f"{_VIDEO_SENTENCE}{motion} {_QUESTION}"


@dataclass(frozen=True)
class Prompt:
    """How one clip is asked: the prompt version, and for `cot-v2` the clip's motion summary (`summarize`)."""

    version: str = PROMPT_VERSION
    motion: str | None = None  # cot-v2: None reads as NO_TELEMETRY; cot-v1 has none

    def __post_init__(self) -> None:
        if self.version not in PROMPT_VERSIONS:
            raise ValueError(f"unknown prompt version {self.version!r} (one of {', '.join(PROMPT_VERSIONS)})")
        if self.version == VIDEO_ONLY and self.motion is not None:
            raise ValueError(f"{VIDEO_ONLY} shows the video alone: it takes no motion text")

    @classmethod
    def for_clip(cls, telemetry: Sequence[TelemetrySample] = (), version: str = PROMPT_VERSION) -> Prompt:
        """The prompt of a clip with this telemetry (t from the clip start; empty: none) in `version`."""
        return cls(version, None if version == VIDEO_ONLY else summarize(telemetry))

    @property
    def turn1(self) -> str:
        """Turn 1's question as this version words it."""
        if self.version == VIDEO_ONLY:
            return TURN1_QUESTION
        return turn1_question(self.motion if self.motion is not None else NO_TELEMETRY)


def conversation(
    turn1_answer: str | None = None, turn2_answer: str | None = None, *, prompt: Prompt
) -> list[dict[str, Any]]:
    """HF chat messages for the two turns in `prompt`'s version; the video is a placeholder the processor fills in.
    The one rendering of the prompts: other formats (OpenAI's, LLaMA-Factory's) are converted from it."""
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": [{"type": "text", "text": SYSTEM_PROMPT}]},
        {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": prompt.turn1}]},
    ]
    if turn1_answer is None:
        return messages
    messages.append({"role": "assistant", "content": [{"type": "text", "text": turn1_answer}]})
    messages.append({"role": "user", "content": [{"type": "text", "text": TURN2_QUESTION}]})
    if turn2_answer is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": turn2_answer}]})
    return messages


def text_content(content: list[dict[str, Any]], video: str) -> str:
    """A message's content as one string, the video as `video` (a format whose messages are plain strings)."""
    return "".join(video if item["type"] == "video" else item["text"] for item in content)


__all__ = [
    "PROMPT_VERSION",
    "PROMPT_VERSIONS",
    "TURN1_JSON_SEPARATORS",
    "answer_types",
    "VIDEO_ONLY",
    "WITH_MOTION",
    "InvalidAnswer",
    "Prompt",
    "Turn1Answer",
    "View",
    "conversation",
    "describe",
    "format_turn1",
    "parse_turn1",
    "text_content",
    "turn1_json_schema",
    "turn1_question",
]
