#!/usr/bin/env python3
"""Publish one trip's dashcam segments to drivecoach: a starting point for fleet telematics producers.

Needs only kafka-python (`pip install kafka-python`) and the standard library; copy it and adapt. The rules it
follows are in docs/producers.md, and the message's JSON Schema in schemas/json/segment-message.schema.json.

    python producer.py --bootstrap kafka-1:9092 --trip trip.json

trip.json describes what the device recorded (file paths are relative to trip.json):

    {
      "fleet_id": "fleet-a", "vehicle_id": "veh-17", "driver_id": "drv-4",
      "segments": [
        {"camera": "road", "file": "road-0001.mp4", "start_ts": 1760000001.0, "end_ts": 1760000011.0,
         "fps": 25, "width": 960, "height": 540, "codec": "h264",
         "video_uri": "s3://fleet-uploads/veh-17/road-0001.mp4",
         "upload_url": "https://fleet-uploads.s3.amazonaws.com/veh-17/road-0001.mp4?X-Amz-Signature=...",
         "telemetry": [{"t": 1760000001.0, "speed_kmh": 52.0, "lat": 52.52, "lon": 13.40}]},
        {"camera": "driver", "file": "driver-0001.mp4", "start_ts": 1760000001.2, "end_ts": 1760000011.2,
         "fps": 15, "width": 640, "height": 480, "codec": "h264"}
      ]
    }

Per segment, the video travels one of two ways:
- claim check: `video_uri` names where the file is stored. With `upload_url` (a presigned PUT URL, e.g. from
  `drivecoach blobs presign`) the file is PUT there first; without it, it must already be there.
- inline: no `video_uri`: the file goes base64-encoded in `video_b64`, if the whole message stays within
  --inline-max-bytes (the receiver's DRIVECOACH_INLINE_MAX_BYTES); a larger one is refused here, before sending.

Each message goes to telematics.road or telematics.driver (by camera), keyed by the vehicle id, in the order the
segments ended; each is sent once its upload is done and acknowledged by every in-sync replica before the next. A
failed run can simply be run again: a segment's id stays the same, and the receiver drops what it already has.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import urllib.request
from pathlib import Path
from typing import Any

from kafka import KafkaProducer

SCHEMA_VERSION = 1
TOPICS = {"road": "telematics.road", "driver": "telematics.driver"}
SEGMENT_FIELDS = ("start_ts", "end_ts", "fps", "width", "height", "codec")


def segment_id(vehicle_id: str, camera: str, start_ts: float) -> str:
    """Stable for the same recording (a retry sends the same id) and distinct for every other one of the vehicle."""
    return f"{vehicle_id}-{camera}-{round(start_ts * 1000)}"


def put_presigned(url: str, data: bytes, timeout_s: float = 120.0) -> None:
    """Upload a file to a presigned PUT URL: the bytes as the body, nothing else needed."""
    request = urllib.request.Request(
        url, data=data, method="PUT", headers={"Content-Type": "application/octet-stream"}
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        if response.status not in (200, 201, 204):
            raise RuntimeError(f"upload to {url.split('?')[0]} answered HTTP {response.status}")


def build_message(trip: dict[str, Any], seg: dict[str, Any], base: Path, inline_max_bytes: int) -> bytes:
    """One segment message as the JSON bytes to send (uploading its file first when it has an upload URL)."""
    camera = seg["camera"]
    if camera not in TOPICS:
        raise ValueError(f"camera must be road or driver, not {camera!r}")
    message: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "fleet_id": trip["fleet_id"],
        "vehicle_id": trip["vehicle_id"],
        "driver_id": seg.get("driver_id", trip.get("driver_id")),  # null when unknown: never guessed
        "camera": camera,
        "segment_id": seg.get("segment_id") or segment_id(trip["vehicle_id"], camera, float(seg["start_ts"])),
        **{name: seg[name] for name in SEGMENT_FIELDS},
        "telemetry": seg.get("telemetry", []),
    }
    if seg.get("video_uri"):
        if seg.get("upload_url"):
            put_presigned(seg["upload_url"], (base / seg["file"]).read_bytes())
        message["video_uri"] = seg["video_uri"]
    else:
        message["video_b64"] = base64.b64encode((base / seg["file"]).read_bytes()).decode("ascii")
    raw = json.dumps(message, allow_nan=False, separators=(",", ":")).encode()
    if "video_b64" in message and len(raw) > inline_max_bytes:
        raise ValueError(
            f"{seg['file']}: {len(raw)} bytes inline > {inline_max_bytes}: upload it and give video_uri instead"
        )
    return raw


def publish_trip(
    trip: dict[str, Any], base: Path, producer: KafkaProducer | None, topic_prefix: str, inline_max_bytes: int
) -> list[dict[str, Any]]:
    """Send each segment, in the order they ended, and wait for the broker's ack; None: print them instead."""
    sent = []
    for seg in sorted(trip["segments"], key=lambda s: (s["end_ts"], s["camera"])):
        raw = build_message(trip, seg, base, inline_max_bytes)
        topic = topic_prefix + TOPICS[seg["camera"]]
        if producer is None:
            print(raw.decode())
            continue
        # The key is the vehicle id: every segment of a vehicle, from both cameras, lands on the same partition
        # number, where the receiver keeps that vehicle's join state. The record timestamp is left to the client
        # (the send time): the receiver reads it as the arrival time.
        meta = producer.send(topic, key=trip["vehicle_id"].encode(), value=raw).get(timeout=60)
        sent.append({"topic": meta.topic, "partition": meta.partition, "offset": meta.offset})
        print(json.dumps(sent[-1] | {"segment_id": json.loads(raw)["segment_id"]}))
    return sent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", help="Kafka bootstrap servers, HOST:PORT[,HOST:PORT]")
    parser.add_argument("--trip", type=Path, required=True, help="the trip's JSON description (see above)")
    parser.add_argument("--topic-prefix", default="", help="the deployment's DRIVECOACH_TOPIC_PREFIX")
    parser.add_argument(
        "--inline-max-bytes", type=int, default=1_000_000, help="the receiver's DRIVECOACH_INLINE_MAX_BYTES"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the messages (JSON lines), send nothing"
    )
    args = parser.parse_args(argv)
    if not args.dry_run and not args.bootstrap:
        parser.error("--bootstrap is required unless --dry-run")
    trip = json.loads(args.trip.read_text())
    base = args.trip.resolve().parent
    if args.dry_run:
        publish_trip(trip, base, None, args.topic_prefix, args.inline_max_bytes)
        return 0
    producer = KafkaProducer(
        bootstrap_servers=args.bootstrap.split(","),
        client_id=f"dashcam-{trip['vehicle_id']}",
        acks="all",  # an upload counts as done when every in-sync replica has it
        retries=5,  # a retried send may duplicate a segment: the receiver drops duplicates by segment_id
        max_request_size=max(args.inline_max_bytes + 64 * 1024, 1_048_576),
    )
    try:
        publish_trip(trip, base, producer, args.topic_prefix, args.inline_max_bytes)
    finally:
        producer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
