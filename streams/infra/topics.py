"""Every topic name, the dead-letter naming and record format, and the joiner's tick header, in one place."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError

from schemas.taxonomy import View
from streams.settings import Settings

log = logging.getLogger(__name__)

ROAD_TOPIC, DRIVER_TOPIC, CLIPS_TOPIC = "telematics.road", "telematics.driver", "clips"
CLIP_PLANS_TOPIC = "clip-plans"  # the joiner's decisions, built by the clip builders into `clips`
TICK_HEADER = "drivecoach-tick"  # marks the joiner's own ticks on the camera topics (no payload)


def topic_for(camera: View, settings: Settings) -> str:
    return settings.topic(ROAD_TOPIC if camera is View.ROAD else DRIVER_TOPIC)


def dlq_name(topic: str) -> str:
    return f"{topic}.dlq"


def dead_letter(topic: str, reason: str, detail: str, key: bytes | None, value: bytes | None) -> bytes:
    """A dead-letter record: why, the source topic, and the input itself (key and payload as text)."""
    return json.dumps(
        {
            "reason": reason,
            "detail": detail,
            "topic": topic,
            "key": key.decode(errors="replace") if key else None,
            "payload": value.decode(errors="replace") if value else None,
            "at": time.time(),
        }
    ).encode()


def builder_group(settings: Settings) -> str:
    return f"{settings.topic_prefix}drivecoach-builders"


def is_tick(headers: Any) -> bool:
    """Faust gives headers as a mapping or as (name, value) pairs, depending on the path."""
    pairs = headers.items() if hasattr(headers, "items") else headers or ()
    return any(name == TICK_HEADER for name, _ in pairs)


def all_topics(settings: Settings) -> list[str]:
    base = [ROAD_TOPIC, DRIVER_TOPIC, CLIP_PLANS_TOPIC, CLIPS_TOPIC]
    return [settings.topic(t) for t in base] + [dlq_name(settings.topic(t)) for t in base]


def ensure_topics(bootstrap: str, settings: Settings) -> None:
    """Same partition count for every keyed topic, so road, driver and ticks are co-partitioned by vehicle."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="drivecoach-admin")
    try:
        existing = set(admin.list_topics())
        missing = [t for t in all_topics(settings) if t not in existing]
        if missing:
            try:
                admin.create_topics([NewTopic(t, settings.partitions, 1) for t in missing])
            except TopicAlreadyExistsError:
                pass
            log.info("created topics %s", ", ".join(missing))
    finally:
        admin.close()
