"""Issue 17: how the explorer feels in a browser — page loads, a step change, and the player's frame rate.

Starts `streamlit run app/main.py` on the built-in runs, drives Debian's Chromium with Playwright at
1280x800 (a projector, sidebar open) and measures, `--repeats` times each, interleaved:

- `first_view_s`: from `streamlit run` to the Tour's first figure (once: it includes the server's start);
- `page_load_s[page]`: from navigation to the page's last figure drawn and the script idle;
- `step_redraw_ms`: one step change in the Denoising player (a slider key press), from the key to the
  sphere, table and charts redrawn — in the browser, no server round trip;
- `play_fps`: frames the player draws per second while playing (its target is 6: slow enough to narrate);
- `step_to_url_s`: from Pause to the step in the address bar (the one server round trip the step makes);
- `page_load_cold_s[page]`: the first visit of each page in a fresh server (the Tour's run already open): what a
  class meets once per lesson, when every cache of the page is empty;
- `cold_switch_s[run]`: from choosing a built-in run in the sidebar, on the Tour, to its first chapter drawn, the
  first time that run is opened in a fresh server (`--cold-repeats` servers; the run the Tour opens with is timed
  in a second server that opens on another run first).

Medians go to results/app_bench.json, with the machine's load average, since 2 shared cores make every
figure noisy. Not a test: the targets (first view < 60 s, a cold switch <= 10 s, every page <= 5 s, >= 5 fps) are
read here, not asserted.

    python benchmarks/app_bench.py --repeats 5 --cold-repeats 3
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
PAGES = {"tour": "", "denoising": "denoising", "interests": "interests", "training": "training",
         "steps": "steps", "what_if": "what_if", "results": "results"}
IDLE = ("!document.querySelector('[data-testid=\"stStatusWidgetRunningIcon\"]')"
        " && !document.querySelector('[data-testid=\"stStatusWidgetRunningManIcon\"]')")


DEFAULT_RUNS = ROOT / "app" / "default_runs"


def start_server() -> tuple[subprocess.Popen, str, float]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "DIMEREC_RUNS": tempfile.mkdtemp(prefix="app-bench-runs-")}  # the built-in runs only
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.headless", "true",
                             "--server.port", str(port), "--browser.gatherUsageStats", "false"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=1).read() == b"ok":
                return proc, url, started
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("streamlit did not answer within 60 s")


def player_frame(page, timeout_s: float = 90):
    """The Denoising player's frame, once its sphere and frames are drawn (tests/test_app_browser waits with it too,
    so the benchmark times the same "drawn" the tests check)."""
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        for frame in page.frames:
            if "dimerec_player" in frame.url:
                try:
                    if frame.evaluate("document.body.dataset.frames !== undefined"):
                        return frame
                except Exception:  # still loading
                    pass
        page.wait_for_timeout(50)
    raise TimeoutError(f"the Denoising player did not draw its sphere within {timeout_s:.0f} s")


def load_page(page, url: str, path: str) -> float:
    """Seconds from navigation to the page drawn and idle (the player's sphere on Denoising)."""
    start = time.perf_counter()
    page.goto(f"{url}/{path}")
    page.wait_for_selector("h1", timeout=90_000)
    if path == "denoising":
        player_frame(page)
    elif path != "results":
        page.wait_for_selector('[data-testid="stPlotlyChart"] .main-svg', timeout=90_000)
    page.wait_for_function(IDLE, timeout=90_000)
    return time.perf_counter() - start


def step_redraw_ms(frame) -> float:
    """One slider key press: from the key to the next animation frame after every view is redrawn."""
    return frame.evaluate("""async () => {
        const slider = document.getElementById('slider');
        const before = Number(document.body.dataset.frames);
        const start = performance.now();
        slider.focus();
        slider.value = String(Math.max(0, Number(slider.value) - 1));
        slider.dispatchEvent(new Event('input'));
        while (Number(document.body.dataset.frames) === before) await new Promise(r => setTimeout(r, 1));
        await new Promise(r => requestAnimationFrame(r));
        return performance.now() - start;
    }""")


def play_fps(frame, seconds: float = 3.0) -> float:
    before = int(frame.evaluate("document.body.dataset.frames"))
    frame.locator("#play").click()
    start = time.perf_counter()
    frame.page.wait_for_timeout(seconds * 1000)
    drawn = int(frame.evaluate("document.body.dataset.frames")) - before
    elapsed = time.perf_counter() - start
    return drawn / elapsed


def step_to_url_s(page, frame) -> float:
    start = time.perf_counter()
    frame.locator("#play").click()  # pause
    step = frame.evaluate("document.body.dataset.step")
    page.wait_for_function(f"location.search.includes('step={step}')", timeout=60_000)
    return time.perf_counter() - start


def builtin_runs() -> dict[str, str]:
    """Each built-in run's id -> what the sidebar says of it once it is open ("This run: dimerec on planted")."""
    sys.path.insert(0, str(ROOT))
    from app.runs import read_config, run_summary

    return {f"default/{p.name}": run_summary(read_config(p))
            for p in sorted(DEFAULT_RUNS.iterdir()) if (p / "config.json").is_file()}


def switch_run(page, run_id: str, summary: str) -> float:
    """Seconds from choosing `run_id` in the sidebar to its page drawn and idle: the sidebar names the new run
    (written after the run is loaded and its preset users chosen), a figure is drawn, the script is idle."""
    box = page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').filter(has_text="Run")
    box.click()
    option = page.get_by_role("option", name=f"{run_id.split('/', 1)[1]} (built-in)", exact=True)
    start = time.perf_counter()
    option.click()
    page.wait_for_function(f"[...document.querySelectorAll('[data-testid=\"stSidebar\"] p')]"
                           f".some(p => p.innerText.startsWith('This run: ' + {json.dumps(summary)} + ' ·'))",
                           timeout=300_000)
    page.wait_for_selector('[data-testid="stPlotlyChart"] .main-svg', timeout=300_000)
    page.wait_for_function(IDLE, timeout=300_000)
    return time.perf_counter() - start


def cold_switches(p, repeats: int) -> dict[str, list[float]]:
    """The first switch to each built-in run, in fresh servers: one opens on the default run and switches to each
    other; a second opens on another run and switches to the default one."""
    summaries = builtin_runs()
    default = "default/dimerec-planted"
    others = [r for r in summaries if r != default]
    out: dict[str, list[float]] = {r: [] for r in summaries}
    for _ in range(repeats):
        for opening, targets in ((default, others), (others[0], [default])):
            proc, url, _ = start_server()
            try:
                browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                            args=["--no-sandbox", "--disable-gpu"])
                page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
                page.goto(f"{url}/?run={opening}")
                page.wait_for_selector('[data-testid="stPlotlyChart"] .main-svg', timeout=300_000)
                page.wait_for_function(IDLE, timeout=300_000)
                for run_id in targets:
                    out[run_id].append(switch_run(page, run_id, summaries[run_id]))
                    print(f"cold switch to {run_id}: {out[run_id][-1]:.1f} s", flush=True)
                browser.close()
            finally:
                proc.terminate()
                proc.wait(timeout=20)
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cold-repeats", type=int, default=3, help="fresh servers for the cold switches (0: none)")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "app_bench.json")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    proc, url, started = start_server()
    samples: dict[str, list[float]] = {"step_redraw_ms": [], "play_fps": [], "step_to_url_s": []}
    loads: dict[str, list[float]] = {name: [] for name in PAGES}
    loads_before = os.getloadavg()
    switches: dict[str, list[float]] = {}
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                        args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
            page.goto(url)
            page.wait_for_selector('[data-testid="stPlotlyChart"] .main-svg', timeout=120_000)
            first_view = time.perf_counter() - started
            for _ in range(args.repeats):  # every page once per round: the rounds interleave
                for name, path in PAGES.items():
                    loads[name].append(load_page(page, url, path))
                print("page loads (s):", {k: round(v[-1], 1) for k, v in loads.items()}, flush=True)
                load_page(page, url, "denoising")
                frame = player_frame(page)
                for _ in range(5):
                    samples["step_redraw_ms"].append(step_redraw_ms(frame))
                samples["play_fps"].append(play_fps(frame))
                samples["step_to_url_s"].append(step_to_url_s(page, frame))
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    if args.cold_repeats:
        with sync_playwright() as p:
            switches = cold_switches(p, args.cold_repeats)
    result = {
        "what": "the explorer in headless Chromium at 1280x800 on the built-in runs (benchmarks/app_bench.py)",
        "machine": f"{os.cpu_count()} cores, no GPU; load average {loads_before[0]:.1f} at the start",
        "repeats": args.repeats,
        "first_view_s": round(first_view, 2),
        "page_load_s": {name: round(statistics.median(v), 2) for name, v in loads.items()},
        "page_load_cold_s": {name: round(v[0], 2) for name, v in loads.items()},
        "cold_switch_s": {name: round(statistics.median(v), 2) for name, v in switches.items()},
        "step_redraw_ms": round(statistics.median(samples["step_redraw_ms"]), 1),
        "play_fps": round(statistics.median(samples["play_fps"]), 2),
        "play_fps_target": 6,
        "step_to_url_s": round(statistics.median(samples["step_to_url_s"]), 2),
        "all": {**{k: [round(x, 3) for x in v] for k, v in samples.items()},
                "page_load_s": {k: [round(x, 2) for x in v] for k, v in loads.items()},
                "cold_switch_s": {k: [round(x, 2) for x in v] for k, v in switches.items()}},
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "all"}, indent=2))
    return result


if __name__ == "__main__":
    main()
