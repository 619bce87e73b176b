"""The taxonomy is complete and consistent; CoT formatting and parsing round-trip and reject what they must."""

import json

import pytest

from schemas.messages import DetectedEvent, SegmentMessage, TelemetrySample
from schemas.motion_summary import NO_TELEMETRY, summarize
from schemas.prompts import (
    PROMPT_VERSION,
    SYSTEM_PROMPT,
    TURN1_QUESTION,
    TURN2_QUESTION,
    InvalidAnswer,
    Prompt,
    conversation,
    format_turn1,
    parse_turn1,
    text_content,
    turn1_json_schema,
)
from schemas.taxonomy import GOOD_DRIVING_INSTRUCTION, TAXONOMY, EventType, View, reference_instruction

REQUIRED = {
    "following_distance",
    "forward_collision_risk",
    "harsh_braking",
    "harsh_acceleration",
    "harsh_turn",
    "lane_departure",
    "rolling_stop",
    "speeding",
    "phone_use",
    "distraction",
    "drowsiness",
    "no_seatbelt",
    "eating_drinking",
    "smoking",
    "camera_obstructed",
}


def test_taxonomy_covers_the_design_card_with_views_and_definitions():
    assert {t.value for t in EventType} == REQUIRED
    assert set(TAXONOMY) == set(EventType)
    for t, d in TAXONOMY.items():
        assert d.type is t and d.definition and d.coaching and 1 <= d.severity <= 3
    assert TAXONOMY[EventType.PHONE_USE].view is View.DRIVER
    assert TAXONOMY[EventType.ROLLING_STOP].view is View.ROAD


def test_reference_instruction_orders_by_severity_and_deduplicates():
    text = reference_instruction([EventType.EATING_DRINKING, EventType.PHONE_USE, EventType.PHONE_USE])
    assert text == f"{TAXONOMY[EventType.PHONE_USE].coaching} {TAXONOMY[EventType.EATING_DRINKING].coaching}"
    assert reference_instruction([]) == GOOD_DRIVING_INSTRUCTION


def test_turn1_round_trip():
    events = [
        DetectedEvent(type=EventType.DROWSINESS, view=View.DRIVER, start=8.4, end=15.0),
        DetectedEvent(type=EventType.LANE_DEPARTURE, view=View.ROAD, start=2.0, end=6.6),
    ]
    text = format_turn1(events)
    parsed = parse_turn1(text)
    assert [e.type for e in parsed.events] == [EventType.LANE_DEPARTURE, EventType.DROWSINESS]
    assert parsed.events[0].end == 7.0
    assert "(2-7 s)" in parsed.description


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("no json here", "no JSON object"),
        (
            '{"events": [{"type": "juggling", "view": "driver", "start": 1, "end": 2}], "description": "x"}',
            "type",
        ),
        (
            '{"events": [{"type": "phone_use", "view": "road", "start": 1, "end": 2}], "description": "x"}',
            "driver view",
        ),
        (
            '{"events": [{"type": "phone_use", "view": "driver", "start": 5, "end": 2}], "description": "x"}',
            "ends before",
        ),
        ('{"events": [], "description": "x", "extra": 1}', "extra"),
        ('{"events": [', "no JSON object"),
    ],
)
def test_parse_turn1_rejects_with_a_reason(text, reason):
    with pytest.raises(InvalidAnswer, match=reason):
        parse_turn1(text)


def test_parse_turn1_tolerates_text_around_the_json():
    parsed = parse_turn1('Answer: {"events": [], "description": "Normal driving."} done')
    assert parsed.events == [] and parsed.description == "Normal driving."


def test_json_schema_constrains_types_to_the_taxonomy():
    schema = json.dumps(turn1_json_schema())
    for t in EventType:
        assert f'"{t.value}"' in schema


def test_conversation_has_two_turns_with_the_video_first():
    for prompt in (Prompt("cot-v1"), Prompt.for_clip(())):
        msgs = conversation("T1", "T2", prompt=prompt)
        assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user", "assistant"]
        assert msgs[1]["content"][0] == {"type": "video"}
        assert msgs[2]["content"][0]["text"] == "T1" and msgs[4]["content"][0]["text"] == "T2"
        assert len(conversation(prompt=prompt)) == 2


