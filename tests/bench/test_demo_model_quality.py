"""bench/demo_model_quality.py cannot rot: it measures a toy story model end to end and renders its tables."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

from sentinel.demo.build import DemoBuildConfig, build_demo_model

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "demo_model_quality.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("demo_model_quality", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    folder = tmp_path_factory.mktemp("quality") / "stories-gpt2"
    build_demo_model(DemoBuildConfig(
        out_dir=str(folder), corpus="stories", stories_train=150, stories_validation=12, vocab_size=400, n_layer=2,
        n_head=2, n_embd=16, n_positions=128, batch_size=2, max_steps=2, warmup_steps=1, eval_every=2, log_every=1,
        write_card=False,
    ))
    bench = _load_script()
    measured = bench.evaluate_model(folder, seed=0, finetune_steps=2)
    measured["measured"] = {"date": "today", "machine": "test", "command": "pytest"}
    return bench, measured


def test_every_state_is_measured(report):
    _, r = report
    assert r["layers_x_heads"] == [2, 2] and r["unseen_tokens"] > 1000
    for state in ("base", "random_50", "random_50_finetuned"):
        assert math.isfinite(r[state]["validation_perplexity"]) and math.isfinite(r[state]["unseen_perplexity"])
        assert len(r[state]["text"]["continuations"]) == 10
    assert r["pruned"]["random_50"]["heads_removed"] == 2 and r["pruned"]["gradient_30"]["heads_removed"] == 1
    assert [s["prompt"] for s in r["samples"]] == r["prompts"][:5]
    assert set(r["samples"][0]) == {"prompt", "base", "gradient_30", "gradient_50", "random_30", "random_50",
                                    "random_50_finetuned"}


def test_tables_render_the_measured_numbers(report):
    bench, r = report
    table = bench.measures_table([r])
    assert f"{r['base']['validation_perplexity']:.2f}" in table and f"{r['unigram_perplexity']:.2f}" in table
    section = bench.card_section([r], "stories-gpt2")
    assert "2 fine-tuning steps" in section and r["prompts"][0] in section
    assert len(bench.unseen_documents()) > 100
