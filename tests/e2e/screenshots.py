"""Take the README's dashboard screenshots from the running app: python -m tests.e2e.screenshots [--out docs/images]

Starts the app on the bundled model with an empty data folder, walks Head maps → Prune → Fine-tune →
Compare like a user, and saves one PNG per page.
"""

from __future__ import annotations

import argparse
import re
import tempfile
from pathlib import Path

from sentinel.models import load_model
from tests.e2e.harness import ROOT, app_page, click_cell, open_page, wait_heatmap, wait_idle, wait_pruned_marks


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
    log = ROOT / "test-artifacts" / "screenshots.log"
    with tempfile.TemporaryDirectory() as home, sync_playwright() as playwright, app_page(
            playwright, Path(home), log, width=1440, height=1050, timeout=300) as (server, page):
        expect.set_options(timeout=300_000)
        page.goto(f"{server.url}/head_maps")
        wait_heatmap(page, layers * heads)
        wait_idle(page)
        click_cell(page, 2, 5, layers, heads)
        wait_idle(page)
        click_cell(page, 4, 1, layers, heads, shift=True)
        expect(page.get_by_test_id("stMultiSelect")).to_contain_text("L4 H1")
        wait_idle(page)
        page.set_viewport_size({"width": 1440, "height": 1900})   # the map, the list and "look inside a head"
        page.wait_for_timeout(1000)
        page.screenshot(path=str(out / "dashboard-head-maps.png"))
        page.set_viewport_size({"width": 1440, "height": 1050})

        page.get_by_role("button", name="Prune the 2 selected heads").click()
        page.wait_for_selector("h1:has-text('Prune')", timeout=60_000)
        wait_heatmap(page, layers * heads)
        wait_idle(page)
        page.get_by_role("button", name="Prune", exact=True).click()
        total = layers * heads
        wait_pruned_marks(page, 2)
        expect(page.get_by_test_id("stTable")).to_contain_text(f"{total - 2} of {total}")
        wait_idle(page)
        page.get_by_text("By strategy and ratio", exact=True).first.click()   # the preview of the next step
        expect(page.get_by_text("Preview (dashed orange on the map)")).to_be_visible()
        wait_idle(page)
        page.wait_for_timeout(4000)          # let the toast fade
        page.set_viewport_size({"width": 1440, "height": 1750})   # Streamlit scrolls inside its own pane
        page.wait_for_timeout(1000)
        page.screenshot(path=str(out / "dashboard-prune.png"))
        page.set_viewport_size({"width": 1440, "height": 1050})

        open_page(page, "Fine-tune")
        steps = page.get_by_label("Training steps")
        steps.fill(str(args.steps))
        steps.press("Tab")
        page.get_by_role("button", name="Start fine-tuning").click()
        judged = re.compile(r"Fine-tuning for \d+ steps: (perplexity|no measurable change)")
        expect(page.get_by_text(judged)).to_be_visible()
        wait_idle(page)
        page.get_by_role("button", name="Use the fine-tuned model").click()
        expect(page.get_by_text("The fine-tuned model is this session's 'after' model")).to_be_visible()
        wait_idle(page)
        page.get_by_test_id("stProgress").scroll_into_view_if_needed()
        page.wait_for_timeout(500)
        page.screenshot(path=str(out / "dashboard-finetune.png"))

        open_page(page, "Compare")
        page.get_by_role("button", name="Generate").click()
        expect(page.locator("#compare-tuned")).to_be_visible()
        wait_idle(page)
        page.locator("#compare-base").scroll_into_view_if_needed()
        page.mouse.wheel(0, -250)
        page.wait_for_timeout(500)
        page.screenshot(path=str(out / "dashboard-compare.png"))
    print(f"Screenshots in {out}")


if __name__ == "__main__":
    main()
