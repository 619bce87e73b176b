"""One clip built from its plan, in a pool process: decode, stack, store the frames blob."""

from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import dataclass, field

from schemas.messages import ClipPlanMessage, SegmentRef, TelemetrySample, load_telemetry
from schemas.taxonomy import View
from streams.builder.clip import build_clip_frames
from streams.errors import VideoDecodeError
from streams.infra.blobs import BlobStore, open_blob_store_at


@dataclass(frozen=True)
class Built:
    """What a pool process hands back: the clip's frame fields, and the segments whose video failed part-way."""

    frames_uri: str
    num_frames: int
    frame_width: int
    frame_height: int
    faults: list[tuple[SegmentRef, str, str]]  # (segment, dead-letter reason, detail)
    seconds: float  # wall time in the pool process: decode, stack, store
    views: list[View]  # the views that gave frames: a view whose every video failed is black, not claimed
    telemetry: list[TelemetrySample] = field(default_factory=list)  # the clip's, t from its start


def with_telemetry(ref: SegmentRef, blobs: BlobStore) -> SegmentRef:
    """The reference with its samples loaded from the joiner's spill. A spill gone from the store (retention took
    it with the video) leaves the segment without telemetry; the video's own check decides the clip's fate."""
    body = blobs.get_key(ref.telemetry_key) if ref.telemetry_key else None
    return ref if body is None else ref.model_copy(update={"telemetry": tuple(load_telemetry(body))})


def build_and_store(
    plan: ClipPlanMessage, blob_spec: str, fps: float, max_frames: int, max_pixels: int, endpoint: str = ""
) -> Built:
    """`blob_spec` and `endpoint` name the blob store (`streams.infra.blobs.blob_spec(settings)` and
    `settings.s3_endpoint_url`; a directory path is the local store). A missing upload fails the plan
    (BlobNotFound); a store that cannot be reached raises BlobUnavailable rather than fault the segments."""
    started = time.monotonic()
    blobs = open_blob_store_at(blob_spec, endpoint)
    with ExitStack() as videos:
        segments = []
        for ref in [with_telemetry(r, blobs) for r in plan.segments]:
            blobs.check(ref.video_uri)
            # A local path, or a presigned URL that OpenCV reads with range requests: no copy of the video.
            segments.append((ref, videos.enter_context(blobs.video_source(ref.video_uri))))
        try:
            clip = build_clip_frames(
                plan.start_ts, plan.end_ts, segments, fps=fps, max_frames=max_frames, max_pixels=max_pixels
            )
        except VideoDecodeError:
            # Nothing decoded: a store gone meanwhile raises BlobUnavailable instead of failing the plan.
            for ref in plan.segments:
                blobs.check(ref.video_uri)
            raise
    # A video that failed part-way is dead-lettered: only while the store still answers for it.
    for fault in clip.faults:
        blobs.check(fault.segment.video_uri)
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
        views=list(clip.views),
        telemetry=list(clip.telemetry),
    )
