"""Drives the Switchyard console (/ui) in Debian's Chromium, headless, as an operator would:
the overview, a dead letter found and opened, redriven after a preview, a trigger paused and
resumed, a replay previewed. Takes a screenshot of each page into SCREENSHOTS.

Usage: drive.py BASE_URL SCREENSHOTS CHROMIUM
Prints one line per step; exits non-zero (with Playwright's message) at the first that fails.
"""

import sys

from playwright.sync_api import expect, sync_playwright

base, shots, chromium = sys.argv[1], sys.argv[2], sys.argv[3]


def step(what):
    print(what, flush=True)


with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
    page = browser.new_page(viewport={"width": 1280, "height": 760})
    page.set_default_timeout(15_000)
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))

    page.goto(base + "/ui")
    row = page.locator('#triggers tr[data-trigger="orders"]')
    expect(row).to_contain_text("SubscriberFailing")
    page.screenshot(path=f"{shots}/overview.png", full_page=True)
    step("overview: trigger orders is failing")

    row.get_by_role("link", name="1", exact=True).click()
    expect(page.locator("#groups")).to_contain_text("retries exhausted")
    page.wait_for_url("**/ui/deadletters/default?trigger=orders")
    page.screenshot(path=f"{shots}/deadletters.png", full_page=True)
    step("dead letters: grouped by trigger and reason, filter in the URL")

    page.locator("#deadletters tr[data-id] a").first.click()
    timeline = page.locator("#attempts li")
    expect(timeline).to_have_count(2)
    expect(timeline.first).to_contain_text("503")
    expect(page.locator("#event")).to_contain_text("order-1")
    page.screenshot(path=f"{shots}/deadletter.png", full_page=True)
    step("dead letter: the event and both attempts")

    page.locator("#redrive").click()
    expect(page.locator("#redrive-preview")).to_contain_text("order-1")
    page.screenshot(path=f"{shots}/redrive.png", full_page=True)
    page.locator("#redrive-confirm").click()
    expect(page.locator("#redriven")).to_contain_text("Redriven: 1")
    step("redriven after the preview")

    page.goto(base + "/ui/triggers/orders")
    page.locator("#pause").click()
    expect(page.locator("#paused")).to_contain_text("yes, since")
    page.screenshot(path=f"{shots}/trigger-paused.png", full_page=True)
    step("paused")
    page.locator("#resume").click()
    expect(page.locator("#paused")).to_have_text("no")
    step("resumed")

    page.fill('input[name="fromOffset"]', "0")
    page.locator("#preview").click()
    expect(page.locator("#replay-preview")).to_contain_text("1 events to replay")
    page.screenshot(path=f"{shots}/trigger-replay.png", full_page=True)
    step("replay previewed")

    if errors:
        raise SystemExit(f"script errors in the page: {errors}")
    browser.close()
