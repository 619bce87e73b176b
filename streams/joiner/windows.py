"""Emitted windows' manifests in the blob store: the durable half of the join's state.

The Faust table holds only what is open per vehicle; once a window is emitted, its segments live here, so that an
upload landing in it hours or days later rebuilds its clip as a new revision instead of being lost, while a vehicle
idle for a day holds no table state at all. A manifest is written after the window's clips were acknowledged by
the broker and before the table forgets the window, so a crash in between re-emits the same revision (ids and
revisions are deterministic, and writes downstream upsert).
"""

from __future__ import annotations

import json

from schemas.messages import SegmentRef
from streams.infra.blobs import BlobStore
from streams.joiner.join import WindowManifest


class WindowStore:
    def __init__(self, blobs: BlobStore) -> None:
        self.blobs = blobs

    @staticmethod
    def key(vehicle_id: str, start: float) -> str:
        return f"windows/{vehicle_id}/{round(start * 1000)}.json"

    def load(self, vehicle_id: str, start: float) -> WindowManifest | None:
        stored = self.blobs.get_key(self.key(vehicle_id, start))
        if stored is None:
            return None
        data = json.loads(stored)
        return WindowManifest(
            vehicle_id, start, tuple(SegmentRef.model_validate(s) for s in data["segments"])
        )

    def save(self, manifest: WindowManifest) -> None:
        body = {
            "vehicle_id": manifest.vehicle_id,
            "start": manifest.start,
            "segments": [s.model_dump(mode="json") for s in manifest.segments],
        }
        self.blobs.put_bytes(self.key(manifest.vehicle_id, manifest.start), json.dumps(body).encode())

    def clear(self) -> None:
        """Forget every emitted window: only for a join whose table state is gone too (a memory-only broker)."""
        self.blobs.delete_prefix("windows/")
