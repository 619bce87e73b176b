"""Prometheus metrics of the stream processes, served over HTTP when a port is configured.

Counters are the contract operators alert on: every dead letter is counted by topic and reason, so a rise in
`corrupt_video` or `too_old` is visible without reading the dead-letter topics.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

DEAD_LETTERS = Counter("drivecoach_dead_letters", "Messages sent to a dead-letter topic", ["topic", "reason"])
SEGMENTS = Counter("drivecoach_segments", "Segments the joiner admitted, by outcome", ["outcome"])
CLIP_PLANS = Counter("drivecoach_clip_plans", "Clip plans the joiner published to the clip-plans topic")
CLIPS = Counter("drivecoach_clips_emitted", "Clips a builder published to the clips topic", ["views"])
CLIP_REVISIONS = Counter(
    "drivecoach_clip_revisions",
    "Clips published again with more segments (an upload landed "
    "in a window already emitted): normal after outages longer than the vehicle-idle time",
)
CLIP_BUILD_SECONDS = Histogram(
    "drivecoach_clip_build_seconds",
    "Wall seconds to decode, stack and store a clip",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
)
LOOP_LAG_MAX = Gauge(
    "drivecoach_event_loop_lag_max_seconds",
    "Longest delay of a periodic event-loop probe since start (heartbeats share this loop)",
)
LOOP_LAG = Histogram(
    "drivecoach_event_loop_lag_seconds",
    "Delay of each periodic event-loop probe (heartbeats share this loop): a blocked loop shows in the top buckets",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
INPUT_RECORDS = Counter(
    "drivecoach_input_records",
    "Records a stage took from its input topics (a stage's `_created` time is when it took its first)",
    ["stage"],
)
LAST_RECORD = Gauge(
    "drivecoach_last_record_seconds",
    "Unix time this process last finished input records (a joiner batch, a built clip): a stalled stage stops it",
)
REBALANCES = Counter("drivecoach_rebalances", "Partition assignments this process received")
INPUT_OFFSET_GAPS = Counter(
    "drivecoach_input_offset_gaps", "Input records the joiner was never handed (offset jumps)", ["topic"]
)


def serve(port: int) -> None:
    """Expose /metrics on `port` (0 = off) from a daemon thread, so scraping never waits on the event loop."""
    if port:
        start_http_server(port, addr="0.0.0.0")


INFERENCES = Counter(
    "drivecoach_inferences", "Clips written to Postgres by the inference worker", ["model_version", "valid"]
)
INFERENCE_DEAD_LETTERS = Counter(
    "drivecoach_inference_dead_letters", "Clips the worker sent to clips.dlq", ["reason"]
)
BATCH_SECONDS = Histogram(
    "drivecoach_inference_batch_seconds",
    "Wall seconds per engine batch (both turns)",
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120),
)
ENGINE_RESTARTS = Counter("drivecoach_engine_restarts", "Engines restarted after a failure")
