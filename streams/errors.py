"""Exceptions named for the condition; recovery lives in the agents' and worker's supervisors."""

from __future__ import annotations


class DrivecoachError(Exception):
    """Base of every drivecoach error."""


class ConfigurationError(DrivecoachError):
    """The settings cannot work together; raised at start-up."""


class BrokerStartError(DrivecoachError):
    """The embedded Kafka-protocol broker did not start."""


class BadSegment(DrivecoachError):
    """A segment message that cannot be joined; its `reason` is the dead-letter reason."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail

    def __reduce__(self) -> tuple[type[BadSegment], tuple[str, str]]:
        """Pickle by fields: the video probe raises it in a process-pool worker."""
        return (BadSegment, (self.reason, self.detail))


class VideoDecodeError(DrivecoachError):
    """A video blob could not be opened or decoded."""


class BenchError(DrivecoachError):
    """A benchmark through the broker did not finish: the joiner died or not every clip came in time."""
