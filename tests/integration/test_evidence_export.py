"""Evidence export (issue 18, item 6) over real HTTP against a real console: a clip built by the real clip builder
from real footage (../shared/videos) downloaded as one ZIP (every file against the manifest's SHA-256, the MP4
decoded by OpenCV, faces blurred unless permitted, audited), another fleet's clip refused, and every report as CSV
parsed back and compared with the JSON API (and `drivecoach report`), formula cells neutralised; in a browser, the
clip page's button and a report page's CSV link."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import time
import uuid
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import sessionmaker
from typer.testing import CliRunner

from schemas.messages import DetectedEvent
from schemas.taxonomy import EventType, View
from streams.cli import app
from streams.console.auth import add_manager
from streams.console.privacy import detect_faces
from streams.inference.sink import write_result
from streams.infra.blobs import LocalBlobStore
from streams.settings import Settings
from tests.conftest import ARTIFACTS
from tests.integration.console_data import (
    PASSWORD,
    REAL_T0,
    model_answer,
    real_footage_clip,
    running_console,
    seed_fleet,
    sign_in,
)

pytestmark = pytest.mark.integration

T0 = REAL_T0
FILES = {"frames.mp4", "clip.json", "events.json", "instruction.txt", "reviews.json", "coaching.json"}
CORRECTED = '=HYPERLINK("http://evil.example","click") Put the phone away before you drive.'
WINDOW = {"since": "2020-01-06", "until": "2030-01-07"}


@dataclass(frozen=True)
class Site:
    url: str
    engine: Engine
    fleet_id: str
    clip_id: str
    driver_id: str  # a driver id a spreadsheet would run as a formula
    plain: str  # the fleet's manager, without view_unblurred
    trusted: str  # with it
    stranger: str  # another fleet's manager
    frames: np.ndarray  # the clip's stacked frames as stored
    driver_top: int
    sample_fps: float
    session_id: str  # a coaching session that includes the clip


def _assign(client: httpx.Client, csrf: str, driver: str, clip_id: str) -> str:
    made = client.post(
        "/coaching/sessions",
        data={
            "csrf_token": csrf,
            "driver": driver,
            "coach": "Sam",
            "due_on": str(date.today() + timedelta(days=7)),
            "notes": "talk it through",
            "clip": [clip_id],
        },
    )
    assert made.status_code == 303, made.text
    return made.headers["location"].split("created=")[1]


@pytest.fixture(scope="module")
def site(
    own_database_url: str, shared_videos: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    engine = create_engine(own_database_url)
    factory = sessionmaker(engine)
    settings = Settings(home=tmp_path_factory.mktemp("evidence"))
    blobs = LocalBlobStore(settings.blobs)
    fleet = f"fleet-evid-{uuid.uuid4().hex[:6]}"
    driver = f"=cmd|' /C calc'!A0 {fleet}"
    clip, built = real_footage_clip(fleet, driver, blobs, shared_videos)
    phone = DetectedEvent(type=EventType.PHONE_USE, view=View.DRIVER, start=1.0, end=2.5)
    write_result(
        factory,
        clip=clip,
        result=model_answer(clip.clip_id, [phone], "Keep both hands on the wheel.", "model-evidence"),
    )
    seeded = seed_fleet(factory, settings, fleet, clips=4, seed=5)  # driving and events for the reports
    stranger = seed_fleet(factory, settings, f"fleet-other-{uuid.uuid4().hex[:6]}", clips=1).manager
    trusted = f"trusted@{fleet}"
    with factory() as session, session.begin():
        add_manager(session, username=trusted, fleet_id=fleet, password=PASSWORD, view_unblurred=True)
    with running_console(settings, engine) as url, httpx.Client(base_url=url, timeout=180) as client:
        csrf = sign_in(client, seeded.manager)
        corrected = client.post(
            f"/api/v1/clips/{clip.clip_id}/review",
            json={
                "action": "correct",
                "events": [{"type": "phone_use", "start": 1.0, "end": 3.0}],
                "instruction": CORRECTED,
            },
            headers={"X-CSRF-Token": csrf},
        )
        assert corrected.status_code == 200, corrected.text
        session_id = _assign(client, csrf, driver, clip.clip_id)
        # An acknowledged session elsewhere, for the "Does coaching work?" report.
        other = next(s for s in seeded.clips if s.events)
        accepted = client.post(
            f"/api/v1/clips/{other.scenario_id}/review",
            json={"action": "accept"},
            headers={"X-CSRF-Token": csrf},
        )
        assert accepted.status_code == 200, accepted.text
        done = _assign(client, csrf, other.driver_id, other.scenario_id)
        link = re.search(
            rf'data-session="{done}">.*?<a class="driver-link" href="([^"]+)"',
            client.get("/coaching").text,
            re.S,
        )
        assert link is not None and client.post(f"{link.group(1)}/acknowledge").status_code == 303
        yield Site(
            url,
            engine,
            fleet,
            clip.clip_id,
            driver,
            seeded.manager,
            trusted,
            stranger,
            built.frames,
            built.driver_top,
            clip.sample_fps,
            session_id,
        )
    engine.dispose()


@contextmanager
def _client(site: Site, who: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=site.url, timeout=180) as client:
        sign_in(client, who)
        yield client


def _exports(site: Site) -> list[tuple[str, str, str, dict[str, Any]]]:
    with site.engine.connect() as conn:
        rows = conn.execute(
            text("""SELECT username, action, subject, detail FROM audit_log
                    WHERE fleet_id = :fleet AND action IN ('export', 'unblurred_view') ORDER BY id"""),
            {"fleet": site.fleet_id},
        ).all()
    return [(r.username, r.action, r.subject, r.detail) for r in rows]


def _unzip(response: httpx.Response) -> tuple[str, dict[str, bytes]]:
    """The package's folder and files, after checking every file against the manifest and the manifest against
    its digest (file and header)."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    disposition = re.fullmatch(
        r'attachment; filename="(evidence-[A-Za-z0-9._-]+)\.zip"', response.headers["content-disposition"]
    )
    assert disposition is not None, response.headers["content-disposition"]
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert archive.testzip() is None
        files = {name.split("/", 1)[1]: archive.read(name) for name in archive.namelist()}
        folders = {name.split("/", 1)[0] for name in archive.namelist()}
    assert folders == {disposition.group(1)}
    assert set(files) == FILES | {"manifest.json", "manifest.sha256"}
    digest = hashlib.sha256(files["manifest.json"]).hexdigest()
    assert response.headers["x-manifest-sha256"] == digest
    assert files["manifest.sha256"].decode() == f"{digest}  manifest.json\n"
    listed = json.loads(files["manifest.json"])
    assert {f["name"] for f in listed["files"]} == FILES
    for entry in listed["files"]:
        data = files[entry["name"]]
        assert entry["bytes"] == len(data) and entry["sha256"] == hashlib.sha256(data).hexdigest(), entry[
            "name"
        ]
    return disposition.group(1), files


