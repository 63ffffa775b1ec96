"""Take the README's dashboard screenshots from the running app: python -m tests.e2e.screenshots [--out docs/images]

Starts the app on the bundled model with an empty data folder and walks it like a user: Maps (heads with two
selected, then neurons and layers), Prune (the selection pruned, then a size target's prediction), Weights,
Fine-tune, Compare and Experiments, saving one PNG per view. It writes only the files named in SHOTS (and says
which); every step waits for what it needs on the page, not for a fixed time.
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from sentinel.models import load_model
from tests.e2e.harness import (CHART, ROOT, app_page, click_cell, open_page, rerun_after, wait_heatmap, wait_idle,
                               wait_pruned_marks)

# The files this script owns, each with the viewport height its view needs (Streamlit scrolls inside its
# own pane, so a full-page screenshot would cut the page at the window; a taller window shows it all).
SHOTS = {
    "dashboard-head-maps.png": 1900,
    "dashboard-maps-neurons.png": 1300,
    "dashboard-maps-layers.png": 1000,
    "dashboard-prune.png": 1750,
    "dashboard-prune-target.png": 1600,
    "dashboard-weights.png": 1300,
    "dashboard-finetune.png": 1050,
    "dashboard-compare.png": 1050,
    "dashboard-experiments.png": 1900,
}
WIDTH, HEIGHT = 1440, 1050


def settle(page: Any) -> None:
    """Wait until the charts have redrawn for the window's size: every chart's size is the same on two checks
    in a row, 250 ms apart (Vega redraws a chart asynchronously after a resize)."""
    page.wait_for_function(
        """(chart) => {
            const sizes = [...document.querySelectorAll(chart + " svg")].map(svg => {
                const box = svg.getBoundingClientRect();
                return `${Math.round(box.width)}x${Math.round(box.height)}`;
            }).join(",") + "|" + document.body.scrollHeight;
            const same = window.__sentinelSizes === sizes;
            window.__sentinelSizes = sizes;
            return same;
        }""",
        arg=CHART, polling=250,
    )


def snap(page: Any, out: Path, name: str) -> None:
    """Screenshot the current view as `name` (one of SHOTS) at its height, then restore the window."""
    page.set_viewport_size({"width": WIDTH, "height": SHOTS[name]})
    page.mouse.move(0, 0)                 # no tooltip from the last control the pointer rested on or focused
    page.evaluate("document.activeElement && document.activeElement.blur()")
    settle(page)
    wait_idle(page)
    page.wait_for_selector("[data-testid='stToast']", state="detached")     # toasts fade by themselves
    page.screenshot(path=str(out / name))
    page.set_viewport_size({"width": WIDTH, "height": HEIGHT})
    settle(page)
    print(f"  {out / name}", flush=True)


def step(text: str, started: float) -> None:
    print(f"[{time.perf_counter() - started:5.0f} s] {text}", flush=True)


def choose_units(page: Any, label: str) -> None:
    """Pick `label` in the Maps page's Units control and wait for the view it draws (a chart)."""
    rerun_after(page, lambda: page.locator("[data-testid='stButtonGroup'] button", has_text=label).first.click())
    page.wait_for_selector(f"{CHART} svg", state="attached")


