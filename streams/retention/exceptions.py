"""Retention's errors."""

from __future__ import annotations

from streams.errors import DrivecoachError


class RetentionError(DrivecoachError):
    """A retention command that cannot be done as asked (a sentence for the operator)."""


class RunInProgress(RetentionError):
    """Another `drivecoach retention run` holds the database's retention lock."""
