"""The web studio in headless Chromium (Debian's `chromium`, driven by Playwright): type a
prompt, watch the text stream in, give a thumbs-up and find it in the log, and make an
image grid."""

from __future__ import annotations

import os
import shutil
import time

import pytest

from aigc import logbook
from aigc.server import Settings

from helpers import LiveServer, never_ending_text

CHROMIUM = os.environ.get("AIGC_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                reason="Debian's chromium is not installed (`make test` installs it as root)")
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def page_url(served_ws):
    with LiveServer(served_ws, Settings(max_tokens=5000)) as server:
        yield server.url


@pytest.fixture()
def page(page_url):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        context = browser.new_context(locale="en-US")
        pg = context.new_page()
        errors = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.goto(page_url)
        yield pg
        browser.close()
        assert not errors, errors


def test_prompt_streams_text_and_thumbs_up_lands_in_the_log(page, served_ws):
    page.select_option("#run-select", "g")
    page.select_option("#cond-box select[data-cond=fruit]", "apple")
    page.fill("#prompt", "apple")
    page.fill("#max-tokens", "60")
    page.fill("#seed", "7")
    page.click("#generate")
    page.wait_for_function("document.querySelector('#output-0') && "
                           "document.querySelector('#output-0').textContent.length > 'apple'.length")
    page.wait_for_selector("#thumb-up-0:not([disabled])", timeout=30_000)
    out = page.text_content("#output-0")
    assert out.startswith("apple") and len(out) > len("apple")
    page.click("#thumb-up-0")
    page.wait_for_selector("#feedback-status-0:has-text('saved')")
    rows = [g for g in logbook.list_generations(served_ws, run="g", limit=20) if g["up"] == 1]
    assert any(out[len("apple"):] == g["output"]["texts"][0] for g in rows)
    page.click("button[data-tab=log]")
    page.wait_for_selector("#log-table tbody tr")
    assert page.locator("#log-table tbody tr td.up", has_text="1").count() >= 1


def test_image_run_shows_a_grid_and_the_page_speaks_chinese(page):
    page.select_option("#run-select", "d")
    page.select_option("#class-select", "top")
    page.fill("#image-n", "4")
    page.fill("#steps", "2")
    page.click("#generate")
    page.wait_for_selector("#image-grid img >> nth=3", timeout=30_000)
    assert page.locator("#image-grid img").count() == 4
    page.click("#lang")
    assert page.text_content("#generate") == "生成" and page.text_content("button[data-tab=log]") == "生成记录"


def test_stop_button_ends_a_stream(page, served_ws, monkeypatch):
    never_ending_text(monkeypatch, served_ws)  # a stream that only the stop button ends
    page.select_option("#run-select", "g")
    page.fill("#prompt", "apple")
    page.fill("#max-tokens", "5000")
    page.fill("#temperature", "1.5")
    page.fill("#seed", "")
    page.click("#generate")
    page.wait_for_function("document.querySelector('#output-0') && "
                           "document.querySelector('#output-0').textContent.length > 5")
    page.click("#stop")
    page.wait_for_selector("#generate:not([disabled])", timeout=10_000)
    assert page.text_content("#stats-0") == "stopped"
    page.wait_for_selector("#thumb-up-0:not([disabled])")  # a stopped output can still be rated
    deadline = time.time() + 10  # the engine drops it at its next step, then writes the row
    while logbook.list_generations(served_ws, run="g", limit=1)[0]["status"] != "cancelled" and time.time() < deadline:
        time.sleep(0.05)
    assert logbook.list_generations(served_ws, run="g", limit=1)[0]["status"] == "cancelled"
