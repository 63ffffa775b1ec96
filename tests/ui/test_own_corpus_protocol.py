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


def test_a_pruned_copy_is_scored_on_its_bases_split(tmp_path: Path) -> None:
    """A saved pruned model (and a copy of that copy) carries its base's held-out split, so the CLI, the dashboard
    and every job copy score it on the same text as the base — not on the bundled stories text."""
    from sentinel.models import load_model, save_model
    from sentinel.pruning import mask_heads
    from sentinel.ui.protocol import describe_for, protocol_perplexity

    loaded = load_model(str(STDLIB))
    base = protocol_perplexity(loaded.model, loaded.tokenizer)
    mask_heads(loaded.model, {0: [0, 1]})
    pruned = protocol_perplexity(loaded.model, loaded.tokenizer)
    first = save_model(loaded.model, loaded.tokenizer, tmp_path / "pruned")
    second_model = load_model(str(first))
    second = save_model(second_model.model, second_model.tokenizer, tmp_path / "copy")
    text = evaluation_text(second)
    assert text.own and text.name.startswith("stdlib-gpt2's own validation split")
    assert (second / "corpus" / "validation.jsonl").read_bytes() == (STDLIB / "corpus" / "validation.jsonl").read_bytes()
    again = load_model(str(second))
    measured = protocol_perplexity(again.model, again.tokenizer)
    assert measured.tokens_evaluated == base.tokens_evaluated and measured.perplexity == pytest.approx(pruned.perplexity, rel=1e-5)
    assert measured.perplexity != pytest.approx(base.perplexity, rel=1e-4)       # the prune is visible, on that text
    assert "stdlib-gpt2's own validation split" in describe_for(again.model)


def test_a_damaged_origin_file_is_a_clear_error(tmp_path: Path) -> None:
    from sentinel.data import carry_own_text
    from sentinel.errors import DataError

    assert carry_own_text(STORIES, tmp_path) and evaluation_text(tmp_path).name.startswith("stories-gpt2's")
    (tmp_path / "corpus" / "origin.json").write_text("{}")
    with pytest.raises(DataError, match="does not name the model"):
        evaluation_text(tmp_path)
