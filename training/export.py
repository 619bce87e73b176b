"""Reviewed results -> a training dataset: the labels safety managers accepted or corrected, never raw model output.

    python -m training.export --database-url URL --out DIR [--cutoff ISO-TIME] [--eval-fraction 0.2] [--seed 0]

Per clip the latest review counts: `accepted` labels the clip with the model's own turns, `corrected` with the
manager's (a correction leaves the other turn as the model wrote it); `rejected` and unreviewed clips are left out,
and so is an accepted answer that is not valid JSON of the taxonomy. Vehicles, not clips, are split between train
and eval (a hash of the vehicle id and the seed), so no vehicle is in both, and the same reviews always give the
same dataset. Written to DIR:
- `train.json`, `eval.json` and `frames/*.npz`: records for `training.sft`, each with the clip's `telemetry`
  (samples, t from the clip start; [] for a clip stored before telemetry travelled), which fine-tuning renders
  into turn 1 as the prompt version it trains asks (`schemas.prompts`);
- `llamafactory/`: the same records in LLaMA-Factory's sharegpt format with `videos/*.mkv` (lossless, 2 FPS) and a
  `dataset_info.json` naming `drivecoach_train` and `drivecoach_eval`; its turn 1 is rendered in `--prompt-version`
  (default the production `cot-v2`, the motion summary included) by `schemas.prompts.conversation`, as serving does;
- `manifest.json`: counts, the review cut-off, the prompt version, vehicles per split and content hashes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from pydantic import TypeAdapter, ValidationError
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session, sessionmaker

from schemas.claim_checks import claim_check_exists, read_claim_check
from schemas.db import Clip, Inference, Review
from schemas.messages import TelemetrySample
from schemas.model_io import encode_lossless
from schemas.prompts import (
    PROMPT_VERSION,
    PROMPT_VERSIONS,
    InvalidAnswer,
    Prompt,
    conversation,
    parse_turn1,
    text_content,
)
from training.options import DatabaseUrl, EvalFraction, build_settings, command_app, fail

LABEL_VERDICTS = ("accepted", "corrected")
_SAMPLES = TypeAdapter(list[TelemetrySample])


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Example:
    clip_id: str
    fleet_id: str
    vehicle_id: str
    frames_uri: str
    turn1: str
    turn2: str
    verdict: str
    telemetry: tuple[TelemetrySample, ...] = ()  # t from the clip start; () for a clip without any


def clip_samples(stored: list[dict[str, Any]] | None) -> tuple[TelemetrySample, ...]:
    """`Clip.telemetry` as samples: NULL (a clip stored before telemetry travelled) or unreadable is none."""
    if not stored:
        return ()
    try:
        return tuple(_SAMPLES.validate_python(stored))
    except ValidationError:
        log.warning("a clip's stored telemetry is not a list of samples: exported without telemetry")
        return ()


def sample_records(samples: tuple[TelemetrySample, ...]) -> list[dict[str, Any]]:
    """Samples as a record stores them: a missing reading left out (as the clip's JSON stores it)."""
    return [s.model_dump(exclude_none=True) for s in samples]


@dataclass
class ExportManifest:
    cutoff: str
    eval_fraction: float
    seed: int
    prompt_version: str = PROMPT_VERSION  # the LLaMA-Factory view's; records carry telemetry, not a rendering
    counts: dict[str, int] = field(default_factory=dict)
    vehicles: dict[str, list[str]] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    hashes: dict[str, str] = field(default_factory=dict)


def reviewed_examples(session: Session, cutoff: datetime) -> tuple[list[Example], dict[str, int]]:
    """The latest review per clip up to `cutoff`, as labels; and what was left out, by reason."""
    rows = session.execute(
        select(Review, Inference, Clip)
        .join(Inference, Review.inference_id == Inference.id)
        .join(Clip, Inference.clip_id == Clip.clip_id)
        .where(Review.created_at <= cutoff)
        .order_by(Clip.clip_id, Review.created_at, Review.id)
    ).all()
    latest: dict[str, tuple[Review, Inference, Clip]] = {}
    for review, inference, clip in rows:
        latest[clip.clip_id] = (review, inference, clip)
    examples, skipped = [], {"rejected": 0, "invalid_label": 0}
    for review, inference, clip in latest.values():
        if review.verdict not in LABEL_VERDICTS:
            skipped["rejected"] += 1
            continue
        turn1 = review.corrected_turn1 or inference.raw_turn1
        turn2 = review.corrected_instruction or inference.raw_turn2
        try:
            parse_turn1(turn1)
        except InvalidAnswer:
            skipped["invalid_label"] += 1
            continue
        # The frames the reviewed answer was made on: a later revision of the clip has other frames.
        examples.append(
            Example(
                clip.clip_id,
                clip.fleet_id,
                clip.vehicle_id,
                inference.frames_uri or clip.frames_uri,
                turn1,
                turn2.strip(),
                review.verdict,
                clip_samples(clip.telemetry),
            )
        )
    return sorted(examples, key=lambda e: e.clip_id), skipped


def _bucket(vehicle_id: str, seed: int) -> float:
    return int(hashlib.sha256(f"{seed}:{vehicle_id}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def assign_splits(vehicles: set[str], eval_fraction: float, seed: int) -> dict[str, str]:
    """`eval` or `train` per vehicle from a hash of its id: stable as the fleet grows. A small fleet whose hashes
    all fall on one side gets its lowest (or highest) vehicle moved, so both splits have one when there are two."""
    buckets = sorted(vehicles, key=lambda v: (_bucket(v, seed), v))
    split = {v: "eval" if _bucket(v, seed) < eval_fraction else "train" for v in buckets}
    if len(buckets) >= 2 and "eval" not in split.values():
        split[buckets[0]] = "eval"
    if len(buckets) >= 2 and "train" not in split.values():
        split[buckets[-1]] = "train"
    return split


def export_dataset(
    session_factory: Callable[[], Session],
    out: Path,
    *,
    cutoff: datetime | None = None,
    eval_fraction: float = 0.2,
    seed: int = 0,
    s3_endpoint: str = "",
    prompt_version: str = PROMPT_VERSION,
) -> ExportManifest:
    if not 0.0 < eval_fraction < 1.0:
        raise ValueError("eval_fraction must be between 0 and 1")
    Prompt(prompt_version)  # an unknown version fails before anything is written
    cutoff = cutoff or datetime.now(UTC)
    examples, skipped = exportable_examples(session_factory, cutoff, s3_endpoint)
    if out.exists():
        shutil.rmtree(out)
    (out / "frames").mkdir(parents=True)
    (out / "llamafactory" / "videos").mkdir(parents=True)
    manifest = ExportManifest(
        cutoff=cutoff.isoformat(),
        eval_fraction=eval_fraction,
        seed=seed,
        prompt_version=prompt_version,
        skipped=skipped,
    )
    splits: dict[str, list[Example]] = {"train": [], "eval": []}
    split = assign_splits({e.vehicle_id for e in examples}, eval_fraction, seed)
    for example in examples:
        splits[split[example.vehicle_id]].append(example)
    for name, items in splits.items():
        write_split(out, name, items, s3_endpoint, prompt_version=prompt_version)
        manifest.counts[name] = len(items)
        manifest.vehicles[name] = sorted({e.vehicle_id for e in items})
        manifest.hashes[name] = hashlib.sha256((out / f"{name}.json").read_bytes()).hexdigest()
    _write_json(out / "llamafactory" / "dataset_info.json", llamafactory_info(list(splits)))
    _write_json(out / "manifest.json", asdict(manifest))
    return manifest


def exportable_examples(
    session_factory: Callable[[], Session], cutoff: datetime, s3_endpoint: str = ""
) -> tuple[list[Example], dict[str, int]]:
    """The reviewed labels whose frames are still in the blob store (`file://` or `s3://`, as the builders stored
    them); and what was left out, by reason."""
    with session_factory() as session:
        examples, skipped = reviewed_examples(session, cutoff)
    present = [e for e in examples if claim_check_exists(e.frames_uri, s3_endpoint=s3_endpoint)]
    # A blob gone (retention, another host) is not a label.
    skipped["missing_frames"] = len(examples) - len(present)
    if skipped["missing_frames"]:
        log.warning(
            "%d reviewed clips left out: their frames are not in the blob store", skipped["missing_frames"]
        )
    return present, skipped


def write_split(
    out: Path, name: str, items: list[Example], s3_endpoint: str = "", *, prompt_version: str = PROMPT_VERSION
) -> None:
    """One split's records (`NAME.json`, `frames/`) and their LLaMA-Factory view (`llamafactory/`)."""
    records, shared = [], []
    for e in items:
        frames_file = out / "frames" / f"{e.clip_id}.npz"
        frames_file.write_bytes(read_claim_check(e.frames_uri, s3_endpoint=s3_endpoint))
        with np.load(frames_file) as data:
            video = encode_lossless(data["frames"])
        (out / "llamafactory" / "videos" / f"{e.clip_id}.mkv").write_bytes(video)
        records.append(
            {
                "id": e.clip_id,
                "vehicle_id": e.vehicle_id,
                "frames": f"frames/{e.clip_id}.npz",
                "turn1": e.turn1,
                "turn2": e.turn2,
                "telemetry": sample_records(e.telemetry),
            }
        )
        prompt = Prompt.for_clip(e.telemetry, prompt_version)
        shared.append(
            {
                "messages": llamafactory_messages(conversation(e.turn1, e.turn2, prompt=prompt)),
                "videos": [f"videos/{e.clip_id}.mkv"],
            }
        )
    _write_json(out / f"{name}.json", records)
    _write_json(out / "llamafactory" / f"{name}.json", shared)


def llamafactory_messages(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    """`conversation`'s messages as LLaMA-Factory's sharegpt expects them: string contents, `<video>` where the
    video goes (its Qwen2-VL template expands it to the same vision tokens)."""
    return [{"role": m["role"], "content": text_content(m["content"], video="<video>")} for m in messages]


def llamafactory_info(splits: list[str]) -> dict[str, object]:
    """LLaMA-Factory's `dataset_info.json`: `drivecoach_NAME` per split, sharegpt format with videos."""
    return {
        f"drivecoach_{name}": {
            "file_name": f"{name}.json",
            "formatting": "sharegpt",
            "columns": {"messages": "messages", "videos": "videos"},
            "tags": {
                "role_tag": "role",
                "content_tag": "content",
                "user_tag": "user",
                "assistant_tag": "assistant",
                "system_tag": "system",
            },
        }
        for name in splits
    }


def _write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=1, sort_keys=isinstance(data, dict)) + "\n")


app = command_app(__doc__.split("\n\n")[0])


@app.command()
def export_command(
    out: Annotated[Path, typer.Option(help="the dataset directory (replaced if it exists)")],
    database_url: DatabaseUrl = None,
    cutoff: Annotated[
        datetime | None,
        typer.Option(
            parser=datetime.fromisoformat, metavar="ISO-TIME", help="reviews up to this time; default now"
        ),
    ] = None,
    eval_fraction: EvalFraction = 0.2,
    seed: Annotated[int, typer.Option(help="seed of the vehicle split")] = 0,
    prompt_version: Annotated[
        str, typer.Option(help=f"the LLaMA-Factory view's prompt ({', '.join(PROMPT_VERSIONS)})")
    ] = PROMPT_VERSION,
) -> None:
    """Write the reviewed labels as a vehicle-split dataset to --out; print its manifest."""
    settings = build_settings(need_database=True, database_url=database_url)
    if not 0.0 < eval_fraction < 1.0:
        fail("eval_fraction: must be between 0 and 1")
    if prompt_version not in PROMPT_VERSIONS:
        fail(f"prompt_version: one of {', '.join(PROMPT_VERSIONS)}")
    engine = create_engine(settings.database_url)
    try:
        manifest = export_dataset(
            sessionmaker(engine),
            out,
            cutoff=cutoff,
            eval_fraction=eval_fraction,
            seed=seed,
            s3_endpoint=settings.s3_endpoint_url,
            prompt_version=prompt_version,
        )
    finally:
        engine.dispose()
    print(json.dumps(asdict(manifest), indent=1))


def main(argv: list[str] | None = None) -> None:
    app(args=argv, prog_name="python -m training.export")


if __name__ == "__main__":
    main()
