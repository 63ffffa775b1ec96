"""Drive the real dashboard: start `streamlit run app.py` on a free port, open Debian's Chromium via
Playwright, and read the page the way a user sees it. Shared by tests/e2e and bench/dashboard_latency.py.

Playwright's own browser download is not used (it needs network); Chromium is the system one
(`apt-get install chromium`), path overridable with SENTINEL_CHROMIUM.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("SENTINEL_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
]
CHART = "[data-testid='stVegaLiteChart']"


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class AppServer:
    """A running `streamlit run app.py` process and where to reach it."""

    process: subprocess.Popen
    port: int
    home: Path
    log: Path
    started: float = field(default_factory=time.perf_counter)
    healthy_after: float | None = None      # seconds from the launch to the first ok of /_stcore/health

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        """Stop the server and everything it started (it runs in its own process group)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.is_file() else ""


def start_app(home: Path, log: Path, port: int | None = None, env: dict[str, str] | None = None) -> AppServer:
    """Start the dashboard with its data folder in `home` (and extra environment `env`); returns at once."""
    port = port or free_port()
    env = {**os.environ, "SENTINEL_HOME": str(home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           **(env or {})}
    log.parent.mkdir(parents=True, exist_ok=True)
    handle = open(log, "wb")
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true"],
        cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
    )
    return AppServer(process, port, home, log, started)


def wait_healthy(server: AppServer, timeout: float = 90.0) -> float:
    """Poll /_stcore/health until it answers ok; returns the seconds since the server was started."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"streamlit exited with {server.process.returncode}:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(f"{server.url}/_stcore/health", timeout=2) as reply:
                if reply.status == 200 and reply.read().strip() == b"ok":
                    server.healthy_after = time.perf_counter() - server.started
                    return server.healthy_after
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"/_stcore/health did not answer within {timeout:.0f} s:\n{server.log_tail()}")


def launch_browser(playwright: Any) -> Any:
    """Headless Debian Chromium, background networking off."""
    if not Path(CHROMIUM).is_file():
        raise RuntimeError(f"No Chromium at {CHROMIUM}: install it with `apt-get install -y chromium` "
                           "or point SENTINEL_CHROMIUM at a Chromium binary.")
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)


@contextmanager
def app_page(playwright: Any, home: Path, log: Path, width: int = 1400, height: int = 1000,
             timeout: float = 120.0, env: dict[str, str] | None = None) -> Iterator[tuple[AppServer, Any]]:
    """A fresh dashboard server (data folder `home`, extra environment `env`) and a browser page for it."""
    server = start_app(home, log, env=env)
    browser = None
    try:
        wait_healthy(server)
        browser = launch_browser(playwright)
        page = browser.new_page(viewport={"width": width, "height": height})
        page.set_default_timeout(timeout * 1000)
        yield server, page
    finally:
        if browser is not None:
            browser.close()
        server.stop()


def wait_idle(page: Any, timeout: float = 120.0) -> None:
    """Wait until the app's script run has finished (Streamlit marks it on the app element)."""
    page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']", timeout=timeout * 1000)


def rerun_after(page: Any, action: Callable[[], Any], timeout: float = 300.0) -> None:
    """Do `action` (a click, a key press) and wait until the script run it starts has finished.

    Plain `wait_idle` right after a click can see the previous run's idle state before the new run
    begins; this watches the app element for the run to start, then waits for it to end.
    """
    page.evaluate(
        """() => {
            const app = document.querySelector("[data-testid='stApp']");
            window.__sentinelRuns = 0;
            if (window.__sentinelWatch) window.__sentinelWatch.disconnect();
            window.__sentinelWatch = new MutationObserver(() => {
                if (app.dataset.testScriptState !== "notRunning") window.__sentinelRuns += 1;
            });
            window.__sentinelWatch.observe(app, {attributes: true, attributeFilter: ["data-test-script-state"]});
        }"""
    )
    action()
    page.wait_for_function(
        """() => window.__sentinelRuns > 0 && document.querySelector("[data-testid='stApp']")
                                                  .dataset.testScriptState === "notRunning" """,
        timeout=timeout * 1000,
    )
    wait_idle(page, timeout)


def wait_heatmap(page: Any, cells: int, timeout: float = 120.0) -> None:
    """Wait until a heat map with at least `cells` drawn cells is on the page."""
    page.wait_for_function(
        """([chart, cells]) => {
            const svg = document.querySelector(chart + " svg");
            return !!svg && svg.querySelectorAll("g.mark-rect path").length >= cells;
        }""",
        arg=[CHART, cells], timeout=timeout * 1000,
    )


def pruned_marks(page: Any) -> int:
    """How many ✕ (pruned head) marks the heat map shows."""
    return page.evaluate(
        """(chart) => [...document.querySelectorAll(chart + " svg g.mark-text text")]
                      .filter(t => t.textContent === "✕").length""",
        CHART,
    )


def wait_pruned_marks(page: Any, count: int, timeout: float = 120.0) -> None:
    """Wait until the heat map shows exactly `count` ✕ marks."""
    page.wait_for_function(
        """([chart, count]) => [...document.querySelectorAll(chart + " svg g.mark-text text")]
                               .filter(t => t.textContent === "✕").length === count""",
        arg=[CHART, count], timeout=timeout * 1000,
    )


def chart_boxes(page: Any) -> list[dict[str, float]]:
    """Each chart on the page, in page order: `plot` (its first plotting area's height, the heat map's grid),
    `drawn` (the drawing's width) and `room` (the width of the element holding it), in CSS pixels."""
    return page.evaluate(
        """(chart) => [...document.querySelectorAll(chart)].map(el => {
            const svg = el.querySelector("svg"), plot = el.querySelector("svg path.background");
            return {plot: plot ? plot.getBoundingClientRect().height : 0,
                    drawn: svg ? svg.getBoundingClientRect().width : 0,
                    room: el.parentElement.getBoundingClientRect().width};
        })""",
        CHART,
    )


def click_cell(page: Any, layer: int, head: int, layers: int, heads: int, shift: bool = False) -> None:
    """Click the heat-map cell of (layer, head), optionally with shift held."""
    frame = page.locator(f"{CHART} svg path.background").first.bounding_box()
    x = frame["x"] + (head + 0.5) * frame["width"] / heads
    y = frame["y"] + (layer + 0.5) * frame["height"] / layers
    if shift:
        page.keyboard.down("Shift")
    page.mouse.click(x, y)
    if shift:
        page.keyboard.up("Shift")


def open_page(page: Any, title: str) -> None:
    """Go to a dashboard page through the sidebar navigation, like a user."""
    page.locator("[data-testid='stSidebarNav'] a", has_text=title).first.click()
    page.wait_for_selector(f"h1:has-text('{title}')", timeout=60_000)