def _decode(data: bytes, tmp_path: Path) -> tuple[list[np.ndarray], float]:
    path = tmp_path / "frames.mp4"
    path.write_bytes(data)
    cap, frames = cv2.VideoCapture(str(path)), []
    fps = cap.get(cv2.CAP_PROP_FPS)
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    cap.release()
    return frames, fps


def test_the_package_holds_the_clip_its_records_and_their_digests(site: Site) -> None:
    with _client(site, site.plain) as client:
        _, files = _unzip(client.get(f"/clips/{site.clip_id}/evidence.zip"))
        api = client.get(f"/api/v1/clips/{site.clip_id}").json()
    listed = json.loads(files["manifest.json"])
    assert listed["clip_id"] == site.clip_id and listed["exported_by"] == site.plain
    assert listed["faces_blurred"] is True
    exported = datetime.fromisoformat(listed["exported_at"])
    assert abs((datetime.now(UTC) - exported).total_seconds()) < 120
    clip = json.loads(files["clip.json"])
    assert clip["clip_id"] == site.clip_id and clip["driver_id"] == site.driver_id
    assert clip["vehicle_id"] == f"{site.fleet_id}-veh" and clip["model_version"] == "model-evidence"
    assert clip["answer_id"] == api["answer_id"] and "frames_uri" not in clip
    assert datetime.fromisoformat(clip["window_utc"]["start"]).timestamp() == T0
    assert datetime.fromisoformat(clip["window_utc"]["end"]).timestamp() == T0 + 4.0
    events = json.loads(files["events.json"])
    assert (
        [(e["id"], e["type"], e["start_s"], e["end_s"]) for e in events]
        == [(e["id"], e["type"], e["start_s"], e["end_s"]) for e in api["events"]]
        == [(api["events"][0]["id"], "phone_use", 1.0, 3.0)]
    )
    assert datetime.fromisoformat(events[0]["start_utc"]).timestamp() == T0 + 1.0
    assert files["instruction.txt"].decode() == CORRECTED + "\n"
    reviews = json.loads(files["reviews.json"])
    assert [(r["id"], r["reviewer"], r["action"], r["corrected_instruction"]) for r in reviews] == [
        (api["reviews"][0]["id"], site.plain, "corrected", CORRECTED)
    ]
    coaching = json.loads(files["coaching.json"])
    assert [(s["id"], s["coach"], s["status"], s["driver_id"]) for s in coaching] == [
        (site.session_id, "Sam", "open", site.driver_id)
    ]
    assert (
        coaching[0]["due_on"] == str(date.today() + timedelta(days=7))
        and coaching[0]["acknowledged_at"] is None
    )
    assert "/driver/" not in files["coaching.json"].decode()  # the driver's link is a key: not exported


