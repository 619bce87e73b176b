"""The training jobs' one frozen settings object: DRIVECOACH_* environment variables, with flags over them.

Only what the jobs read from the environment lives here (the database URL, and where S3 claim checks are served). The job's own knobs
(`--min-new-reviews`, the fine-tuning recipe, ...) are flags of the command that runs it.
"""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class TrainingSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DRIVECOACH_", frozen=True, extra="ignore")

    # Secret-ish (it may carry a password): from DRIVECOACH_DATABASE_URL or --database-url, never printed.
    database_url: str = Field(
        "", repr=False, description="SQLAlchemy URL of the drivecoach database, e.g. postgresql+psycopg://..."
    )

    s3_endpoint_url: str = Field(
        "",
        description="S3-API endpoint of s3:// frames blobs (MinIO, Ceph, ...); empty = AWS; as the pipeline's",
    )

    @field_validator("database_url")
    @classmethod
    def _parses(cls, value: str) -> str:
        if not value:
            return value
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            make_url(value)
        except (ArgumentError, ValueError) as err:  # the message leaves the URL out: it may hold a password
            raise ValueError("is not a database URL (dialect+driver://user:password@host:port/name)") from err
        return value
