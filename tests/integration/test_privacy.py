"""Faces blurred in what the console shows (issue 18, item 3), over real HTTP on real in-cabin footage from
../shared/videos: the clip's stacked frames built by the real clip builder from a road and a driver upload, the
served frames and driver footage checked with the detector itself and by how much detail is left in the face; the
view_unblurred permission, refused without it, audited with it; the page in a real browser."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import sessionmaker

from schemas.messages import DetectedEvent
from schemas.taxonomy import EventType, View
from streams.console.auth import add_manager
from streams.console.privacy import detect_faces
from streams.inference.sink import write_result
from streams.infra.blobs import LocalBlobStore
from streams.settings import Settings
from tests.conftest import ARTIFACTS
from tests.integration.console_data import (
    PASSWORD,
    REAL_DRIVER,
    model_answer,
    real_footage_clip,
    running_console,
    sign_in,
)

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Site:
    url: str
    fleet_id: str
    clip_id: str
    plain: str  # a manager without view_unblurred
    trusted: str  # one with it
    frames: np.ndarray  # the clip's stacked frames as stored (what the model sees)
    driver_top: int
    driver_video: Path
    database_url: str


@pytest.fixture(scope="module")
def site(
    own_database_url: str, shared_videos: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    engine = create_engine(own_database_url)
    factory = sessionmaker(engine)
    settings = Settings(home=tmp_path_factory.mktemp("privacy"))
    blobs = LocalBlobStore(settings.blobs)
    fleet = f"fleet-priv-{uuid.uuid4().hex[:6]}"
    clip, built = real_footage_clip(fleet, f"{fleet}-drv", blobs, shared_videos)
    assert built.driver_top is not None
    phone = [DetectedEvent(type=EventType.PHONE_USE, view=View.DRIVER, start=0.5, end=3.5)]
    write_result(
        factory,
        clip=clip,
        result=model_answer(clip.clip_id, phone, "Keep both hands on the wheel.", "model-privacy"),
    )
    plain, trusted = f"plain@{fleet}", f"trusted@{fleet}"
    with factory() as session, session.begin():
        add_manager(session, username=plain, fleet_id=fleet, password=PASSWORD)
        add_manager(session, username=trusted, fleet_id=fleet, password=PASSWORD, view_unblurred=True)
    with running_console(settings, engine) as url:
        yield Site(
            url,
            fleet,
            clip.clip_id,
            plain,
            trusted,
            built.frames,
            built.driver_top,
            shared_videos / REAL_DRIVER,
            own_database_url,
        )
    engine.dispose()


@contextmanager
def _client(site: Site, who: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=site.url, timeout=180) as client:
        sign_in(client, who)
        yield client


def _jpeg(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _detail(image: np.ndarray) -> float:
    return float(cv2.Laplacian(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())


def _core(box: tuple[int, int, int, int]) -> tuple[slice, slice]:
    """The middle half of a detected (grown) face box: eyes, nose, mouth, away from the blur's edges."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    return slice(y0 + h // 4, y1 - h // 4), slice(x0 + w // 4, x1 - w // 4)


def _audit(site: Site) -> list[tuple[str, str, str]]:
    engine = create_engine(site.database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text("""SELECT username, action, detail->>'what' FROM audit_log
                        WHERE fleet_id = :fleet AND action = 'unblurred_view' ORDER BY id"""),
                {"fleet": site.fleet_id},
            ).all()
    finally:
        engine.dispose()
    return [tuple(r) for r in rows]


def test_the_served_frames_blur_the_face_and_keep_the_road(site: Site) -> None:
    views = site.frames[:, site.driver_top :]
    faces = [detect_faces(view) for view in views]
    assert sum(bool(f) for f in faces) >= 0.8 * len(views), (
        "the real driver's face is found in the stored frames"
    )
    with _client(site, site.plain) as client:
        served = [_jpeg(client.get(f"/clips/{site.clip_id}/frames/{i}").content) for i in range(len(views))]
    for index, (image, boxes) in enumerate(zip(served, faces, strict=True)):
        driver = image[site.driver_top :]
        assert detect_faces(driver) == [], f"a face is still found in served frame {index}"
        for box in boxes:
            rows, cols = _core(box)
            before, after = _detail(views[index][rows, cols]), _detail(driver[rows, cols])
            assert after < 0.1 * before, f"frame {index}: the face keeps {after / before:.0%} of its detail"
        road = image[: site.driver_top].astype(int) - site.frames[index, : site.driver_top].astype(int)
        assert np.abs(road).mean() < 4  # the road view as stored, but for JPEG's error


