"""The `drivecoach` command line, one module per group of sub-commands; each command builds the one Settings
object (`options.build_settings`) and passes it down."""

from __future__ import annotations

import typer

from streams.cli import bench, blobs, console, model, pipeline, report, retention, schema, webhooks

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="drivecoach: dashcam road and driver video to safety events and coaching instructions.",
)
app.add_typer(pipeline.app)
app.add_typer(report.app)
app.add_typer(console.app, name="console")
app.add_typer(model.app, name="model")
app.add_typer(bench.app, name="bench")
app.add_typer(blobs.app, name="blobs")
app.add_typer(schema.app, name="schema")
app.add_typer(retention.app, name="retention")
app.add_typer(webhooks.app, name="webhooks")


def main() -> None:
    app()