def main() -> None:
    from playwright.sync_api import expect, sync_playwright

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "images"))
    parser.add_argument("--steps", type=int, default=10, help="fine-tuning steps for the Fine-tune screenshot")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    layout = load_model(None).layout
    layers, heads = layout.num_layers, layout.num_heads
    total = layers * heads
    log = ROOT / "test-artifacts" / "screenshots.log"
    started = time.perf_counter()
    print(f"Writing {len(SHOTS)} screenshots to {out}:", flush=True)
    with tempfile.TemporaryDirectory() as home, sync_playwright() as playwright, app_page(
            playwright, Path(home), log, width=WIDTH, height=HEIGHT, timeout=120) as (server, page):
        expect.set_options(timeout=120_000)
        try:
            step("Maps: the head map, two heads selected", started)
            page.goto(f"{server.url}/head_maps")
            wait_heatmap(page, total)
            wait_idle(page)
            selection = page.get_by_test_id("stMultiSelect")
            rerun_after(page, lambda: click_cell(page, 2, 5, layers, heads))
            expect(selection).to_contain_text("L2 H5")
            rerun_after(page, lambda: click_cell(page, 4, 1, layers, heads, shift=True))
            expect(selection).to_contain_text("L4 H1")
            expect(selection).to_contain_text("L2 H5")
            snap(page, out, "dashboard-head-maps.png")        # the map, the list and "look inside a head"

            step("Maps: MLP neurons", started)
            choose_units(page, "MLP neurons")
            snap(page, out, "dashboard-maps-neurons.png")
            step("Maps: layers", started)
            choose_units(page, "Layers")
            snap(page, out, "dashboard-maps-layers.png")
            step("Maps: back to heads", started)
            choose_units(page, "Attention heads")
            wait_heatmap(page, total)
            expect(selection).to_contain_text("L4 H1")        # the selection survived the other views

            step("Prune: the 2 selected heads", started)
            page.get_by_role("button", name="Prune the 2 selected heads").click()     # opens the Prune page
            page.wait_for_selector("h1:has-text('Prune')")
            wait_heatmap(page, total)
            wait_idle(page)
            rerun_after(page, lambda: page.get_by_role("button", name="Prune", exact=True).click())
            wait_pruned_marks(page, 2)
            prune_how = page.get_by_test_id("stRadio").filter(has_text="Choose what to prune")
            expect(page.get_by_test_id("stTable")).to_contain_text(f"{total - 2} of {total}")
            rerun_after(page, lambda: prune_how.get_by_text(re.compile("by strategy and ratio", re.I)).click())
            expect(page.get_by_text("Preview (dashed orange on the map)")).to_be_visible()
            snap(page, out, "dashboard-prune.png")

            step("Prune: a size target's prediction", started)
            rerun_after(page, lambda: prune_how.get_by_text(re.compile("size or FLOPs target", re.I)).click())
            expect(page.get_by_text(re.compile(r"Pressing Prune would remove"))).to_be_visible()
            wait_idle(page)
            snap(page, out, "dashboard-prune-target.png")

            step("Weights: sparsify a copy", started)
            open_page(page, "Weights")
            wait_idle(page)
            rerun_after(page, lambda: page.get_by_role("button", name="Sparsify a copy").click())
            expect(page.get_by_test_id("stTable").first).to_be_visible(timeout=300_000)
            snap(page, out, "dashboard-weights.png")

            step("Fine-tune: a short run", started)
            open_page(page, "Fine-tune")
            wait_idle(page)
            steps = page.get_by_label("Training steps")
            steps.fill(str(args.steps))
            steps.press("Tab")                     # inside the settings form: no run until the form is submitted
            page.get_by_role("button", name="Start fine-tuning").click()
            expect(page.get_by_text(re.compile(r"Fine-tuning for \d+ steps: (perplexity|no measurable change)"))).to_be_visible(timeout=600_000)
            wait_idle(page)
            rerun_after(page, lambda: page.get_by_role("button", name="Use the fine-tuned model").click())
            expect(page.get_by_text("The fine-tuned model is this session's 'after' model")).to_be_visible()
            page.get_by_test_id("stProgress").scroll_into_view_if_needed()
            snap(page, out, "dashboard-finetune.png")

            step("Compare: generate", started)
            open_page(page, "Compare")
            wait_idle(page)
            rerun_after(page, lambda: page.get_by_role("button", name="Generate").click())
            expect(page.locator("#compare-tuned")).to_be_visible()
            page.locator("#compare-base").scroll_into_view_if_needed()
            page.mouse.wheel(0, -250)
            snap(page, out, "dashboard-compare.png")

            step("Experiments", started)
            open_page(page, "Experiments")
            wait_idle(page)
            expect(page.get_by_test_id("stDataFrame").first).to_be_visible()
            page.wait_for_selector(f"{CHART} svg", state="attached")          # the runs' curves
            snap(page, out, "dashboard-experiments.png")
        except Exception:
            page.screenshot(path=str(ROOT / "test-artifacts" / "screenshots-failure.png"))
            print(f"Failed; the page at that moment: {ROOT / 'test-artifacts' / 'screenshots-failure.png'}, "
                  f"the server's log: {log}")
            raise
    print(f"Done in {time.perf_counter() - started:.0f} s.")


if __name__ == "__main__":
    main()
