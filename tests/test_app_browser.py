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

from benchmarks.app_bench import IDLE, player_frame

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
PAGES = [  # (url path, title, plotly charts expected outside the player)
    ("", "DimeRec in five steps", 1),
    ("denoising", "Denoising on the sphere", 0),
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
def browser(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def page(browser):
    """A tall page: full-page screenshots of every page."""
    return browser.new_context(viewport={"width": 1440, "height": 2000}).new_page()


@pytest.fixture(scope="module")
def projector_page(browser):
    """A projector: 1280x800, the sidebar open (Streamlit's default at this width)."""
    return browser.new_context(viewport={"width": 1280, "height": 800}).new_page()


def _wait_until_idle(page, charts: int, timeout_ms: int = 60_000) -> None:
    """Wait for the page's figures, then for the script to finish running."""
    page.wait_for_function(f"document.querySelectorAll('[data-testid=\"stPlotlyChart\"] .main-svg').length >= {charts}",
                           timeout=timeout_ms)
    page.wait_for_function(IDLE, timeout=timeout_ms)
    page.wait_for_timeout(800)


def _new_player(page, old, timeout_s: float = 60):
    """The player that replaces `old` after a run or user switch (each run and user gets its own iframe)."""
    deadline = time.perf_counter() + timeout_s
    while not old.is_detached():
        assert time.perf_counter() < deadline, "the old player was not replaced"
        page.wait_for_timeout(100)
    # while the rerun runs, Streamlit may mount the component once more before the new data arrives (seen on a
    # user switch): the player is the one that stays, drawn, with the script idle
    while True:
        frame = player_frame(page, timeout_s)
        page.wait_for_function(IDLE, timeout=timeout_s * 1000)
        page.wait_for_timeout(1000)
        if not frame.is_detached():
            return frame
        assert time.perf_counter() < deadline, "no player stayed after the switch"


def _assert_no_errors(page, name: str) -> None:
    exceptions = page.locator('[data-testid="stException"]')
    errors = page.locator('[data-testid="stAlertContentError"]')
    assert exceptions.count() == 0, f"{name}: exception shown: {exceptions.first.inner_text()[:500]}"
    assert errors.count() == 0, f"{name}: error shown: {errors.first.inner_text()[:500]}"


def test_every_page_renders_and_the_step_slider_moves(server, page):

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
                _wait_until_idle(page, 0 if chapter in (4, 5) else 1)
                if chapter == 4:
                    player_frame(page, 60)
                if chapter == 5:  # the references are computed once per run, behind a spinner
                    page.get_by_text("Beside it, on the same test users").wait_for(timeout=60_000)
                _assert_no_errors(page, f"tour chapter {chapter}")
                page.screenshot(path=str(ARTIFACTS / f"page-tour-{chapter}.png"), full_page=True)
        if path == "what_if":  # add the most popular items of the chosen category
            page.get_by_role("button", name="Add").nth(1).click()
            page.get_by_text("edited; the model keeps").wait_for(timeout=30_000)
            _wait_until_idle(page, charts)
            _assert_no_errors(page, "what if after an edit")
            assert page.get_by_text("Nothing is edited yet").count() == 0  # tables are canvases: AppTest checks them
            page.screenshot(path=str(ARTIFACTS / "page-what_if-edited.png"), full_page=True)
        if path == "denoising":  # the page writes its view into the address bar once its script has run
            for _ in range(300):
                if "step=20" in page.url:
                    break
                page.wait_for_timeout(100)
            assert "step=20" in page.url and "user=" in page.url and "run=" in page.url
            frame = player_frame(page, 60)
            assert frame.locator("#heading").inner_text().startswith("After 20 of 20 reverse steps")


def test_a_link_with_an_unknown_user_shows_an_error_not_a_traceback(server, page):
    url, _ = server
    page.goto(f"{url}/denoising?run=default/dimerec-planted&user=999999")
    page.get_by_role("heading", name="Denoising on the sphere").first.wait_for(timeout=60_000)
    error = page.locator('[data-testid="stAlertContentError"]')
    error.first.wait_for(timeout=30_000)
    assert "999999" in error.first.inner_text() and "not a held-out user" in error.first.inner_text()
    assert page.locator('[data-testid="stException"]').count() == 0


# ---- the projector layout and the player, at 1280x800 with the sidebar open --------------------------------------

def _sphere_box(frame) -> dict:
    """The sphere's plot area in page pixels (the player draws the globe over the whole of #sphere)."""
    return frame.locator("#sphere").bounding_box()  # Playwright gives a frame's boxes in the page's viewport


def _shown_step(frame) -> tuple[int, int, int]:
    """The step as the slider, the label and the heading show it."""
    slider = int(frame.locator("#slider").input_value())
    label = int(frame.locator("#step-label").inner_text().split()[1])
    heading = int(frame.locator("#heading").inner_text().split()[1])
    return slider, label, heading


def _url_user(url: str) -> str:
    return url.split("user=")[1].split("&")[0]


def _url_step(page) -> int:
    return int(page.url.split("step=")[1].split("&")[0])


@pytest.mark.parametrize("projector", [False, True])
def test_the_sphere_fits_a_projector_with_the_sidebar_open(server, projector_page, projector):
    url, _ = server
    page = projector_page
    page.goto(f"{url}/denoising" + ("?projector=1" if projector else ""))
    frame = player_frame(page, 60)
    assert page.locator('[data-testid="stSidebar"]').bounding_box()["width"] > 200  # the sidebar is open
    box = _sphere_box(frame)
    assert box["width"] >= 560, box
    assert box["x"] >= 0 and box["y"] >= 0 and box["x"] + box["width"] <= 1280 and box["y"] + box["height"] <= 800, box
    play = frame.locator("#play").bounding_box()
    assert 0 <= play["y"] < box["y"]  # the step control sits above the sphere, on the same screen
    if projector:
        sizes = frame.evaluate("[...document.querySelectorAll('#sphere text, #ranks text, #angles text')]"
                               ".map(t => parseFloat(getComputedStyle(t).fontSize))")
        assert sizes and min(sizes) >= 16, sorted(sizes)[:5]
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"projector-denoising{'-big' if projector else ''}.png"))


