"""The safety-event taxonomy: the only event types the model may report, each tied to a camera view."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class View(StrEnum):
    ROAD = "road"
    DRIVER = "driver"


class EventType(StrEnum):
    FOLLOWING_DISTANCE = "following_distance"
    FORWARD_COLLISION_RISK = "forward_collision_risk"
    HARSH_BRAKING = "harsh_braking"
    HARSH_ACCELERATION = "harsh_acceleration"
    HARSH_TURN = "harsh_turn"
    LANE_DEPARTURE = "lane_departure"
    ROLLING_STOP = "rolling_stop"
    SPEEDING = "speeding"
    PHONE_USE = "phone_use"
    DISTRACTION = "distraction"
    DROWSINESS = "drowsiness"
    NO_SEATBELT = "no_seatbelt"
    EATING_DRINKING = "eating_drinking"
    SMOKING = "smoking"
    CAMERA_OBSTRUCTED = "camera_obstructed"


@dataclass(frozen=True)
class EventDefinition:
    type: EventType
    view: View
    severity: int  # 1 (minor) .. 3 (critical): orders the review queue
    definition: str
    coaching: str  # how a safety coach says the fix, used for reference instructions


TAXONOMY: dict[EventType, EventDefinition] = {
    d.type: d
    for d in (
        EventDefinition(
            EventType.FOLLOWING_DISTANCE,
            View.ROAD,
            2,
            "The vehicle ahead is closer than a two-second gap for several seconds.",
            "Drop back to at least a three-second gap behind the vehicle ahead.",
        ),
        EventDefinition(
            EventType.FORWARD_COLLISION_RISK,
            View.ROAD,
            3,
            "The gap to the vehicle ahead closes quickly enough that a collision is imminent.",
            "Watch the traffic ahead and brake early when the vehicle in front slows down.",
        ),
        EventDefinition(
            EventType.HARSH_BRAKING,
            View.ROAD,
            2,
            "Deceleration well beyond normal driving, usually a late reaction.",
            "Look further ahead so you can slow down smoothly instead of braking hard.",
        ),
        EventDefinition(
            EventType.HARSH_ACCELERATION,
            View.ROAD,
            1,
            "Acceleration well beyond normal driving.",
            "Accelerate gently and build speed gradually.",
        ),
        EventDefinition(
            EventType.HARSH_TURN,
            View.ROAD,
            2,
            "Cornering at a speed that produces high lateral acceleration.",
            "Slow down before the turn and take the corner at a steady, lower speed.",
        ),
        EventDefinition(
            EventType.LANE_DEPARTURE,
            View.ROAD,
            2,
            "The vehicle drifts across a lane line without signalling.",
            "Keep the vehicle centred in your lane and signal before any lane change.",
        ),
        EventDefinition(
            EventType.ROLLING_STOP,
            View.ROAD,
            3,
            "The vehicle passes a stop sign without coming to a full stop.",
            "Come to a complete stop at every stop sign before moving on.",
        ),
        EventDefinition(
            EventType.SPEEDING,
            View.ROAD,
            2,
            "Driving above the posted or safe speed for the road.",
            "Keep to the speed limit and slow down for the conditions.",
        ),
        EventDefinition(
            EventType.PHONE_USE,
            View.DRIVER,
            3,
            "The driver holds or talks on a handheld phone while driving.",
            "Put the phone away while driving; pull over safely if you must take a call.",
        ),
        EventDefinition(
            EventType.DISTRACTION,
            View.DRIVER,
            2,
            "The driver's eyes or head are turned away from the road for more than two seconds.",
            "Keep your eyes on the road and glance away only briefly.",
        ),
        EventDefinition(
            EventType.DROWSINESS,
            View.DRIVER,
            3,
            "The driver's eyes stay closed or the head nods, signs of fatigue.",
            "You look tired: stop at the next safe place and rest before driving on.",
        ),
        EventDefinition(
            EventType.NO_SEATBELT,
            View.DRIVER,
            2,
            "The driver is not wearing a seatbelt.",
            "Fasten your seatbelt before you start driving.",
        ),
        EventDefinition(
            EventType.EATING_DRINKING,
            View.DRIVER,
            1,
            "The driver eats or drinks while driving.",
            "Eat and drink during breaks, not while the vehicle is moving.",
        ),
        EventDefinition(
            EventType.SMOKING,
            View.DRIVER,
            1,
            "The driver smokes while driving.",
            "Avoid smoking while driving; keep both hands free for the wheel.",
        ),
        EventDefinition(
            EventType.CAMERA_OBSTRUCTED,
            View.DRIVER,
            2,
            "A camera is covered or blacked out so the scene cannot be seen.",
            "Keep the cameras clear and uncovered at all times.",
        ),
    )
}

GOOD_DRIVING_INSTRUCTION = (
    "Good driving. Keep your eyes on the road and keep a safe gap to the vehicle ahead."
)


def view_of(event_type: EventType) -> View:
    return TAXONOMY[event_type].view


def reference_instruction(event_types: list[EventType]) -> str:
    """The coach's instruction for a set of events: most severe first, one sentence each, no repeats."""
    unique = sorted(set(event_types), key=lambda t: (-TAXONOMY[t].severity, list(EventType).index(t)))
    if not unique:
        return GOOD_DRIVING_INSTRUCTION
    return " ".join(TAXONOMY[t].coaching for t in unique)
