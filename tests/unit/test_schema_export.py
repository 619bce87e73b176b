"""The checked-in JSON Schema files are what the message models generate, and they agree with what the receiver
accepts: a message valid under segment-message.schema.json passes parse_segment's checks, and the refusals a
schema can express are refused by both (docs/producers.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from typer.testing import CliRunner

from schemas.messages import ClipMessage, SegmentMessage
from streams.cli import app
from streams.cli.schema import documents, stale
from streams.errors import BadSegment
from streams.joiner.segments import parse_segment

CHECKED_IN = Path(__file__).resolve().parents[2] / "schemas" / "json"
NOW = 1_760_000_000.0


def test_checked_in_schemas_match_the_models() -> None:
    assert set(documents()) == {"segment-message.schema.json", "clip-message.schema.json"}
    assert stale(CHECKED_IN) == [], (
        "schemas/json is out of date with schemas/messages.py: run `drivecoach schema export` and commit it"
    )


def test_the_export_command_writes_and_checks(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["schema", "export", "--out", str(tmp_path), "--check"]).exit_code == 1
    result = runner.invoke(app, ["schema", "export", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == documents()
    assert runner.invoke(app, ["schema", "export", "--out", str(tmp_path), "--check"]).exit_code == 0
    (tmp_path / "clip-message.schema.json").write_text("{}\n")
    result = runner.invoke(app, ["schema", "export", "--out", str(tmp_path), "--check"])
    assert result.exit_code == 1 and "clip-message.schema.json" in result.output


def _schema(name: str) -> dict:
    schema = json.loads(documents()[name])
    jsonschema.Draft202012Validator.check_schema(schema)
    return schema


def _segment(**changes: object) -> dict:
    base = {
        "schema_version": 1,
        "fleet_id": "fleet-a",
        "vehicle_id": "veh-17",
        "driver_id": "drv-4",
        "camera": "road",
        "segment_id": "veh-17-road-1760000000000",
        "start_ts": NOW - 10,
        "end_ts": NOW,
        "fps": 25,
        "width": 960,
        "height": 540,
        "codec": "h264",
        "video_uri": "s3://fleet-uploads/veh-17/road/1760000000000.mp4",
        "telemetry": [
            {"t": NOW - 10, "speed_kmh": 52.5, "lat": 52.52, "lon": 13.405},
            {"t": NOW, "speed_kmh": None},
        ],
    }
    return {k: v for k, v in {**base, **changes}.items() if v != "<absent>"}


VALID = {
    "claim check": _segment(),
    "inline": _segment(video_uri="<absent>", video_b64="AAAA"),
    "inline, explicit null claim": _segment(video_uri=None, video_b64="AAAA"),
    "no driver, no telemetry": _segment(driver_id="<absent>", telemetry="<absent>"),
    "driver camera": _segment(camera="driver", fps=29.97, width=176, height=144),
    "integral float version": _segment(schema_version=1.0),
}

INVALID = {  # each: refused by the schema, and the receiver's dead-letter reason
    "no schema_version": (_segment(schema_version="<absent>"), "unknown_schema_version"),
    "a future version": (_segment(schema_version=2), "unknown_schema_version"),
    "version as a string": (_segment(schema_version="1"), "unknown_schema_version"),
    "version as a boolean": (_segment(schema_version=True), "unknown_schema_version"),
    "unknown camera": (_segment(camera="cabin"), "invalid_segment"),
    "both video fields": (_segment(video_b64="AAAA"), "invalid_segment"),
    "no video": (_segment(video_uri="<absent>"), "invalid_segment"),
    "an unknown field": (_segment(trip_id="t-1"), "invalid_segment"),
    "no segment id": (_segment(segment_id="<absent>"), "invalid_segment"),
    "width as a float": (_segment(width=960.5), "invalid_segment"),
    "telemetry without t": (_segment(telemetry=[{"speed_kmh": 40.0}]), "invalid_segment"),
}


@pytest.mark.parametrize("name", VALID)
def test_schema_valid_messages_are_accepted(name: str) -> None:
    message = VALID[name]
    jsonschema.validate(message, _schema("segment-message.schema.json"))
    parsed = parse_segment(json.dumps(message).encode(), max_bytes=100_000, now=NOW, arrived=NOW)
    assert parsed == SegmentMessage.model_validate(message)


@pytest.mark.parametrize("name", INVALID)
def test_what_the_schema_refuses_the_receiver_dead_letters(name: str) -> None:
    message, reason = INVALID[name]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(message, _schema("segment-message.schema.json"))
    with pytest.raises(BadSegment) as err:
        parse_segment(json.dumps(message).encode(), max_bytes=100_000, now=NOW, arrived=NOW)
    assert err.value.reason == reason


def test_a_clip_message_validates_against_its_schema() -> None:
    clip = ClipMessage(
        clip_id="c" * 32,
        fleet_id="fleet-a",
        vehicle_id="veh-17",
        start_ts=NOW - 10,
        end_ts=NOW,
        views=["road", "driver"],
        segments=[SegmentMessage.model_validate(_segment()).ref("s3://fleet-uploads/x.mp4")],
        frames_uri="file:///blobs/clips/veh-17/c.r1.npz",
        num_frames=20,
        frame_width=112,
        frame_height=140,
        sample_fps=2.0,
        window_start=NOW - 64,
    )
    jsonschema.validate(json.loads(clip.model_dump_json()), _schema("clip-message.schema.json"))


EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "producer.py"


def _run_example(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    video = tmp_path / "clip.avi"
    video.write_bytes(b"\x00" * 3000)  # never decoded here: the example only reads and encodes the bytes
    trip = {
        "fleet_id": "fleet-a",
        "vehicle_id": "veh-17",
        "segments": [
            {
                "camera": camera,
                "file": "clip.avi",
                "start_ts": NOW + offset,
                "end_ts": NOW + offset + 10,
                "fps": 10,
                "width": 64,
                "height": 48,
                "codec": "mjpg",
            }
            for camera, offset in (("driver", 0.2), ("road", 0.0), ("road", 10.0))
        ],
    }
    trip["segments"][2] |= {"video_uri": "s3://fleet-uploads/veh-17/road-2.avi"}
    (tmp_path / "trip.json").write_text(json.dumps(trip))
    return subprocess.run(
        [sys.executable, str(EXAMPLE), "--trip", str(tmp_path / "trip.json"), "--dry-run", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_example_producers_messages_follow_the_checked_in_schema(tmp_path: Path) -> None:
    run = _run_example(tmp_path)
    assert run.returncode == 0, run.stderr
    schema = json.loads((CHECKED_IN / "segment-message.schema.json").read_text())
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    for message in lines:
        jsonschema.validate(message, schema)
        parse_segment(json.dumps(message).encode(), max_bytes=1_000_000, now=NOW + 30, arrived=NOW + 30)
    assert [(m["camera"], m["start_ts"]) for m in lines] == [
        ("road", NOW),
        ("driver", NOW + 0.2),
        ("road", NOW + 10),
    ]
    assert [m["segment_id"] for m in lines] == [
        f"veh-17-road-{round(NOW * 1000)}",
        f"veh-17-driver-{round((NOW + 0.2) * 1000)}",
        f"veh-17-road-{round((NOW + 10) * 1000)}",
    ]
    assert [("video_b64" in m, "video_uri" in m) for m in lines] == [
        (True, False),
        (True, False),
        (False, True),
    ]


def test_the_example_producer_refuses_an_inline_video_over_the_limit(tmp_path: Path) -> None:
    run = _run_example(tmp_path, "--inline-max-bytes", "2000")
    assert run.returncode != 0 and "upload it and give video_uri instead" in run.stderr
