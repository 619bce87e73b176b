"""Errors of the webhooks package."""

from __future__ import annotations

from streams.errors import DrivecoachError


class EndpointError(DrivecoachError):
    """An endpoint cannot be registered or found as asked (unknown fleet, bad URL or kind)."""


__all__ = ["EndpointError"]
