"""Export of reviewed results on the real Postgres: only accepted or corrected labels, the latest review per clip,
nothing after the cut-off, vehicles never in two splits, deterministic, and a LLaMA-Factory view whose videos decode
to the very frames; each clip's telemetry travels with its record and its motion summary is in turn 1 of every view
(fine-tuning's rendering and LLaMA-Factory's), "no telemetry" for a clip stored before telemetry did."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest
from sqlalchemy import create_engine, select, update
from sqlalchemy.orm import sessionmaker

from schemas.db import Clip, Inference, Review
from schemas.messages import ClipMessage, DetectedEvent, InferenceResult, TelemetrySample
from schemas.motion_rules import G
from schemas.motion_summary import NO_TELEMETRY, summarize
from schemas.prompts import PROMPT_VERSION, TURN1_QUESTION, Prompt, format_turn1
from schemas.taxonomy import TAXONOMY, EventType
from streams.inference.sink import write_result
from tests.conftest import fresh_database
from training.export import assign_splits, export_dataset
from training.sft import load_records

pytestmark = pytest.mark.integration
PHONE = DetectedEvent(type=EventType.PHONE_USE, view=TAXONOMY[EventType.PHONE_USE].view, start=1, end=3)
# A harsh brake at 1 s (the device's own axis), and a yaw-rate dropout: the telemetry a clip carries.
BRAKE = [
    TelemetrySample(t=0.0, speed_kmh=50.0, accel_ms2=0.0, yaw_rate_dps=0.0),
    TelemetrySample(t=1.0, speed_kmh=45.0, accel_ms2=-0.45 * G),
    TelemetrySample(t=2.0, speed_kmh=31.0, accel_ms2=-0.2 * G, yaw_rate_dps=3.0),
]


def _clip(
    tmp_path: Path, run: str, vehicle: str, k: int, telemetry: list[TelemetrySample] | None = None
) -> ClipMessage:
    frames = np.random.default_rng(k).integers(0, 256, (4, 56, 84, 3), dtype=np.uint8)
    path = tmp_path / f"{run}-{vehicle}-{k}.npz"
    np.savez(path, frames=frames, times=np.arange(4, dtype=np.float32) / 2)
    return ClipMessage(
        clip_id=f"{run}-{vehicle}-{k}",
        fleet_id="fleet-x",
        vehicle_id=f"{run}-{vehicle}",
        start_ts=1_760_000_000.0 + k,
        end_ts=1_760_000_002.0 + k,
        views=["road", "driver"],
        segments=[],
        frames_uri=path.as_uri(),
        num_frames=4,
        frame_width=84,
        frame_height=56,
        sample_fps=2.0,
        telemetry=telemetry or [],
    )


def _infer(factory, clip: ClipMessage, turn1: str, valid: bool = True) -> int:
    return write_result(
        factory,
        clip=clip,
        result=InferenceResult(
            clip_id=clip.clip_id,
            model_version="m-export",
            prompt_version=PROMPT_VERSION,
            events=[],
            description="",
            instruction="Keep going.",
            raw_turn1=turn1,
            raw_turn2="Keep going.",
            valid=valid,
            latency_ms=1.0,
            prompt_tokens=10,
            generated_tokens=5,
        ),
    )


def test_reviewed_results_become_a_vehicle_split_dataset(database_url: str, tmp_path: Path) -> None:
    engine = create_engine(database_url)
    factory = sessionmaker(engine)
    run = uuid.uuid4().hex[:6]
    clean, corrected_label = format_turn1([]), format_turn1([PHONE])
    clips = {
        (v, k): _clip(tmp_path, run, v, k, BRAKE if (v, k) == ("a", 1) else None)
        for v in ("a", "b", "c", "d", "e", "f")
        for k in range(2)
    }
    ids = {key: _infer(factory, clip, clean) for key, clip in clips.items()}
    with factory() as session, session.begin():  # a clip stored before telemetry travelled: NULL
        session.execute(update(Clip).where(Clip.clip_id == clips[("b", 1)].clip_id).values(telemetry=None))
    bad = _clip(tmp_path, run, "a", 9)
    ids[("a", 9)] = _infer(factory, bad, "{not json", valid=False)
    gone = _clip(tmp_path, run, "g", 0)
    ids[("g", 0)] = _infer(factory, gone, clean)
    Path(gone.frames_uri.removeprefix("file://")).unlink()
    now = datetime.now(UTC)
    reviews = [  # (clip, verdict, corrected turn1, corrected instruction, when)
        (("a", 0), "accepted", None, None, now - timedelta(hours=3)),
        (("a", 1), "corrected", corrected_label, "Put the phone away.", now - timedelta(hours=3)),
        (("b", 0), "rejected", None, None, now - timedelta(hours=3)),
        (("b", 1), "accepted", None, None, now - timedelta(hours=3)),
        (("b", 1), "corrected", None, "Slow down near schools.", now - timedelta(hours=2)),  # the latest wins
        (("c", 0), "accepted", None, None, now + timedelta(hours=1)),  # after the cut-off
        (("a", 9), "accepted", None, None, now - timedelta(hours=3)),  # accepted, but not a valid label
        (("g", 0), "accepted", None, None, now - timedelta(hours=3)),  # its frames blob is gone
        *[
            ((v, k), "accepted", None, None, now - timedelta(hours=1))
            for v in ("d", "e", "f")
            for k in range(2)
        ],
    ]
    with factory() as session, session.begin():
        for key, verdict, turn1, instruction, when in reviews:
            session.add(
                Review(
                    fleet_id="fleet-x",
                    inference_id=ids[key],
                    reviewer="manager@fleet-x",
                    verdict=verdict,
                    corrected_turn1=turn1,
                    corrected_instruction=instruction,
                    created_at=when,
                )
            )

    manifest = export_dataset(factory, tmp_path / "data", cutoff=now, eval_fraction=0.5, seed=3)
    train = json.loads((tmp_path / "data" / "train.json").read_text())
    evals = json.loads((tmp_path / "data" / "eval.json").read_text())
    labels = {r["id"]: (r["turn1"], r["turn2"]) for r in train + evals if r["vehicle_id"].startswith(run)}
    expected = {
        clips[("a", 0)].clip_id: (clean, "Keep going."),
        clips[("a", 1)].clip_id: (corrected_label, "Put the phone away."),
        clips[("b", 1)].clip_id: (clean, "Slow down near schools."),
        **{clips[(v, k)].clip_id: (clean, "Keep going.") for v in ("d", "e", "f") for k in range(2)},
    }
    assert labels == expected
    assert manifest.skipped["rejected"] >= 1 and manifest.skipped["invalid_label"] >= 1
    assert manifest.skipped["missing_frames"] >= 1  # left out, and the export goes on
    train_vehicles, eval_vehicles = ({r["vehicle_id"] for r in rs} for rs in (train, evals))
    assert not train_vehicles & eval_vehicles
    split = assign_splits(train_vehicles | eval_vehicles, 0.5, 3)
    assert all(split[v] == "train" for v in train_vehicles) and all(split[v] == "eval" for v in eval_vehicles)
    assert manifest.counts == {"train": len(train), "eval": len(evals)} and manifest.cutoff == now.isoformat()

    again = export_dataset(factory, tmp_path / "again", cutoff=now, eval_fraction=0.5, seed=3)
    assert again.hashes == manifest.hashes  # same reviews, same dataset

    lf = tmp_path / "data" / "llamafactory"
    info = json.loads((lf / "dataset_info.json").read_text())
    assert set(info) == {"drivecoach_train", "drivecoach_eval"}
    assert info["drivecoach_train"]["columns"] == {"messages": "messages", "videos": "videos"}
    record = next(
        r
        for r in json.loads((lf / "train.json").read_text()) + json.loads((lf / "eval.json").read_text())
        if r["videos"][0] == f"videos/{clips[('a', 1)].clip_id}.mkv"
    )
    assert [m["role"] for m in record["messages"]] == ["system", "user", "assistant", "user", "assistant"]
    assert (
        record["messages"][1]["content"].startswith("<video>")
        and record["messages"][2]["content"] == corrected_label
    )
    # Every view shows the clip's motion: the records carry its samples, fine-tuning renders them into turn 1 as
    # LLaMA-Factory's view has it rendered, both by `schemas.prompts.conversation` in the production prompt.
    motion = summarize(BRAKE)
    assert "braking 0.45 g at 1 s" in motion and manifest.prompt_version == PROMPT_VERSION == "cot-v2"
    assert record["messages"][1]["content"] == "<video>" + Prompt.for_clip(BRAKE).turn1
    assert motion in record["messages"][1]["content"]
    by_id = {r["id"]: r for r in train + evals}
    assert by_id[clips[("a", 1)].clip_id]["telemetry"] == [t.model_dump(exclude_none=True) for t in BRAKE]
    assert by_id[clips[("b", 1)].clip_id]["telemetry"] == by_id[clips[("a", 0)].clip_id]["telemetry"] == []
    finetuned = {
        r.id: r.prompt().turn1
        for index in ("train.json", "eval.json")
        for r in load_records(tmp_path / "data", index)
    }
    assert motion in finetuned[clips[("a", 1)].clip_id]
    assert NO_TELEMETRY in finetuned[clips[("b", 1)].clip_id]  # NULL: no telemetry, said so
    shared = {
        r["videos"][0]: r["messages"][1]["content"]
        for split in ("train", "eval")
        for r in json.loads((lf / f"{split}.json").read_text())
    }
    assert NO_TELEMETRY in shared[f"videos/{clips[('b', 1)].clip_id}.mkv"]
    # The video-only prompt, for a model to compare against: the same records, turn 1 without the motion.
    v1 = export_dataset(
        factory, tmp_path / "v1", cutoff=now, eval_fraction=0.5, seed=3, prompt_version="cot-v1"
    )
    assert (
        v1.prompt_version == "cot-v1" and v1.hashes == manifest.hashes
    )  # records carry samples, not a rendering
    v1_shared = {
        r["videos"][0]: r["messages"][1]["content"]
        for split in ("train", "eval")
        for r in json.loads((tmp_path / "v1" / "llamafactory" / f"{split}.json").read_text())
    }
    assert v1_shared[record["videos"][0]] == "<video>" + TURN1_QUESTION
    cap = cv2.VideoCapture(str(lf / record["videos"][0]))
    decoded = [cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for ok, f in iter(cap.read, (False, None)) if ok]
    with np.load(clips[("a", 1)].frames_uri.removeprefix("file://")) as data:
        assert np.array_equal(np.stack(decoded), data["frames"])
    with factory() as session:  # nothing unreviewed or rejected crept in
        unreviewed = session.scalars(
            select(Inference.clip_id).where(Inference.id.not_in(select(Review.inference_id)))
        )
        assert not set(unreviewed) & set(labels)
    engine.dispose()


def test_the_export_reads_frames_blobs_from_s3(s3_server, tmp_path: Path) -> None:
    """Builders on S3 store `s3://` frames: the export reads them through the S3 API (a real HTTP server), and a
    frames object that is gone leaves its label out, as a missing file does. Its own database: the session's is
    exported by the retrain test, which has no S3 endpoint."""
    with fresh_database() as url:
        engine = create_engine(url)
        try:
            _export_from_s3(sessionmaker(engine), s3_server, tmp_path)
        finally:
            engine.dispose()


def _export_from_s3(factory, s3_server, tmp_path: Path) -> None:
    run, bucket = uuid.uuid4().hex[:6], s3_server.bucket()
    clips, stored = {}, {}
    for v, k in (("s", 0), ("s", 1), ("t", 0), ("t", 1), ("u", 0)):
        local = _clip(tmp_path, run, v, k)
        key = f"clips/{local.vehicle_id}/{local.clip_id}.r1.npz"
        data = Path(local.frames_uri.removeprefix("file://")).read_bytes()
        if (v, k) != ("u", 0):  # its object never reached the store
            s3_server.client().put_object(Bucket=bucket, Key=key, Body=data)
            stored[local.clip_id] = data
        clips[(v, k)] = local.model_copy(update={"frames_uri": f"s3://{bucket}/{key}"})
    ids = {key: _infer(factory, clip, format_turn1([])) for key, clip in clips.items()}
    now = datetime.now(UTC)
    with factory() as session, session.begin():
        for key in clips:
            session.add(
                Review(
                    fleet_id="fleet-x",
                    inference_id=ids[key],
                    reviewer="manager@fleet-x",
                    verdict="accepted",
                    created_at=now - timedelta(minutes=5),
                )
            )
    out = tmp_path / "s3-data"
    manifest = export_dataset(
        factory, out, cutoff=now, eval_fraction=0.5, seed=3, s3_endpoint=s3_server.endpoint
    )
    records = json.loads((out / "train.json").read_text()) + json.loads((out / "eval.json").read_text())
    ours = {r["id"]: r for r in records if r["vehicle_id"].startswith(run)}
    assert set(ours) == set(stored)
    for clip_id, data in stored.items():
        assert (out / ours[clip_id]["frames"]).read_bytes() == data  # the very object, not a re-encoding
    assert manifest.skipped["missing_frames"] >= 1
