"""The dashboard in a real browser: load, see the map, select two heads, follow the link, prune exactly those
two, reload and still see them pruned, compare text, fine-tune, reload."""

from __future__ import annotations

import re

import pytest

from sentinel.demo.prompts import default_prompts
from sentinel.generation import generate_text
from sentinel.models import load_model
from tests.e2e.harness import (CHART, chart_boxes, click_cell, launch_browser, open_page, pruned_marks,
                               wait_heatmap, wait_idle, wait_pruned_marks)

pytestmark = pytest.mark.browser



def test_dashboard_end_to_end(app_server, artifacts):
    from playwright.sync_api import expect, sync_playwright

    loaded = load_model(None)                        # the bundled model the app opens with
    LAYERS, HEADS = loaded.layout.num_layers, loaded.layout.num_heads
    total = LAYERS * HEADS

    with sync_playwright() as playwright:
        browser = launch_browser(playwright)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(120_000)
        expect.set_options(timeout=120_000)
        chart_warnings: list[str] = []            # Vega-Lite logs its warnings as "WARN ..." on the console
        page.on("console", lambda m: chart_warnings.append(m.text) if m.text.startswith("WARN") else None)

        def shot(name: str) -> None:
            page.screenshot(path=str(artifacts / f"{name}.png"), full_page=True)

        try:
            page.goto(app_server.url)
            page.get_by_role("button", name="Load model").click()
            expect(page.get_by_test_id("stMetricValue").filter(has_text=f"{LAYERS} × {HEADS}")).to_be_visible()
            wait_idle(page)
            shot("01-model")

            open_page(page, "Maps")
            wait_heatmap(page, LAYERS * HEADS)
            wait_idle(page)
            click_cell(page, 1, 2, LAYERS, HEADS)
            selection = page.get_by_test_id("stMultiSelect")
            expect(selection).to_contain_text("L1 H2")
            wait_idle(page)
            click_cell(page, 0, 3, LAYERS, HEADS, shift=True)
            expect(selection).to_contain_text("L0 H3")
            expect(selection).to_contain_text("L1 H2")
            wait_idle(page)
            shot("02-head-maps")
            # the map's grid gets its CELL_HEIGHT rows (Streamlit's default autosize once squeezed it to 83 of
            # 204 pixels), and every chart, the "look inside" grids included, fits the room it is given
            page.wait_for_function("(chart) => [...document.querySelectorAll(chart)]"
                                   ".filter(el => el.querySelector('svg path.background')).length === 3", arg=CHART)
            boxes = chart_boxes(page)
            assert boxes[0]["plot"] >= LAYERS * 25, boxes
            assert len(boxes) == 3 and all(b["plot"] >= 100 and b["drawn"] <= b["room"] + 1 for b in boxes), boxes

            # the link opens Prune in "By my selection" mode with those two heads; Prune prunes exactly them
            page.get_by_role("button", name="Prune the 2 selected heads").click()
            page.wait_for_selector("h1:has-text('Prune')", timeout=60_000)
            wait_heatmap(page, LAYERS * HEADS)
            wait_idle(page)
            assert pruned_marks(page) == 0
            heads_list = page.get_by_test_id("stMultiSelect").first      # then the selected layers' list
            expect(heads_list).to_contain_text("L0 H3")
            expect(heads_list).to_contain_text("L1 H2")
            page.get_by_role("button", name="Prune", exact=True).click()
            wait_pruned_marks(page, 2)
            expect(page.get_by_test_id("stTable")).to_contain_text(f"{total - 2} of {total}")
            wait_idle(page)
            shot("03-prune")
            assert "s=" in page.url                     # the session's steps are in the address

            page.reload()                               # F5: the address brings the same pruned model back
            wait_heatmap(page, LAYERS * HEADS)
            wait_pruned_marks(page, 2)
            expect(page.get_by_test_id("stTable")).to_contain_text(f"{total - 2} of {total}")
            wait_idle(page)
            assert pruned_marks(page) == 2
            shot("03b-prune-after-reload")

            open_page(page, "Compare")
            wait_idle(page)
            page.get_by_role("button", name="Generate").click()
            expect(page.locator("#compare-pruned")).to_be_visible()
            wait_idle(page)
            base_text = page.locator("#compare-base").inner_text()
            pruned_text = page.locator("#compare-pruned").inner_text()
            shot("04-compare")
            # The page's base text is what the library generates with the same settings: nothing made up.
            prompt = default_prompts()[0]                    # the page's default prompt
            expected = generate_text(loaded.model, loaded.tokenizer, prompt, max_new_tokens=40, greedy=True)
            assert _words(base_text) == _words(prompt + " " + expected.text)
            prompt_words = len(_words(prompt))
            assert _words(pruned_text)[:prompt_words] == _words(prompt) and len(_words(pruned_text)) > prompt_words

            open_page(page, "Fine-tune")
            steps = page.get_by_label("Training steps")
            steps.fill("4")
            steps.press("Tab")
            page.get_by_role("button", name="Start fine-tuning").click()
            expect(page.get_by_test_id("stProgress")).to_be_visible()
            shot("05-finetune-running")
            done = page.get_by_text(re.compile(
                r"Fine-tuning for 4 steps: (perplexity (improved|got worse)|no measurable change)"))
            expect(done).to_be_visible(timeout=300_000)
            assert "job=" in page.url
            wait_idle(page)
            shot("06-finetune-done")

            page.reload()                       # the job id in the URL brings the same job back from the store
            expect(done).to_be_visible()
            wait_idle(page)
            assert chart_warnings == []
        except Exception:
            shot("failure")
            raise
        finally:
            browser.close()


