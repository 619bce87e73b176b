"""A safety manager's path through the console in a real browser (Debian's chromium, driven by Playwright):
sign in, open the review queue, open a clip and play it, correct an event, mark the driver coached, see the events
count in the driver's safety score and follow the score back to the clip, and find the correction in Postgres.
A screenshot of each page is kept under $DRIVECOACH_TEST_ARTIFACTS (default test-artifacts/) for people to look at."""

from __future__ import annotations

import uuid

import pytest
from playwright.sync_api import expect
from sqlalchemy import create_engine, text
from sqlalchemy.orm import sessionmaker

from schemas.prompts import parse_turn1
from streams.settings import Settings
from tests.conftest import ARTIFACTS
from tests.integration.console_data import PASSWORD, running_console, seed_fleet

pytestmark = pytest.mark.integration


def test_manager_reviews_and_corrects_a_clip_in_the_browser(
    browser, own_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    engine = create_engine(own_database_url)
    settings = Settings(home=tmp_path_factory.mktemp("browser"))
    fleet = seed_fleet(sessionmaker(engine), settings, f"fleet-web-{uuid.uuid4().hex[:6]}", clips=4, seed=41)
    shots = ARTIFACTS / "browser"
    shots.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    with running_console(settings, engine) as url:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)

        page.goto(f"{url}/queue")  # not signed in: sent to the sign-in page
        assert "/login" in page.url
        page.fill("input[name=username]", fleet.manager)
        page.fill("input[name=password]", "wrong password")
        page.click("button[type=submit]")
        assert page.get_by_role("alert").inner_text() == "Wrong username or password."
        page.screenshot(path=shots / "1-sign-in.png")
        errors.clear()  # the 401 of that wrong password was the point
        page.fill("input[name=username]", fleet.manager)
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"{url}/queue")  # back where the manager was going
        page.click("text=Dashboard")
        page.wait_for_url(f"{url}/")
        assert page.locator("#events-per-day rect.bar").count() == 28
        assert page.locator("#drivers tbody tr").count() >= 1
        page.screenshot(path=shots / "2-dashboard.png", full_page=True)

        page.click("text=Review queue")
        page.wait_for_url(f"{url}/queue")
        rows = page.locator("table.queue tbody tr")
        assert rows.count() == len(fleet.clips)
        page.screenshot(path=shots / "3-review-queue.png", full_page=True)

        rows.first.locator("a.open-clip").click()
        page.wait_for_url(f"{url}/clips/*")
        clip_id = page.url.rsplit("/", 1)[-1]
        # Locator assertions, not wait_for_function: the page's CSP (rightly) forbids the eval that one needs.
        expect(page.locator("#frame")).to_have_js_property("complete", True)
        assert page.locator("#frame").evaluate("img => img.naturalWidth") > 0
        first = page.get_attribute("#frame", "src")
        page.click("#play")
        expect(page.locator("#frame")).not_to_have_attribute("src", first, timeout=5000)
        page.click("#play")
        assert float(page.get_attribute("#playhead", "x1")) > 0  # the playhead moved along the timeline
        page.screenshot(path=shots / "4-clip.png", full_page=True)

        page.click("summary")  # open the correction form
        row = page.locator("#correct-form tr.event-row").first
        row.locator("select").select_option("distraction")
        row.locator("input[name=event_start]").fill("1")
        row.locator("input[name=event_end]").fill("3.5")
        page.fill("textarea[name=instruction]", "Keep your eyes on the road; glance at mirrors only briefly.")
        page.screenshot(path=shots / "5-correction.png", full_page=True)
        page.click("#action-correct")
        page.wait_for_selector("#done")
        assert "corrected" in page.inner_text("#done")
        assert "distraction" in page.inner_text("#events")
        page.screenshot(path=shots / "6-corrected.png", full_page=True)

        page.click("text=Coaching")  # the corrected events now wait for a conversation with the driver
        page.wait_for_url(f"{url}/coaching")
        page.locator(f'a[href="/clips/{clip_id}"]').click()
        page.click("#action-coached")
        page.wait_for_selector("#done")
        assert "coached" in page.inner_text("#events")
        page.click("text=Coaching")
        assert page.locator(f'a[href="/clips/{clip_id}"]').count() == 0
        page.screenshot(path=shots / "7-coaching.png", full_page=True)

        # The corrected, coached events now count in the driver's safety score: open it and what is behind it.
        page.click("text=Scores")
        page.wait_for_url(f"{url}/scores")
        scored = page.locator("#scores tbody tr").filter(has_text="distraction")
        assert scored.count() >= 1
        score = int(scored.first.locator(".score").inner_text())
        page.screenshot(path=shots / "8-scores.png", full_page=True)
        scored.first.locator("a.explain").click()
        page.wait_for_url(f"{url}/scores/explain**")
        assert page.inner_text("#score") == str(score)
        assert page.inner_text("#formula").endswith(f"= {score}")
        assert "distraction" in page.inner_text("#score-lines")
        page.screenshot(path=shots / "9-score-explained.png", full_page=True)
        page.locator(f'#score-events a[href="/clips/{clip_id}"]').first.click()
        page.wait_for_url(f"{url}/clips/{clip_id}")
        page.close()
    with engine.connect() as conn:
        review = conn.execute(
            text(
                "SELECT r.verdict, r.reviewer, r.corrected_turn1, r.corrected_instruction FROM reviews r "
                "JOIN inferences i ON i.id = r.inference_id WHERE i.clip_id = :c"
            ),
            {"c": clip_id},
        ).one()
        statuses = set(
            conn.execute(
                text(
                    "SELECT e.coaching_status FROM events e JOIN inferences i ON "
                    "i.id = e.inference_id WHERE i.clip_id = :c"
                ),
                {"c": clip_id},
            ).scalars()
        )
    engine.dispose()
    assert review.verdict == "corrected" and review.reviewer == fleet.manager
    assert review.corrected_instruction.startswith("Keep your eyes on the road")
    assert statuses == {"coached"}
    corrected = parse_turn1(review.corrected_turn1).events
    assert ("distraction", 1, 4) in {
        (e.type.value, e.start, e.end) for e in corrected
    }  # whole seconds, as turn 1
    assert errors == [], "\n".join(errors)
    assert all(
        (shots / f).stat().st_size > 5000
        for f in ("2-dashboard.png", "4-clip.png", "6-corrected.png", "7-coaching.png")
    )
