"""Evidence exports, as plain data: a clip's package (its records as JSON, a manifest with every file's SHA-256,
the ZIP around them) and reports as CSV safe to open in a spreadsheet. No database, blob store or HTTP here
(export.py does that), so the layouts test on their own."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from streams.console.queries import ClipDetail

# A spreadsheet runs a cell that starts with one of these as a formula (OWASP "CSV injection"); tab and carriage
# return too, since some spreadsheets strip them first.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
MANIFEST = "manifest.json"
MANIFEST_DIGEST = "manifest.sha256"


def csv_cell(value: Any) -> str:
    """One cell: text that a spreadsheet would run as a formula gets a leading apostrophe (driver ids and
    instructions are people's and the model's text); numbers stay numbers, so a negative change still sums."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    text = str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def csv_bytes(rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> bytes:
    """Rows as CSV (RFC 4180 quoting, CRLF line ends) with a header, UTF-8 with a byte-order mark so that Excel
    reads names outside ASCII right; a column a row lacks is an empty cell."""
    out = io.StringIO()
    writer = csv.writer(out, quoting=csv.QUOTE_MINIMAL)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([csv_cell(row.get(column)) for column in columns])
    return ("\ufeff" + out.getvalue()).encode("utf-8")


def download_name(*parts: object, suffix: str) -> str:
    """A file name for Content-Disposition: the parts joined by '-', anything but [A-Za-z0-9._-] replaced (a fleet
    or driver id may hold quotes, slashes or line breaks)."""
    joined = "-".join(re.sub(r"[^A-Za-z0-9._-]+", "_", str(p)) for p in parts if p is not None and p != "")
    return joined[:150] + suffix


def _utc(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def clip_record(clip: ClipDetail, *, height: int, width: int) -> dict[str, Any]:
    """clip.json: what the clip is, without where it is stored (the frames URI names a server path or bucket)."""
    end = clip.start + timedelta(seconds=clip.duration_s)
    return {
        "clip_id": clip.clip_id,
        "fleet_id": clip.fleet_id,
        "vehicle_id": clip.vehicle_id,
        "driver_id": clip.driver_id,
        "window_utc": {"start": _utc(clip.start), "end": _utc(end), "duration_s": clip.duration_s},
        "revision": clip.revision,
        "num_frames": clip.num_frames,
        "sample_fps": clip.sample_fps,
        "frame_size": {"height": height, "width": width},
        "model_version": clip.model_version,
        "answer_id": None if clip.answer_id is None else str(clip.answer_id),
        "answer_valid": clip.valid,
        "description": clip.description,
    }


def events_record(clip: ClipDetail) -> list[dict[str, Any]]:
    """events.json: the current answer's events, each also placed on the UTC clock."""
    return [
        {
            "id": str(e["id"]),
            "type": e["type"],
            "view": e["view"],
            "severity": e["severity"],
            "start_s": e["start_s"],
            "end_s": e["end_s"],
            "start_utc": _utc(clip.start + timedelta(seconds=e["start_s"])),
            "end_utc": _utc(clip.start + timedelta(seconds=e["end_s"])),
            "coaching_status": e["coaching_status"],
        }
        for e in clip.events
    ]


def reviews_record(clip: ClipDetail) -> list[dict[str, Any]]:
    """reviews.json: every review of the clip, newest first, with its corrections; `current` False for a review
    of an earlier revision or another model's answer."""
    return [
        {
            "id": str(r["id"]),
            "reviewer": r["reviewer"],
            "action": r["verdict"],
            "at": _utc(r["created_at"]),
            "corrected_events": r["corrected_turn1"],
            "corrected_instruction": r["corrected_instruction"],
            "clip_revision": r["clip_revision"],
            "model_version": r["model_version"],
            "current": r["current"],
        }
        for r in clip.reviews
    ]


def coaching_record(sessions: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """coaching.json: the coaching sessions that include the clip, without the driver's link (it is a key)."""
    return [
        {
            "id": str(s["public_id"]),
            "driver_id": s["driver_id"],
            "coach": s["coach"],
            "due_on": s["due_on"].isoformat(),
            "status": s["status"],
            "assigned_by": s["created_by"],
            "assigned_at": _utc(s["created_at"]),
            "acknowledged_at": None if s["acknowledged_at"] is None else _utc(s["acknowledged_at"]),
            "notes": s["notes"],
        }
        for s in sessions
    ]


def json_bytes(value: Any) -> bytes:
    return (json.dumps(value, indent=2, ensure_ascii=False, default=str) + "\n").encode("utf-8")


@dataclass(frozen=True)
class Package:
    data: bytes  # the ZIP
    manifest_sha256: str
    sha256: str  # of the ZIP itself
    files: int  # in the manifest


def manifest(
    files: Mapping[str, bytes], *, clip_id: str, exported_by: str, exported_at: datetime, faces_blurred: bool
) -> dict[str, Any]:
    """Every file of the package with its size and SHA-256, and who exported it when: a recipient checks each file
    against it, and the audit log keeps the manifest's own hash."""
    return {
        "clip_id": clip_id,
        "exported_by": exported_by,
        "exported_at": _utc(exported_at),
        "faces_blurred": faces_blurred,
        "files": [
            {"name": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            for name, data in sorted(files.items())
        ],
    }


def package(folder: str, files: Mapping[str, bytes], listed: Mapping[str, Any]) -> Package:
    """The ZIP: the files and the manifest in one folder, with `manifest.sha256` in sha256sum's format (so
    `sha256sum -c manifest.sha256` checks the manifest, and the manifest every other file). The entries carry the
    export's time, so the same export is the same bytes."""
    manifest_data = json_bytes(listed)
    digest = hashlib.sha256(manifest_data).hexdigest()
    moment = datetime.fromisoformat(listed["exported_at"].replace("Z", "+00:00"))
    stamp = (moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        entries = {**files, MANIFEST: manifest_data, MANIFEST_DIGEST: f"{digest}  {MANIFEST}\n".encode()}
        for name, data in entries.items():
            # The MP4 is compressed already: stored as it is; the JSON and text deflated.
            method = zipfile.ZIP_STORED if name.endswith(".mp4") else zipfile.ZIP_DEFLATED
            info = zipfile.ZipInfo(f"{folder}/{name}", date_time=stamp)
            info.compress_type = method
            archive.writestr(info, data)
    data = out.getvalue()
    return Package(data, digest, hashlib.sha256(data).hexdigest(), len(files))
