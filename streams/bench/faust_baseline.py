"""The bench's baseline: the least a Faust agent can do with the joiner's input, in the joiner's Faust setup.

It reads the same camera topics and writes one table entry (a changelog record) per upload, and counts uploads in
the joiner's own `drivecoach_segments_total` metric, so `bench join` times both processes the same way. Run as
`python -m streams.bench.faust_baseline` with the joiner's DRIVECOACH_* environment.
"""

from __future__ import annotations

import faust

from streams.infra import metrics
from streams.infra.topics import DRIVER_TOPIC, ROAD_TOPIC, is_tick
from streams.joiner.app import RAW, faust_app
from streams.settings import Settings


def create_baseline_app(settings: Settings, bootstrap: str) -> faust.App:
    app = faust_app(settings, bootstrap, "drivecoach-bench-baseline")
    inputs = app.topic(settings.topic(ROAD_TOPIC), settings.topic(DRIVER_TOPIC), **RAW)
    table = app.Table(
        "baseline", default=None, partitions=settings.partitions, key_type=str, value_type=bytes
    )

    @app.agent(inputs)
    async def store(stream: faust.StreamT) -> None:
        async for event in stream.events():
            metrics.INPUT_RECORDS.labels(stage="baseline").inc()
            if not is_tick(event.headers):
                table[event.key.decode() if event.key else ""] = event.value
                metrics.SEGMENTS.labels(outcome="stored").inc()
                metrics.LAST_RECORD.set_to_current_time()

    return app


def main() -> None:
    settings = Settings()
    assert settings.kafka_bootstrap, "DRIVECOACH_KAFKA_BOOTSTRAP names the broker"
    app = create_baseline_app(settings, settings.kafka_bootstrap)
    metrics.serve(settings.metrics_port)
    faust.Worker(app, loglevel="warning").execute_from_commandline()


if __name__ == "__main__":
    main()
