"""One model, one perplexity: a folder with its own corpus is scored on its validation split, in the CLI and the
dashboard alike, and the number matches its model card."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sentinel.data import evaluation_text

ROOT = Path(__file__).resolve().parents[2]
STDLIB = ROOT / "assets" / "models" / "stdlib-gpt2"
STORIES = ROOT / "assets" / "models" / "stories-gpt2"


def card_perplexity(folder: Path) -> float:
    return json.loads((folder / "card_metrics.json").read_text())["validation_perplexity"]


@pytest.mark.parametrize("folder", [STDLIB, STORIES])
def test_folder_with_corpus_picks_its_own_validation_split(folder: Path) -> None:
    text = evaluation_text(folder)
    assert text.own and Path(text.source) == folder / "corpus" / "validation.jsonl"
    assert folder.name in text.name and "validation split" in text.name


def test_chosen_text_wins_and_plain_folder_falls_back_to_bundled(tmp_path: Path) -> None:
    assert evaluation_text(STDLIB, "mine.txt") == type(evaluation_text(None))("mine.txt", "mine.txt", own=False)
    fallback = evaluation_text(tmp_path)
    assert fallback.source is None and not fallback.own and fallback.name == "the bundled validation text"


def test_cli_and_dashboard_give_the_cards_perplexity_for_stdlib() -> None:
    import torch

    from sentinel.models import load_model
    from sentinel.ui.protocol import describe_for, protocol_perplexity

    env_cmd = [sys.executable, "-m", "sentinel", "evaluate", "--model", str(STDLIB), "--json", "--threads", "1",
               "--runs", "1", "--new-tokens", "2", "--prompt-tokens", "8"]
    out = subprocess.run(env_cmd, capture_output=True, text=True, check=True, cwd=ROOT)
    cli = json.loads(out.stdout)
    card = card_perplexity(STDLIB)
    assert round(cli["perplexity"], 2) == round(card, 2)
    assert "stdlib-gpt2's own validation split" in cli["text"]
    torch.set_num_threads(1)
    loaded = load_model(str(STDLIB))
    dash = protocol_perplexity(loaded.model, loaded.tokenizer)
    assert round(dash.perplexity, 2) == round(card, 2)
    assert dash.tokens_evaluated == cli["tokens_evaluated"] and dash.window_length == cli["window_length"]
    assert "stdlib-gpt2's own validation split" in describe_for(loaded.model, dash.tokens_evaluated)