def test_the_driver_footage_is_served_blurred(site: Site, tmp_path: Path) -> None:
    with _client(site, site.plain) as client:
        served = client.get(f"/clips/{site.clip_id}/footage/driver/0")
    # The upload is H.264 in MP4, which a browser plays: without blurring it was served as it is.
    assert served.status_code == 200 and served.headers["content-type"] == "video/webm"
    path = tmp_path / "driver.webm"
    path.write_bytes(served.content)

    def frames(video: Path) -> list[np.ndarray]:
        cap, out = cv2.VideoCapture(str(video)), []
        while True:
            ok, frame = cap.read()
            if not ok:
                cap.release()
                return out
            out.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))

    original, blurred = frames(site.driver_video), frames(path)
    assert len(blurred) == len(original) and blurred[0].shape == original[0].shape  # its own size and frames
    found = [detect_faces(f) for f in original[::10]]
    assert sum(bool(f) for f in found) >= 0.8 * len(found)
    assert not any(detect_faces(f) for f in blurred[::10]), "a face is still found in the served footage"
    for boxes, image in zip(found, blurred[::10], strict=True):
        for box in boxes:
            rows, cols = _core(box)
            assert _detail(image[rows, cols]) < 0.1 * _detail(original[0][rows, cols]) + 1.0


@pytest.mark.attack("idor")
def test_unblurred_is_refused_without_the_permission(site: Site) -> None:
    before = _audit(site)
    with _client(site, site.plain) as client:
        for url in (
            f"/clips/{site.clip_id}/frames/0?unblurred=1",
            f"/clips/{site.clip_id}/footage/driver/0?unblurred=1",
            f"/api/v1/clips/{site.clip_id}/footage?unblurred=1",
            f"/clips/{site.clip_id}?unblurred=1",
        ):
            assert client.get(url).status_code == 403, url
        page = client.get(f"/clips/{site.clip_id}")
        assert "Faces in the driver view are blurred" in page.text and "?unblurred=1" not in page.text
    assert _audit(site) == before


def test_a_permitted_manager_sees_the_original_and_each_view_is_audited(site: Site) -> None:
    before = len(_audit(site))
    with _client(site, site.trusted) as client:
        page = client.get(f"/clips/{site.clip_id}")
        assert 'id="unblur"' in page.text and len(_audit(site)) == before  # offered, not yet used
        shown = client.get(f"/clips/{site.clip_id}?unblurred=1")
        assert shown.status_code == 200 and "shown unblurred" in shown.text
        frame = _jpeg(client.get(f"/clips/{site.clip_id}/frames/3?unblurred=1").content)
        assert np.abs(frame.astype(int) - site.frames[3].astype(int)).mean() < 4  # the stored frame itself
        plan = client.get(f"/api/v1/clips/{site.clip_id}/footage?unblurred=1").json()
        url = plan["cameras"]["driver"][0]["url"]
        original = client.get(url)
        assert original.content == site.driver_video.read_bytes()  # the upload as it is
        client.get(f"/clips/{site.clip_id}?unblurred=1")  # a second look: a second entry
    entries = _audit(site)[before:]
    assert entries == [(site.trusted, "unblurred_view", "clip page")] * 2, entries


def test_the_drivers_own_link_shows_the_face_blurred(browser, site: Site) -> None:
    with _client(site, site.plain) as manager:
        csrf = sign_in(manager, site.plain)
        accepted = manager.post(
            f"/clips/{site.clip_id}/review", data={"csrf_token": csrf, "action": "accept"}
        )
        assert accepted.status_code == 303
        made = manager.post(
            "/coaching/sessions",
            data={
                "csrf_token": csrf,
                "driver": f"{site.fleet_id}-drv",
                "coach": "Sam",
                "due_on": str(date.today() + timedelta(days=3)),
                "notes": "",
                "clip": [site.clip_id],
            },
        )
        assert made.status_code == 303, made.text
        link = re.search(r'<a class="driver-link" href="([^"]+)"', manager.get("/coaching").text)
    assert link is not None
    with httpx.Client(base_url=site.url, timeout=180) as driver:  # no account
        page = driver.get(link.group(1))
        frame = re.search(r'src="(/driver/[^"]+/frames/)0"', page.text)
        assert frame is not None
        for index in range(0, len(site.frames), 4):
            image = _jpeg(driver.get(f"{frame.group(1)}{index}").content)
            assert detect_faces(site.frames[index, site.driver_top :]), "the stored frame shows the face"
            assert detect_faces(image[site.driver_top :]) == [], f"the driver's link shows the face ({index})"
    context = browser.new_context(base_url=site.url, viewport={"width": 1100, "height": 900})
    page = context.new_page()
    try:  # the page a driver opens from the link, as the README shows it
        page.goto(link.group(1))
        page.locator("img.driver-frame").evaluate("img => img.decode()")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "driver-link.png"), full_page=True)
    finally:
        context.close()


def test_the_clip_page_offers_unblurred_only_to_the_permitted(browser, site: Site) -> None:
    context = browser.new_context(base_url=site.url, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    try:
        page.goto("/login")
        page.fill("input[name=username]", site.trusted)
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.goto(f"/clips/{site.clip_id}")
        assert "blurred" in page.locator("#privacy").inner_text()
        page.click("#unblur")
        page.wait_for_url(f"**/clips/{site.clip_id}?unblurred=1")
        assert "shown unblurred" in page.locator("#privacy").inner_text()
        assert page.locator("#frame").get_attribute("src", timeout=5000).endswith("?unblurred=1")
        page.goto(f"/clips/{site.clip_id}")
        page.locator("#frame").evaluate("img => img.decode()")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.locator("#player").screenshot(path=str(ARTIFACTS / "privacy-blurred.png"))
    finally:
        context.close()