def test_the_results_tables_fit_a_projector_with_the_sidebar_open(server, projector_page):
    """Paper vs ours at 1280x800 with the sidebar open: the committed tables with the most columns (dimerec's
    twelve, diffusion's, Table 1's) fit the page; none runs past the screen's right edge."""
    url, _ = server
    page = projector_page
    for experiment in ("dimerec", "diffusion", "table1"):
        page.goto(f"{url}/results?experiment={experiment}&dataset=ml-1m")
        page.get_by_role("heading", name=f"{experiment} on ml-1m").wait_for(timeout=60_000)
        page.wait_for_function(IDLE, timeout=60_000)
        widths = page.evaluate("[...document.querySelectorAll('[data-testid=\"stMain\"] table')]"
                               ".filter(t => t.offsetParent)"
                               ".map(t => [t.scrollWidth, t.clientWidth, t.getBoundingClientRect().right])")
        assert widths and all(scroll <= client + 1 and right <= 1280 for scroll, client, right in widths), \
            (experiment, widths)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "projector-results.png"))


def test_play_runs_in_the_browser_and_every_view_agrees_after_pause_run_and_user_switch(server, projector_page):
    url, _ = server
    page = projector_page
    sent: list[str] = []  # what the browser sends the server (Streamlit's one websocket): reruns, widget values
    page.on("websocket", lambda ws: ws.on("framesent", lambda payload: sent.append(payload)))
    page.goto(f"{url}/denoising")
    frame = player_frame(page, 60)
    assert _shown_step(frame) == (20, 20, 20) and _url_step(page) == 20
    page.wait_for_function(IDLE, timeout=60_000)
    before, quiet = int(frame.evaluate("document.body.dataset.frames")), len(sent)
    frame.locator("#play").click()
    # five frames drawn while playing (a state, not a sleep: a loaded machine draws them later, not fewer), every step
    # shown in turn from the first, and not one message to the server: the frames are already in the browser
    frame.wait_for_function(f"Number(document.body.dataset.frames) >= {before + 5}", timeout=30_000)
    assert frame.evaluate("document.body.dataset.playing") == "1"
    assert 4 <= _shown_step(frame)[0] <= 20, _shown_step(frame)  # played 0, 1, 2, ... on from the last step
    assert len(sent) == quiet, "playing sent messages to the server"
    frame.locator("#play").click()  # pause
    paused = _shown_step(frame)
    assert paused[0] == paused[1] == paused[2]
    page.wait_for_function(f"location.search.includes('step={paused[0]}')", timeout=30_000)
    assert _shown_step(frame) == paused  # the rerun that took the step into the URL left the player alone
    assert len(sent) > quiet  # the pause reported its step: the listener hears what the browser sends

    run_box = page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').filter(has_text="Run")
    for label in ("dimerec-nodiff-planted", "dimerec-planted (built-in)"):  # to a run without a chain, and back
        run_box.click()
        page.get_by_role("option", name=label, exact=False).first.click()
        page.wait_for_function(f"location.search.includes('{label.split()[0]}')", timeout=60_000)
    frame = _new_player(page, frame)
    assert _shown_step(frame) == paused and _url_step(page) == paused[0]

    user_box = page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').filter(has_text="User")
    before, first_user_line = page.url, frame.locator("#rank-line").inner_text()
    user_box.click()  # the list is virtual and redrawn while it opens: pick by keyboard, not by its elements
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Enter")
    page.wait_for_function(f"location.href !== {before!r} && !location.search.includes('user={_url_user(before)}&')"
                           f" && !location.search.endsWith('user={_url_user(before)}')", timeout=60_000)
    frame = _new_player(page, frame)
    assert _shown_step(frame) == paused and _url_step(page) == paused[0]
    assert frame.locator("#rank-line").inner_text() != first_user_line  # the new user's own chain is shown
    slider = frame.locator("#slider")
    slider.focus()
    slider.press("ArrowRight" if paused[0] == 0 else "ArrowLeft")
    moved = 1 if paused[0] == 0 else paused[0] - 1
    assert _shown_step(frame) == (moved, moved, moved), (_shown_step(frame), paused, page.url)
    page.wait_for_function(f"location.search.includes('step={moved}')", timeout=30_000)