def test_prune_by_target_then_export_and_compare(app_server, artifacts):
    """A 50% parameter target over heads and neurons with least-squares recovery: the prediction, Prune, the
    measured figures, Export (GPT-2 cannot express removed heads: the reason is shown), Compare."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = launch_browser(playwright)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(120_000)
        expect.set_options(timeout=120_000)

        def shot(name: str) -> None:
            page.screenshot(path=str(artifacts / f"{name}.png"), full_page=True)

        try:
            page.goto(app_server.url)
            page.get_by_role("button", name="Load model").click()
            wait_idle(page)
            open_page(page, "Prune")
            wait_idle(page)
            page.get_by_text("By a size or FLOPs target").click()
            wait_idle(page)
            slider = page.get_by_test_id("stSlider").filter(has_text="Share to remove").get_by_role("slider")
            slider.focus()
            for _ in range(4):                          # 0.30 -> 0.50 in steps of 0.05
                slider.press("ArrowRight")
            wait_idle(page)
            page.get_by_text("Least squares").click()
            wait_idle(page)
            prediction = page.get_by_test_id("stTable").first
            expect(prediction).to_contain_text("-50.0%")
            expect(page.get_by_text(re.compile(r"Pressing Prune would remove [\d,]+ heads, [\d,]+ neurons"))).to_be_visible()
            shot("07-prune-target-preview")
            predicted = prediction.locator("tr", has_text="Parameters").first.inner_text().split()
            page.get_by_role("button", name="Prune", exact=True).click()
            expect(page.get_by_text("Prefill speed measured")).to_be_visible(timeout=300_000)
            wait_idle(page)
            measured = page.get_by_test_id("stTable").filter(has_text="Prefill speed measured")
            expect(measured).to_contain_text(predicted[2])            # the predicted count, now measured
            shot("08-prune-target-done")
            expect(page.get_by_role("button", name="Export", exact=True)).to_be_disabled()   # refused up front
            expect(page.get_by_text(re.compile("Export is off for this model: a stock gpt2 checkpoint"))).to_be_visible()
            wait_idle(page)
            shot("09-export-refused")
            open_page(page, "Compare")
            wait_idle(page)
            page.get_by_role("button", name="Generate").click()
            expect(page.locator("#compare-pruned")).to_be_visible()
            wait_idle(page)
            shot("10-compare-after-target")
        except Exception:
            shot("failure-target")
            raise
        finally:
            browser.close()


def test_click_two_layer_bars_then_remove_those_layers(app_server, artifacts):
    """Maps → Layers: click a bar, shift-click another (the head map's rules), the list shows both; a click on empty
    space clears; 'Remove the 2 selected layers' → Prune by selection removes exactly those two blocks."""
    from playwright.sync_api import expect, sync_playwright

    loaded = load_model(None)
    blocks = loaded.model.transformer.h                  # the bundled GPT-2's blocks
    expected = sum(p.numel() for p in loaded.model.parameters()) - sum(
        p.numel() for layer in (2, 4) for p in blocks[layer].parameters())
    with sync_playwright() as playwright:
        browser = launch_browser(playwright)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(120_000)
        expect.set_options(timeout=120_000)
        chart_warnings: list[str] = []
        page.on("console", lambda m: chart_warnings.append(m.text) if m.text.startswith("WARN") else None)
        try:
            page.goto(app_server.url)
            page.get_by_role("button", name="Load model").click()
            expect(page.get_by_test_id("stMetricValue").filter(has_text=f"{len(blocks)} × ")).to_be_visible()
            wait_idle(page)
            open_page(page, "Maps")
            wait_heatmap(page, len(blocks))
            wait_idle(page)
            page.get_by_test_id("stButtonGroup").first.get_by_text("Layers", exact=True).click()
            bars = 3 * len(blocks)                         # block, attention and MLP bars per layer
            page.wait_for_function("([c, n]) => document.querySelectorAll(c + ' svg g.mark-rect path').length == n",
                                   arg=[CHART, bars])
            wait_idle(page)
            chosen = page.get_by_test_id("stMultiSelect").first
            _click_layer_bar(page, 2)
            expect(chosen).to_contain_text("Layer 2")
            _click_layer_bar(page, 4, shift=True)
            expect(chosen).to_contain_text("Layer 4")
            expect(chosen).to_contain_text("Layer 2")
            page.get_by_role("button", name="Remove the 2 selected layers").click()
            page.wait_for_selector("h1:has-text('Prune')", timeout=60_000)
            wait_idle(page)
            page.get_by_role("button", name="Prune", exact=True).click()
            expect(page.get_by_test_id("stTable").first).to_contain_text(f"{expected:,}")
            wait_idle(page)
            assert chart_warnings == []
        except Exception:
            page.screenshot(path=str(artifacts / "layers-failure.png"), full_page=True)
            raise
        finally:
            browser.close()


def _click_layer_bar(page, layer: int, shift: bool = False) -> None:
    """Click the whole-block bar of `layer` on the Layers map (the left panel's bars, left to right)."""
    boxes = page.evaluate(
        """(chart) => [...document.querySelectorAll(chart + " svg g.mark-rect path")]
               .filter(p => !(p.parentNode.getAttribute("class") || "").includes("child_layer_0"))   // the red bands
               .map(p => { const b = p.getBoundingClientRect(); return [b.x, b.y, b.width, b.height]; })""", CHART)
    x, y, width, height = sorted(boxes)[layer]             # the block panel is the left-most
    if shift:
        page.keyboard.down("Shift")
    page.mouse.click(x + width / 2, y + height - 2)        # near the base: short bars are still hit
    if shift:
        page.keyboard.up("Shift")
    wait_idle(page)


def _words(text: str) -> list[str]:
    return text.split()