# cot-v1's texts as they were when answers were first stored under it: they must never change, byte for byte.
COT_V1_SYSTEM = "You are a fleet safety coach reviewing dashcam video."
COT_V1_TURN1 = (
    "The video stacks the road-facing camera (top) over the driver-facing camera (bottom). Which safety events "
    'happened? Answer with JSON: {"events": [{"type": ..., "view": "road" or "driver", "start": seconds, "end": '
    'seconds}], "description": ...}. Event types: following_distance, forward_collision_risk, harsh_braking, '
    "harsh_acceleration, harsh_turn, lane_departure, rolling_stop, speeding, phone_use, distraction, drowsiness, "
    "no_seatbelt, eating_drinking, smoking, camera_obstructed."
)
COT_V1_TURN2 = "Given these events, what should the driver do? Give one concrete instruction."


def test_cot_v1_is_unchanged_video_only():
    assert (SYSTEM_PROMPT, TURN1_QUESTION, TURN2_QUESTION) == (COT_V1_SYSTEM, COT_V1_TURN1, COT_V1_TURN2)
    telemetry = [TelemetrySample(t=float(t), speed_kmh=50.0 + t) for t in range(5)]
    v1 = Prompt.for_clip(telemetry, "cot-v1")
    assert v1 == Prompt("cot-v1") and v1.motion is None  # the video alone, whatever the clip carries
    msgs = conversation("T1", "T2", prompt=v1)
    assert [text_content(m["content"], video="<video>") for m in msgs] == [
        COT_V1_SYSTEM,
        "<video>" + COT_V1_TURN1,
        "T1",
        COT_V1_TURN2,
        "T2",
    ]
    with pytest.raises(ValueError):
        Prompt("cot-v1", motion="Vehicle motion: no telemetry.")


def test_cot_v2_puts_the_motion_summary_in_turn_1_and_is_the_default():
    assert PROMPT_VERSION == "cot-v2" and Prompt().version == "cot-v2"
    telemetry = [
        TelemetrySample(t=float(t), speed_kmh=50.0, yaw_rate_dps=30.0 if t == 2 else 0.0) for t in range(5)
    ]
    prompt = Prompt.for_clip(telemetry)
    assert prompt.motion == summarize(telemetry) and "lateral 0.74 g at 2 s" in prompt.motion
    turn1 = conversation(prompt=prompt)[1]["content"][1]["text"]
    video_sentence, question = COT_V1_TURN1.split(" Which safety events", 1)
    assert turn1 == f"{video_sentence} {prompt.motion} Which safety events{question}"
    # Turn 2 and the system prompt stay cot-v1's.
    msgs = conversation("T1", prompt=prompt)
    assert msgs[0]["content"][0]["text"] == COT_V1_SYSTEM and msgs[3]["content"][0]["text"] == COT_V1_TURN2
    # No telemetry: the fixed text, whether the clip carried none or the prompt was made without it.
    assert Prompt.for_clip([]).turn1 == Prompt().turn1 and NO_TELEMETRY in Prompt().turn1
    with pytest.raises(ValueError):
        Prompt("cot-v3")


def test_segment_message_rejects_end_before_start_and_needs_one_video():
    base = {
        "fleet_id": "f",
        "vehicle_id": "v",
        "camera": "road",
        "segment_id": "s",
        "fps": 10,
        "width": 4,
        "height": 4,
        "codec": "h264",
    }
    with pytest.raises(ValueError, match="end_ts"):
        SegmentMessage(**base, start_ts=10, end_ts=5, video_uri="file:///x")
    with pytest.raises(ValueError, match="exactly one"):
        SegmentMessage(**base, start_ts=0, end_ts=5)
    assert SegmentMessage(**base, start_ts=0, end_ts=5, video_b64="AAAA").duration == 5
