"""Whether a video file plays: the one classification of a broken upload, shared by the joiner's arrival probe and
the clip builders (which call it only on a video that failed to decode, so a good video is decoded once)."""

from __future__ import annotations

from pathlib import Path

import cv2

from streams.errors import BadSegment


def probe_video(path: Path) -> None:
    """Open the video and decode its first frame, so a broken upload is refused on arrival, not when its clip is
    built (where it would take the other camera's good frames down with it).

    `corrupt_video`: no video container can be read (garbage, an MP4 cut before its index, or a still image: FFmpeg
    opens a PNG or JPEG under any name as a one-frame stream, so a second frame must follow); `undecodable_video`:
    the container opens but no frame decodes (an unreadable codec or a corrupt stream). Truncation after the second
    frame is found while the clip is built (`truncated_video`): finding it here would cost a full decode.
    `path` is a file, or a presigned URL dressed as one (`BlobStore.video_source`); a detail names only `path.name`.
    """
    name = path.name
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise BadSegment("corrupt_video", f"{name}: no readable video container (corrupt or truncated)")
        fourcc = int(cap.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode(errors="replace")
        if not (cap.grab() and cap.retrieve()[0]):
            raise BadSegment(
                "undecodable_video", f"{name}: container opens, but no frame decodes (codec {fourcc!r})"
            )
        if not cap.grab():
            raise BadSegment(
                "corrupt_video",
                f"{name}: a single frame (codec {fourcc!r}), a still image or a cut stream, not a video",
            )
    finally:
        cap.release()