# ---- Tour chapters 3 and 4 on a projector, and the mouse wheel over a globe (issue 30) -----------------------------

def _first_screen(box: dict) -> bool:
    return box["x"] >= 0 and box["y"] >= 0 and box["x"] + box["width"] <= 1280 and box["y"] + box["height"] <= 800


def _tour_globe(page, url: str, chapter: int, projector: bool):
    """Chapter 3's or 4's globe: (its box, its step control's box, the frame that holds it, the globe's selector)."""
    page.goto(f"{url}/?chapter={chapter}" + ("&projector=1" if projector else ""))
    if chapter == 4:
        frame = player_frame(page, 60)
        return _sphere_box(frame), frame.locator("#bar").bounding_box(), frame, "#sphere"
    globe = ".st-key-tour_forward .js-plotly-plot"
    page.wait_for_selector(globe, timeout=60_000)
    _wait_until_idle(page, 2)
    slider = page.locator('[data-testid="stSlider"]').filter(has_text="Noise step t")
    return page.locator(globe).bounding_box(), slider.bounding_box(), page, globe


def _camera(frame, globe: str) -> dict:
    """Where the globe's camera is now (the live 3-D camera, not the layout it started from)."""
    return frame.evaluate(f"document.querySelector({globe!r})._fullLayout.scene._scene.getCamera().eye")


@pytest.mark.parametrize("projector", [False, True])
@pytest.mark.parametrize("chapter", [3, 4])
def test_tour_globes_fit_the_first_screen_with_their_step_control(server, projector_page, chapter, projector):
    url, _ = server
    globe, control, _, _ = _tour_globe(projector_page, url, chapter, projector)
    assert projector_page.locator('[data-testid="stSidebar"]').bounding_box()["width"] > 200  # the sidebar is open
    assert _first_screen(globe) and _first_screen(control), (globe, control)
    assert globe["width"] >= 500, globe
    ARTIFACTS.mkdir(exist_ok=True)
    projector_page.screenshot(path=str(ARTIFACTS / f"projector-tour-{chapter}{'-big' if projector else ''}.png"))


@pytest.mark.parametrize("chapter", [3, 4])
def test_the_wheel_over_a_globe_scrolls_the_page_and_leaves_its_zoom(server, projector_page, chapter):
    url, _ = server
    page = projector_page
    box, _, frame, globe = _tour_globe(page, url, chapter, False)
    before = _camera(frame, globe)
    main = page.locator('[data-testid="stMain"]')
    scrolled = main.evaluate("e => e.scrollTop")
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.wheel(0, 300)
    page.wait_for_timeout(800)
    assert _camera(frame, globe) == before
    assert main.evaluate("e => e.scrollTop") > scrolled  # the page moved instead
    if chapter == 4:  # the globe zooms by its buttons instead
        frame.locator("#zoom-in").click()
        page.wait_for_timeout(500)
        after = _camera(frame, globe)
        assert sum(v * v for v in after.values()) < sum(v * v for v in before.values())
