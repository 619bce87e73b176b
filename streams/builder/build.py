"""One clip built from its plan, in a pool process: decode, stack, store the frames blob."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from schemas.messages import ClipPlanMessage, SegmentRef
from streams.infra.blobs import LocalBlobStore
from streams.joiner.clip import build_clip_frames


@dataclass(frozen=True)
class Built:
    """What a pool process hands back: the clip's frame fields, and the segments whose video failed part-way."""

    frames_uri: str
    num_frames: int
    frame_width: int
    frame_height: int
    faults: list[tuple[SegmentRef, str, str]]  # (segment, dead-letter reason, detail)
    seconds: float  # wall time in the pool process: decode, stack, store


def build_and_store(
    plan: ClipPlanMessage, blob_root: str, fps: float, max_frames: int, max_pixels: int
) -> Built:
    started = time.monotonic()
    blobs = LocalBlobStore(Path(blob_root))
    segments = [(ref, blobs.path(ref.video_uri)) for ref in plan.segments]
    clip = build_clip_frames(
        plan.start_ts, plan.end_ts, segments, fps=fps, max_frames=max_frames, max_pixels=max_pixels
    )
    # One blob per revision: a manager's review of an older revision keeps the frames it was made on.
    uri = blobs.put_bytes(f"clips/{plan.vehicle_id}/{plan.clip_id}.r{plan.revision}.npz", clip.to_npz())
    t, h, w, _ = clip.frames.shape
    return Built(
        frames_uri=uri,
        num_frames=t,
        frame_width=w,
        frame_height=h,
        faults=[(f.segment, f.reason, f.detail) for f in clip.faults],
        seconds=time.monotonic() - started,
    )
