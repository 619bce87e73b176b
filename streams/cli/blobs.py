"""`drivecoach blobs`: the claim-check blob store, for devices that upload straight to it."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from streams.cli.options import build_settings, console

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="The claim-check blob store (DRIVECOACH_BLOB_URL): presigned uploads for devices.",
)


@app.command()
def presign(
    key: Annotated[
        str, typer.Argument(help="the blob's key under the store's prefix, e.g. uploads/veh-1/seg-1.mp4")
    ],
    expires_s: Annotated[int, typer.Option(min=1, max=7 * 86400, help="how long the URL works")] = 3600,
    blob_url: Annotated[
        str | None, typer.Option(help="s3://bucket/prefix; default DRIVECOACH_BLOB_URL")
    ] = None,
) -> None:
    """Print, as JSON, a presigned URL a device PUTs one segment's bytes to, and the claim check (s3://...) its
    segment message then carries as `video_uri`. Credentials: the AWS chain of this process, never the device's."""
    from streams.infra.blobs import S3BlobStore, open_blob_store

    settings = build_settings(blob_url=blob_url)
    store = open_blob_store(settings) if settings.blob_url.startswith("s3://") else None
    if not isinstance(store, S3BlobStore):
        console.print(
            "[red]configuration error:[/] presigned uploads need an S3 blob store: set DRIVECOACH_BLOB_URL "
            "(or --blob-url) to s3://bucket/prefix"
        )
        raise typer.Exit(2)
    url, claim_check = store.presign_put(key, expires_s=expires_s)
    typer.echo(
        json.dumps(
            {"method": "PUT", "url": url, "claim_check": claim_check, "expires_s": expires_s}, indent=1
        )
    )
