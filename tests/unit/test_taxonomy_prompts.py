"""The taxonomy is complete and consistent; CoT formatting and parsing round-trip and reject what they must."""

import json

import pytest

from schemas.messages import DetectedEvent, SegmentMessage
from schemas.prompts import InvalidAnswer, conversation, format_turn1, parse_turn1, turn1_json_schema
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
    msgs = conversation("T1", "T2")
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user", "assistant"]
    assert msgs[1]["content"][0] == {"type": "video"}
    assert msgs[2]["content"][0]["text"] == "T1" and msgs[4]["content"][0]["text"] == "T2"
    assert len(conversation()) == 2


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
