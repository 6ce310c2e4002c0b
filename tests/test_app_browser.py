"""The app in a real browser: `streamlit run app/main.py` driven by Playwright and Debian's Chromium.

Opens every page, moves the step slider, checks that no exception or error box appears, and saves
a screenshot of each page in test-artifacts/. Skips when /usr/bin/chromium is missing, fails
instead when $CI is set.
"""
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
PAGES = [  # (url path, title, plotly charts expected)
    ("", "DimeRec in five steps", 1),
    ("denoising", "Denoising on the sphere", 2),
    ("interests", "Interests", 2),
    ("training", "Training", 2),
    ("steps", "Steps", 1),
    ("what_if", "What if", 3),
    ("results", "Paper vs ours", 0),
]
TOUR_HEADINGS = ["GEM: the history becomes K interest vectors", "Noise on the sphere",
                 "Denoising: from a random point to the next interest", "Retrieval: the items nearest to x_0"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium) for the browser test"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DIMEREC_RUNS": str(ROOT / "test-artifacts" / "no-runs")}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.headless", "true",
                             "--server.port", str(port), "--browser.gatherUsageStats", "false"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=1).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.2)
            if proc.poll() is not None:
                pytest.fail(f"streamlit exited: {proc.stdout.read().decode()[-2000:]}")
        else:
            pytest.fail("streamlit did not answer within 60 s")
        yield url, start
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1440, "height": 2000})
        yield context.new_page()
        browser.close()


def _wait_until_idle(page, charts: int, timeout_ms: int = 60_000) -> None:
    """Wait for the page's figures, then for the script to finish running."""
    page.wait_for_function(f"document.querySelectorAll('[data-testid=\"stPlotlyChart\"] .main-svg').length >= {charts}",
                           timeout=timeout_ms)
    page.wait_for_function("!document.querySelector('[data-testid=\"stStatusWidgetRunningIcon\"]')"
                           " && !document.querySelector('[data-testid=\"stStatusWidgetRunningManIcon\"]')",
                           timeout=timeout_ms)
    page.wait_for_timeout(800)


def _assert_no_errors(page, name: str) -> None:
    exceptions = page.locator('[data-testid="stException"]')
    errors = page.locator('[data-testid="stAlertContentError"]')
    assert exceptions.count() == 0, f"{name}: exception shown: {exceptions.first.inner_text()[:500]}"
    assert errors.count() == 0, f"{name}: error shown: {errors.first.inner_text()[:500]}"


def test_every_page_renders_and_the_step_slider_moves(server, page):
    from playwright.sync_api import expect

    url, start = server
    ARTIFACTS.mkdir(exist_ok=True)
    for old in ARTIFACTS.glob("page-*.png"):
        old.unlink()
    for path, title, charts in PAGES:
        page.goto(f"{url}/{path}")
        page.get_by_role("heading", name=title).first.wait_for(timeout=60_000)
        _wait_until_idle(page, charts)
        if path == "":
            first_view = time.perf_counter() - start
            (ARTIFACTS / "first-view-seconds.txt").write_text(f"{first_view:.1f}\n")
            assert first_view < 60, f"first view took {first_view:.0f} s after `streamlit run`"
        _assert_no_errors(page, title)
        page.screenshot(path=str(ARTIFACTS / f"page-{path or 'tour'}.png"), full_page=True)
        if path == "":  # every chapter of the tour, through its Next button
            for chapter, heading in enumerate(TOUR_HEADINGS, start=2):
                page.get_by_role("button", name="Next →").click()
                page.get_by_role("heading", name=heading).wait_for(timeout=30_000)
                _wait_until_idle(page, 0 if chapter == 5 else 1)
                _assert_no_errors(page, f"tour chapter {chapter}")
                page.screenshot(path=str(ARTIFACTS / f"page-tour-{chapter}.png"), full_page=True)
        if path == "what_if":  # add the most popular items of the chosen category
            page.get_by_role("button", name="Add").nth(1).click()
            page.get_by_text("edited; the model keeps").wait_for(timeout=30_000)
            _wait_until_idle(page, charts)
            _assert_no_errors(page, "what if after an edit")
            assert page.get_by_text("Nothing is edited yet").count() == 0  # tables are canvases: AppTest checks them
            page.screenshot(path=str(ARTIFACTS / "page-what_if-edited.png"), full_page=True)
        if path == "denoising":
            assert "step=20" in page.url and "user=" in page.url and "run=" in page.url
            page.get_by_text("After 20 of 20 reverse steps").wait_for()
            thumb = page.locator('[data-testid="stSlider"]').filter(has_text="Reverse step").get_by_role("slider")
            for step in range(19, 4, -1):  # one key at a time: a rerun may re-create the thumb and drop focus
                thumb.press("ArrowLeft")
                expect(thumb).to_have_value(str(step), timeout=30_000)
            page.get_by_text("After 5 of 20 reverse steps").wait_for(timeout=30_000)
            _wait_until_idle(page, charts)
            _assert_no_errors(page, "denoising after moving the slider")
            assert "step=5" in page.url
            page.screenshot(path=str(ARTIFACTS / "page-denoising-step5.png"), full_page=True)
            play = page.locator('[data-testid="stCheckbox"]').filter(has_text="Play")
            play.click()
            page.get_by_text("After 7 of 20 reverse steps").wait_for(timeout=30_000)  # it plays on its own
            play.click()
            _wait_until_idle(page, charts)
            _assert_no_errors(page, "denoising after play and pause")


def test_a_link_with_an_unknown_user_shows_an_error_not_a_traceback(server, page):
    url, _ = server
    page.goto(f"{url}/denoising?run=default/dimerec-planted&user=999999")
    page.get_by_role("heading", name="Denoising on the sphere").first.wait_for(timeout=60_000)
    error = page.locator('[data-testid="stAlertContentError"]')
    error.first.wait_for(timeout=30_000)
    assert "999999" in error.first.inner_text() and "not a held-out user" in error.first.inner_text()
    assert page.locator('[data-testid="stException"]').count() == 0