def test_the_mp4_is_the_clips_frames_with_the_faces_blurred(site: Site, tmp_path: Path) -> None:
    with _client(site, site.plain) as client:
        _, files = _unzip(client.get(f"/clips/{site.clip_id}/evidence.zip"))
    frames, fps = _decode(files["frames.mp4"], tmp_path)
    assert len(frames) == len(site.frames) and frames[0].shape == site.frames.shape[1:]
    assert fps == pytest.approx(site.sample_fps)
    stored = site.frames[:, site.driver_top :]
    assert sum(bool(detect_faces(v)) for v in stored) >= 0.8 * len(stored), (
        "the real face is in the stored frames"
    )
    for index, frame in enumerate(frames):
        assert detect_faces(frame[site.driver_top :]) == [], (
            f"a face is still found in frame {index} of the MP4"
        )
        road = frame[: site.driver_top].astype(int) - site.frames[index, : site.driver_top].astype(int)
        assert np.abs(road).mean() < 12, f"frame {index}: the road view is not the stored one"


def test_unblurred_needs_the_permission_and_each_package_is_audited(site: Site, tmp_path: Path) -> None:
    before = _exports(site)
    with _client(site, site.plain) as client:
        refused = client.get(f"/clips/{site.clip_id}/evidence.zip?unblurred=1")
    assert refused.status_code == 403 and _exports(site) == before
    with _client(site, site.trusted) as client:
        client.get(
            f"/clips/{site.clip_id}/frames/0?unblurred=1"
        )  # a view just before: the export still counts
        responses = [client.get(f"/clips/{site.clip_id}/evidence.zip?unblurred=1") for _ in range(2)]
        blurred = client.get(f"/clips/{site.clip_id}/evidence.zip")
    packages = [_unzip(r)[1] for r in responses]
    assert json.loads(packages[0]["manifest.json"])["faces_blurred"] is False
    frames, _ = _decode(packages[0]["frames.mp4"], tmp_path)
    assert np.abs(np.stack(frames).astype(int) - site.frames.astype(int)).mean() < 12  # the stored frames
    found = [bool(detect_faces(f[site.driver_top :])) for f in frames]
    assert sum(found) >= 0.5 * len(found), "the unblurred package shows the face"
    entries = _exports(site)[len(before) :]
    digests = [r.headers["x-manifest-sha256"] for r in (*responses, blurred)]
    assert [(who, action, subject) for who, action, subject, _ in entries] == [
        (site.trusted, "unblurred_view", site.clip_id),  # the frame
        (site.trusted, "unblurred_view", site.clip_id),
        (site.trusted, "export", site.clip_id),
        (site.trusted, "unblurred_view", site.clip_id),
        (site.trusted, "export", site.clip_id),
        (site.trusted, "export", site.clip_id),
    ]
    exports = [detail for _, action, _, detail in entries if action == "export"]
    assert [(d["faces_blurred"], d["manifest_sha256"]) for d in exports] == [
        (False, digests[0]),
        (False, digests[1]),
        (True, digests[2]),
    ]
    assert exports[0]["package_sha256"] == hashlib.sha256(responses[0].content).hexdigest()
    assert [d["what"] for _, a, _, d in entries if a == "unblurred_view"][1:] == ["evidence package"] * 2


@pytest.mark.attack("idor")
def test_another_fleets_clip_is_not_found(site: Site) -> None:
    before = _exports(site)
    with _client(site, site.stranger) as client:
        missing = client.get("/clips/no-such-clip/evidence.zip")
        for query in ("", "?unblurred=1"):
            theirs = client.get(f"/clips/{site.clip_id}/evidence.zip{query}")
            assert (
                (theirs.status_code, theirs.json())
                == (404, missing.json())
                == (404, {"detail": "no such clip"})
            )
        theirs_csv = client.get("/reports/events.csv").content.decode("utf-8-sig")
    assert theirs_csv.count("\n") > 1 and site.fleet_id not in theirs_csv  # only their own fleet's rows
    with httpx.Client(base_url=site.url, timeout=60) as anonymous:
        assert anonymous.get(f"/clips/{site.clip_id}/evidence.zip").status_code == 401
        assert anonymous.get("/reports/queue.csv").status_code == 401
    assert _exports(site) == before


