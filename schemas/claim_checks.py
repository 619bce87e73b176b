"""Claim-check URIs, the contract every stage and the training export share: `file:///path` or `s3://bucket/key`.

`read_claim_check` resolves one to its bytes for a reader outside the streams package (the training export reads
the clips' frames blobs with it); `s3_client` is the one S3 client configuration, used by the streams' blob store
too, so both talk to MinIO, Ceph or AWS the same way. Credentials come only from the AWS SDK's chain.
"""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse


def s3_client(endpoint: str) -> Any:
    """One client per store; botocore retries connection errors, throttling and 5xx with backoff (~30 s in all)."""
    import boto3
    from botocore.config import Config

    config = Config(
        signature_version="s3v4",
        connect_timeout=5,
        read_timeout=60,
        retries={"mode": "standard", "max_attempts": 8},
        # A custom endpoint (MinIO, Ceph, a test server) is addressed by path: bucket.host needs wildcard DNS.
        # boto3 1.36+ sends CRC trailers by default, which several S3-compatible stores refuse: only when required.
        **(
            {
                "s3": {"addressing_style": "path"},
                "request_checksum_calculation": "when_required",
                "response_checksum_validation": "when_required",
            }
            if endpoint
            else {}
        ),
    )
    region = (
        os.environ.get("AWS_REGION") or None
    )  # else boto3's own chain (AWS_DEFAULT_REGION, ~/.aws/config)
    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint or None, region_name=region, config=config
    )


_reader = lru_cache(maxsize=4)(s3_client)  # one client per endpoint for a reader of many blobs


def read_claim_check(uri: str, *, s3_endpoint: str = "") -> bytes:
    """The bytes a claim check names; FileNotFoundError when the blob is not there."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path)).read_bytes()
    if parsed.scheme == "s3":
        from botocore.exceptions import ClientError

        try:
            answer = _reader(s3_endpoint).get_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))
        except ClientError as err:
            if _not_found(err):
                raise FileNotFoundError(uri) from err
            raise
        return bytes(answer["Body"].read())
    raise ValueError(f"claim checks are file:// or s3:// URIs, got {uri}")


def claim_check_exists(uri: str, *, s3_endpoint: str = "") -> bool:
    """Whether the blob a claim check names is there (a HEAD on S3); False for a URI of no known scheme."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path)).is_file()
    if parsed.scheme == "s3":
        from botocore.exceptions import ClientError

        try:
            _reader(s3_endpoint).head_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))
        except ClientError as err:
            if _not_found(err):
                return False
            raise
        return True
    return False


def _not_found(err: Any) -> bool:
    """A GET answers NoSuchKey, a HEAD (which has no body) only 404."""
    return err.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound")


def derived_prefix(video_uri: str) -> str:
    """The key prefix of everything derived from one upload (the console's transcodings, the joiner's telemetry
    spill): retention deletes what lies under it with the upload."""
    return f"footage/{hashlib.sha256(video_uri.encode()).hexdigest()[:40]}."


def telemetry_key(video_uri: str, body: bytes) -> str:
    """Where the joiner spills an upload's telemetry (`body`, its JSON): beside the upload's derived copies, so it
    goes when the video goes, and content-addressed, so a re-sent upload writes the same blob."""
    return f"{derived_prefix(video_uri)}telemetry-{hashlib.sha256(body).hexdigest()[:16]}.json"
