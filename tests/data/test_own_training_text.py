"""A model folder's own train split: read (gzipped) within the size limit, carried into copies, and the default
training text of `sentinel finetune` and the dashboard, so neither trains a model on another model's text."""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

import pytest

from sentinel.data import finetune_text_sources, load_file_texts, load_texts, own_training_text
from sentinel.demo.build import load_corpus_split
from sentinel.errors import DataError

ROOT = Path(__file__).resolve().parents[2]
STDLIB = ROOT / "assets" / "models" / "stdlib-gpt2"


def test_a_gzipped_jsonl_file_reads_as_its_documents():
    train = STDLIB / "corpus" / "train.jsonl.gz"
    assert load_texts(str(train)) == load_corpus_split(STDLIB, "train")


def test_a_small_gzip_that_expands_past_the_limit_is_refused_unread(tmp_path):
    bomb = tmp_path / "big.jsonl.gz"
    bomb.write_bytes(gzip.compress(json.dumps({"text": "a" * 3_000_000}).encode()))
    assert bomb.stat().st_size < 100_000
    with pytest.raises(DataError, match="uncompressed"):
        load_file_texts(bomb, max_bytes=1_000_000)


def test_a_damaged_gzip_is_a_clear_error(tmp_path):
    broken = tmp_path / "train.jsonl.gz"
    broken.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="not a readable gzip file"):
        load_texts(str(broken))


def test_the_default_fine_tune_texts_are_the_folders_own_splits(tmp_path):
    text, validation = finetune_text_sources(STDLIB)
    assert text == str(STDLIB / "corpus" / "train.jsonl.gz")
    assert validation == str(STDLIB / "corpus" / "validation.jsonl")
    assert finetune_text_sources(STDLIB, "mine.txt") == ("mine.txt", None)        # a chosen text wins
    assert finetune_text_sources(None) == (None, None)                              # the bundled corpus
    assert own_training_text(tmp_path) is None and finetune_text_sources(tmp_path) == (None, None)


def test_sentinel_finetune_defaults_to_the_models_own_train_split(tmp_path):
    from sentinel.commands.finetune import build_job, register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["finetune", "--model", str(STDLIB), "--steps", "1", "--out", str(tmp_path / "out")])
    job = build_job(args)
    assert job.text == str(STDLIB / "corpus" / "train.jsonl.gz")
    assert job.validation_text == str(STDLIB / "corpus" / "validation.jsonl")


def test_calibration_defaults_to_the_models_own_train_split(tmp_path):
    from sentinel.data import calibration_text_for

    assert calibration_text_for(STDLIB) == str(STDLIB / "corpus" / "train.jsonl.gz")
    assert calibration_text_for(STDLIB, "bundled:validation") == "bundled:validation"
    assert calibration_text_for(tmp_path) == calibration_text_for(None) == "bundled:train"


def test_sentinel_sparsify_scores_a_model_on_its_own_validation_split(tmp_path, capsys):
    from sentinel.cli import main

    code = main(["sparsify", "--model", str(STDLIB), "--method", "l1", "--sparsity", "0.3", "--eval-tokens", "512",
                 "--out", str(tmp_path / "out"), "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert Path(result["evaluation"]["text"]) == STDLIB / "corpus" / "validation.jsonl"


def test_a_gzipped_split_streams_into_token_blocks_like_its_documents():
    from sentinel.data import load_text_blocks
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(STDLIB)
    train = STDLIB / "corpus" / "train.jsonl.gz"
    blocks = load_text_blocks(tokenizer, str(train), block_size=64, max_tokens=640)
    assert blocks.num_tokens == 640 and len(blocks.input_ids) == 10