def _csv_rows(response: httpx.Response) -> list[dict[str, str]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.content.startswith(b"\xef\xbb\xbf")  # Excel reads UTF-8 by its byte-order mark
    return list(csv.DictReader(io.StringIO(response.content.decode("utf-8-sig"), newline="")))


def _same(cell: str, value: Any) -> bool:
    """A CSV cell says what a JSON value says (text a spreadsheet would run carries a leading apostrophe)."""
    if value is None:
        return cell == ""
    if isinstance(value, bool):
        return cell == str(value).lower()
    if isinstance(value, int | float):
        return float(cell) == pytest.approx(value)
    return cell == ("'" + value if value[:1] in ("=", "+", "-", "@") else value)


REPORTS = [  # (CSV, the JSON API's same report, parameters)
    ("events", "/api/v1/reports/events", {**WINDOW, "group": "driver", "period": "week"}),
    ("events", "/api/v1/reports/events", {"group": "vehicle", "period": "day", "type": "phone_use"}),
    ("trend", "/api/v1/reports/trend", {**WINDOW, "group": "driver"}),
    ("scores", "/api/v1/reports/scores", WINDOW),
    ("queue", "/api/v1/queue", {"limit": 500}),
    ("needs-coaching", "/api/v1/coaching", {"limit": 500}),
]


@pytest.mark.parametrize(
    ("report", "api", "params"), REPORTS, ids=[f"{r}-{i}" for i, (r, _, _) in enumerate(REPORTS)]
)
def test_each_report_as_csv_says_what_the_json_api_says(
    site: Site, report: str, api: str, params: dict[str, Any]
) -> None:
    before = len(_exports(site))
    with _client(site, site.plain) as client:
        response = client.get(f"/reports/{report}.csv", params=params)
        rows, expected = _csv_rows(response), client.get(api, params=params).json()
    assert expected, "the report has rows to compare"
    assert len(rows) == len(expected)
    assert list(rows[0]) == list(expected[0])
    for row, want in zip(rows, expected, strict=True):
        assert all(_same(row[k], v) for k, v in want.items()), (row, want)
    name = re.fullmatch(
        r'attachment; filename="([A-Za-z0-9._-]+\.csv)"', response.headers["content-disposition"]
    )
    assert name is not None and name.group(1).startswith(f"drivecoach-{site.fleet_id}-{report}")
    (who, action, subject, detail), *_ = _exports(site)[before:]
    assert (who, action, subject, detail["rows"]) == (site.plain, "export", f"report:{report}", len(rows))


def test_the_scores_csv_without_a_window_is_the_scores_page(site: Site) -> None:
    with _client(site, site.plain) as client:
        rows = _csv_rows(client.get("/reports/scores.csv", params={"weeks": 52}))
        page = client.get("/scores", params={"weeks": 52}).text
        until = _csv_rows(client.get("/reports/scores.csv", params={"until": "2026-06-01", "weeks": 1}))
    assert rows and len(rows) == page.count('class="explain"')
    assert {r["week"] for r in until} == {"2026-05-25"}  # the real clip's week: 1 week up to 2026-06-01
    assert 'href="/reports/scores.csv?weeks=52"' in page


def test_the_events_behind_a_score_as_csv(site: Site) -> None:
    week = {"driver": site.driver_id, "week": "2026-05-28"}  # a Thursday: its week's Monday is 2026-05-25
    with _client(site, site.plain) as client:
        rows = _csv_rows(client.get("/reports/score-events.csv", params=week))
        page = client.get("/scores/explain", params=week).text
    assert [(r["clip_id"], r["type"], r["coaching_status"]) for r in rows] == [
        (site.clip_id, "phone_use", "needs_coaching")
    ]
    assert datetime.fromisoformat(rows[0]["occurred_at"]).timestamp() == T0 + 1.0
    assert page.count('class="open-clip"') == len(rows) and 'id="csv-score-events"' in page


def test_formula_cells_are_neutralised(site: Site) -> None:
    with _client(site, site.plain) as client:
        texts = [
            client.get(f"/reports/{r}.csv", params=p).content.decode("utf-8-sig")
            for r, _, p in (REPORTS[0], REPORTS[2], REPORTS[3], REPORTS[5])
        ]
    cli = CliRunner(
        env={"DRIVECOACH_DATABASE_URL": site.engine.url.render_as_string(hide_password=False)}
    ).invoke(app, ["report", "events", "--fleet", site.fleet_id, "--format", "csv"])
    assert cli.exit_code == 0, cli.output
    texts.append(cli.output)  # `drivecoach report --format csv` defuses them too
    quoted = "'" + site.driver_id
    for body in texts:
        cells = [cell for row in csv.reader(io.StringIO(body, newline="")) for cell in row]
        assert quoted in cells, "the driver's id is there, defused"
        for cell in cells:
            if cell[:1] in ("=", "+", "-", "@", "\t", "\r"):
                float(cell)  # only a number (a negative change) may start so


def test_coaching_reports_as_csv(site: Site) -> None:
    with _client(site, site.plain) as client:
        sessions = _csv_rows(client.get("/reports/sessions.csv"))
        effect = _csv_rows(client.get("/reports/coaching.csv"))
        page = client.get("/coaching").text
    assert {s["public_id"] for s in sessions} == set(
        re.findall(r'<tr class="\w+" data-session="([^"]+)"', page)
    )
    mine = next(s for s in sessions if s["public_id"] == site.session_id)
    assert (mine["status"], mine["coach"], mine["clips"], mine["driver_id"]) == (
        "open",
        "Sam",
        "1",
        "'" + site.driver_id,
    )
    assert not any("/driver/" in cell for s in sessions for cell in s.values())
    for href in ("/reports/needs-coaching.csv", "/reports/sessions.csv", "/reports/coaching.csv"):
        assert f'href="{href}"' in page
    cli = CliRunner(
        env={"DRIVECOACH_DATABASE_URL": site.engine.url.render_as_string(hide_password=False)}
    ).invoke(app, ["report", "coaching", "--fleet", site.fleet_id, "--format", "json"])
    assert cli.exit_code == 0, cli.output
    expected = json.loads(cli.output)
    assert len(effect) == len(expected) == 1
    for row, want in zip(effect, expected, strict=True):
        assert all(_same(row[k], v) for k, v in want.items()), (row, want)


def test_the_download_button_and_a_csv_link_in_the_browser(browser, site: Site, tmp_path: Path) -> None:
    context = browser.new_context(
        base_url=site.url, viewport={"width": 1280, "height": 760}, accept_downloads=True
    )
    page = context.new_page()
    try:
        page.goto("/login")
        page.fill("input[name=username]", site.plain)
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"{site.url}/")
        page.goto(f"/clips/{site.clip_id}")
        button = page.locator("#evidence")
        assert button.inner_text() == "Download evidence package"
        page.locator("#frame").evaluate("img => img.decode()")
        # Polled from here: Playwright's wait_for_function evals a string, which the console's CSP forbids.
        deadline = time.monotonic() + 120
        while not page.evaluate(
            "() => ['road', 'driver'].every(c => document.getElementById('footage-' + c).readyState >= 2)"
        ):
            assert time.monotonic() < deadline, "the footage did not load"
            time.sleep(0.1)
        shots = ARTIFACTS / "browser"
        shots.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=shots / "14-evidence-export.png")
        with page.expect_download() as info:
            button.click()
        download = info.value
        assert re.fullmatch(r"evidence-.+\.zip", download.suggested_filename)
        saved = tmp_path / download.suggested_filename
        download.save_as(saved)
        with zipfile.ZipFile(saved) as archive:
            listed = json.loads(
                next(archive.read(n) for n in archive.namelist() if n.endswith("/manifest.json"))
            )
            for entry in listed["files"]:
                data = next(archive.read(n) for n in archive.namelist() if n.endswith("/" + entry["name"]))
                assert hashlib.sha256(data).hexdigest() == entry["sha256"]
        assert listed["faces_blurred"] is True and listed["exported_by"] == site.plain
        page.goto("/scores")
        with page.expect_download() as info:
            page.click("#csv-scores")
        scores = info.value
        assert scores.suggested_filename.startswith(f"drivecoach-{site.fleet_id}-scores")
        scores.save_as(tmp_path / "scores.csv")
        header = (tmp_path / "scores.csv").read_text(encoding="utf-8-sig").splitlines()[0]
        assert header.startswith("driver,week,score,change")
    finally:
        context.close()
