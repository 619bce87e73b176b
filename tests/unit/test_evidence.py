"""The evidence layouts without a database: CSV cells a spreadsheet cannot run, the package a recipient can check
with `sha256sum -c`, the same export giving the same bytes."""

from __future__ import annotations

import csv
import io
import subprocess
import zipfile
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import cv2
import numpy as np
import pytest

from streams.console import evidence
from streams.console.export import frames_mp4

AT = datetime(2026, 12, 2, 8, 30, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        ("=SUM(A1:A9)", "'=SUM(A1:A9)"),
        ("+33 6 12", "'+33 6 12"),
        ("-driver", "'-driver"),
        ("@import", "'@import"),
        ("\t=1+1", "'\t=1+1"),
        ("plain, with a comma", "plain, with a comma"),
        (-3, "-3"),
        (-1.5, "-1.5"),
        (Decimal("-0.25"), "-0.25"),
        (None, ""),
        (True, "true"),
        (date(2026, 11, 30), "2026-11-30"),
        (AT, "2026-12-02T08:30:05+00:00"),
    ],
)
def test_a_cell_is_text_a_spreadsheet_will_not_run(value: object, cell: str) -> None:
    assert evidence.csv_cell(value) == cell


def test_csv_quotes_and_reads_back() -> None:
    rows = [{"who": 'say "hi",\nthen go', "n": 2}, {"who": "=1+2"}]
    data = evidence.csv_bytes(rows, ["who", "n"])
    assert data.startswith(b"\xef\xbb\xbf") and b"\r\n" in data
    back = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"), newline="")))
    assert back == [{"who": 'say "hi",\nthen go', "n": "2"}, {"who": "'=1+2", "n": ""}]


def test_download_names_keep_to_safe_characters() -> None:
    assert evidence.download_name("drivecoach", 'fl"eet/1\r\n', None, date(2026, 1, 5), suffix=".csv") == (
        "drivecoach-fl_eet_1_-2026-01-05.csv"
    )


def test_the_package_checks_with_sha256sum_and_is_the_same_twice(tmp_path: Path) -> None:
    files = {
        "frames.mp4": b"\x00\x01video",
        "clip.json": b'{"clip_id": "c"}\n',
        "instruction.txt": b"Slow down.\n",
    }
    listed = evidence.manifest(files, clip_id="c", exported_by="m@f", exported_at=AT, faces_blurred=True)
    assert [f["name"] for f in listed["files"]] == sorted(files) and listed[
        "exported_at"
    ] == "2026-12-02T08:30:05Z"
    first, second = (evidence.package("evidence-c", files, listed) for _ in range(2))
    assert first == second and first.files == 3
    with zipfile.ZipFile(io.BytesIO(first.data)) as archive:
        assert sorted(archive.namelist()) == sorted(
            f"evidence-c/{n}" for n in [*files, evidence.MANIFEST, evidence.MANIFEST_DIGEST]
        )
        assert archive.getinfo("evidence-c/frames.mp4").compress_type == zipfile.ZIP_STORED
        archive.extractall(tmp_path)
    folder = tmp_path / "evidence-c"
    subprocess.run(["sha256sum", "--check", "--strict", evidence.MANIFEST_DIGEST], cwd=folder, check=True)
    sums = "".join(f"{f['sha256']}  {f['name']}\n" for f in listed["files"])
    subprocess.run(["sha256sum", "--check", "--strict"], cwd=folder, input=sums.encode(), check=True)
    (folder / "instruction.txt").write_bytes(b"Speed up.\n")
    changed = subprocess.run(["sha256sum", "--check"], cwd=folder, input=sums.encode(), capture_output=True)
    assert changed.returncode != 0


@pytest.mark.parametrize(("height", "width"), [(112, 280), (57, 33)])
def test_the_mp4_keeps_every_frame_and_pixel(tmp_path: Path, height: int, width: int) -> None:
    rows = np.linspace(0, 255, height, dtype=np.uint8)[None, :, None, None]
    frames = np.broadcast_to(rows, (9, height, width, 3)).copy()
    frames[:, :, :, 1] = np.arange(9, dtype=np.uint8)[:, None, None] * 25  # each frame its own green
    path = tmp_path / "frames.mp4"
    path.write_bytes(frames_mp4(frames, 2.0))
    cap, decoded = cv2.VideoCapture(str(path)), []
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(2.0)
    while (read := cap.read())[0]:
        decoded.append(cv2.cvtColor(read[1], cv2.COLOR_BGR2RGB))
    cap.release()
    assert len(decoded) == 9
    assert decoded[0].shape == (height + height % 2, width + width % 2, 3)  # an odd size padded, never cut
    for got, want in zip(decoded, frames, strict=True):
        assert np.abs(got[:height, :width].astype(int) - want.astype(int)).mean() < 6
