"""`drivecoach schema`: the Kafka message contracts as JSON Schema, for the teams that produce or consume them.

The pydantic models in `schemas/messages.py` are the contract; the JSON Schema files under `schemas/json/` are
generated from them and checked in, so a producer team can validate its messages without Python
(docs/producers.md). `tests/unit/test_schema_export.py` fails when the checked-in files differ from what the models
generate: after changing a message model, run `drivecoach schema export` and commit the result.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from schemas.messages import ClipMessage, SegmentMessage
from streams.cli.options import console

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="The Kafka message contracts (schemas/messages.py) as JSON Schema files.",
)

DEFAULT_DIR = Path("schemas/json")
DIALECT = "https://json-schema.org/draft/2020-12/schema"


def _segment_schema() -> dict[str, Any]:
    schema = SegmentMessage.model_json_schema()
    # The model defaults it, but the receiver refuses a message without it (`unknown_schema_version`): a producer
    # must always say which version it writes.
    schema["required"] = ["schema_version", *schema["required"]]
    # The model's cross-field rules that JSON Schema can state (end_ts > start_ts it cannot: `invalid_segment`).
    schema["oneOf"] = [
        {"properties": {name: {"type": "string"}}, "required": [name]} for name in ("video_uri", "video_b64")
    ]
    schema["description"] = (
        f"{schema['description']} Topic telematics.road or telematics.driver (by `camera`), key = vehicle_id "
        "(UTF-8). Exactly one of video_uri (claim check) and video_b64 (inline) is set; end_ts must be after "
        "start_ts. Rules and dead-letter reasons: docs/producers.md."
    )
    return schema


def _clip_schema() -> dict[str, Any]:
    schema = ClipMessage.model_json_schema()
    schema["description"] = f"{schema['description']} Topic clips, key = vehicle_id (UTF-8)."
    return schema


def documents() -> dict[str, str]:
    """Each file name under schemas/json with its exact text: the fields in the models' order, two-space indent."""
    out = {}
    for name, schema in (("segment-message", _segment_schema()), ("clip-message", _clip_schema())):
        document = {"$schema": DIALECT, **schema}
        out[f"{name}.schema.json"] = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    return out


def stale(directory: Path) -> list[str]:
    """The files under `directory` that are missing or differ from what the models generate."""
    return [
        name
        for name, text in documents().items()
        if not (directory / name).is_file() or (directory / name).read_text(encoding="utf-8") != text
    ]


@app.command("export")
def export(
    out: Annotated[Path, typer.Option(help="directory for the .schema.json files")] = DEFAULT_DIR,
    check: Annotated[
        bool, typer.Option("--check", help="write nothing; exit 1 when the files differ from the models")
    ] = False,
) -> None:
    """Write the JSON Schema of SegmentMessage (what producers publish) and ClipMessage (what `clips` carries)."""
    if check:
        differ = stale(out)
        if differ:
            console.print(
                f"[red]out of date in {out}:[/] {', '.join(differ)}; run `drivecoach schema export --out {out}`"
            )
            raise typer.Exit(1)
        console.print(f"{out}: up to date")
        return
    out.mkdir(parents=True, exist_ok=True)
    for name, text in documents().items():
        (out / name).write_text(text, encoding="utf-8")
        console.print(f"wrote {out / name}")
