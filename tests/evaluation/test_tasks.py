"""Task accuracy through lm-eval's HFLM on the in-memory model: the bundled tasks, a removed-heads copy, errors."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest
import torch

from sentinel.errors import MissingDependencyError
from sentinel.evaluation.task_items import (BUNDLED_MODELS_DIR, BUNDLED_TASKS_DIR, CHOICES, ITEMS_FILE,
                                            _sentences, write_bundled_tasks)
from sentinel.evaluation.tasks import TaskError, TaskResult, bundled_task_names, evaluate_tasks, select_tasks
from sentinel.models import load_model

STORIES_TASK = "stories-gpt2-continuation"
LIMIT = 16      # documents per run: enough for a spread, fast on a shared CPU


def _items(task: str) -> list[dict]:
    lines = (BUNDLED_TASKS_DIR / task / ITEMS_FILE).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def _by_metric(results: list[TaskResult]) -> dict[str, TaskResult]:
    return {r.metric: r for r in results}


@pytest.fixture(scope="module")
def stories():
    return load_model(BUNDLED_MODELS_DIR / "stories-gpt2", device="cpu")


def test_bundled_tasks_are_what_the_builder_writes(tmp_path):
    written = write_bundled_tasks(tasks_dir=tmp_path)
    assert sorted(p.name for p in written) == bundled_task_names() == ["stdlib-gpt2-continuation", STORIES_TASK]
    for folder in written:
        for path in folder.iterdir():
            assert path.read_bytes() == (BUNDLED_TASKS_DIR / folder.name / path.name).read_bytes(), path.name


@pytest.mark.parametrize("model, count", [("stories-gpt2", 120), ("stdlib-gpt2", 150)])
def test_items_are_real_held_out_text_within_the_positions(model, count):
    from transformers import AutoTokenizer

    docs = [json.loads(line)["text"] for line in
            (BUNDLED_MODELS_DIR / model / "corpus" / "validation.jsonl").read_text(encoding="utf-8").splitlines()]
    tokenizer = AutoTokenizer.from_pretrained(BUNDLED_MODELS_DIR / model)
    items = _items(f"{model}-continuation")
    assert len(items) == count and len({i["doc"] for i in items}) == count      # one item per document
    assert {i["label"] for i in items} == set(range(CHOICES))          # the answer is not always in one place
    for item in items:
        flat = " ".join(docs[item["doc"]].split())
        truth = item["choices"][item["label"]]
        assert len(set(item["choices"])) == CHOICES
        assert " ".join((item["context"] + " " + truth).split()) in flat     # the true continuation follows
        assert all(" ".join(c.split()) in " ".join(" ".join(d.split()) for d in docs) for c in item["choices"])
        longest = max(len(tokenizer(item["context"] + " " + c)["input_ids"]) for c in item["choices"])
        assert longest <= 256


def test_sentences_split_after_quotes_only_before_a_capital():
    assert _sentences('Tom ran. "Come in!" said Bruno. "Yes!" He sat.') == [
        "Tom ran.", '"Come in!" said Bruno.', '"Yes!"', "He sat."]


def _own_accuracy(model: torch.nn.Module, tokenizer, items: list[dict]) -> float:
    """Independent of lm-eval: argmax over choices of log p(" " + choice | context), summed over its tokens."""
    right = 0
    for item in items:
        start = len(tokenizer(item["context"])["input_ids"])
        rows = [tokenizer(item["context"] + " " + choice)["input_ids"] for choice in item["choices"]]
        width = max(len(r) for r in rows)
        ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])      # right padding: causal, never read
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[:, :-1].double(), dim=-1)   # [choice, pos, vocab]
        scores = [sum(logp[c, t - 1, row[t]].item() for t in range(start, len(row))) for c, row in enumerate(rows)]
        right += int(max(range(CHOICES), key=scores.__getitem__) == item["label"])
    return right / len(items)


def test_dense_stories_model_is_far_above_chance(stories):
    results = _by_metric(evaluate_tasks(stories.model, stories.tokenizer, [STORIES_TASK], limit=LIMIT))
    assert set(results) == {"acc", "acc_norm"}
    acc = results["acc"]
    assert acc.task == STORIES_TASK and acc.n == LIMIT and 0.9 <= acc.value <= 1.0   # chance is 0.25
    assert acc.stderr is not None and acc.stderr >= 0


def test_removed_heads_copy_is_scored_as_it_is_in_memory(stories):
    from sentinel.pruning import apply_plan

    pruned = copy.deepcopy(stories.model)
    apply_plan(pruned, {"heads": {layer: list(range(6)) for layer in range(6)}}, "remove")   # 2 of 8 heads left
    assert pruned.transformer.h[0].attn.c_attn.weight.shape[1] == 3 * 2 * 32                # not a stock shape
    results = _by_metric(evaluate_tasks(pruned, stories.tokenizer, [STORIES_TASK], limit=LIMIT))
    acc = results["acc"]
    assert acc.n == LIMIT and 0.0 < acc.value < 1.0 and acc.stderr is not None and acc.stderr > 0
    assert acc.value == pytest.approx(_own_accuracy(pruned, stories.tokenizer, _items(STORIES_TASK)[:LIMIT]))
    assert pruned.transformer.h[0].attn.c_attn.weight.shape[1] == 192 and not pruned.training


def test_a_task_folder_runs_from_any_working_directory(tmp_path, monkeypatch):
    folder = tmp_path / "copied"
    folder.mkdir()
    for path in (BUNDLED_TASKS_DIR / STORIES_TASK).iterdir():
        if path.is_file():
            (folder / path.name).write_bytes(path.read_bytes())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    selection = select_tasks([str(folder)])
    assert selection.names == [STORIES_TASK] and selection.include_paths == [folder.resolve()]
    assert not selection.standard


def test_missing_lm_eval_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "lm_eval", None)      # import lm_eval now raises ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'sentinel\[eval\]'"):
        select_tasks([STORIES_TASK])


def test_unknown_task_lists_the_bundled_ones():
    with pytest.raises(TaskError, match="Unknown task no_such_task_xyz.*stories-gpt2-continuation"):
        select_tasks(["no_such_task_xyz"])
    with pytest.raises(TaskError, match="does not exist"):
        select_tasks([str(Path("no") / "such" / "folder")])


def test_standard_name_goes_to_lm_eval_unchanged(tiny_lm):
    """arc_easy is lm-eval's own task: offline its data cannot be fetched, and the error says what to do."""
    model, tokenizer = tiny_lm
    selection = select_tasks(["arc_easy"])
    assert selection.names == ["arc_easy"] and selection.standard == ["arc_easy"] and not selection.include_paths
    with pytest.raises(TaskError, match="could not be fetched.*bundled task"):
        evaluate_tasks(model, tokenizer, selection, limit=2)


@pytest.mark.slow
def test_same_numbers_as_lm_evals_own_cli_on_the_model_folder(tmp_path):
    """lm-eval's CLI, in a process that does not import sentinel, on the stock stdlib-gpt2 folder and its task."""
    import os
    import subprocess

    folder, task, limit = BUNDLED_MODELS_DIR / "stdlib-gpt2", "stdlib-gpt2-continuation", 16
    command = [sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args", f"pretrained={folder}",
               "--include_path", str(BUNDLED_TASKS_DIR / task), "--tasks", task, "--limit", str(limit),
               "--batch_size", "8", "--device", "cpu", "--output_path", str(tmp_path / "out")]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run(command, check=True, cwd=tmp_path, env=env, capture_output=True, timeout=600)
    theirs = json.loads(next((tmp_path / "out").rglob("results_*.json")).read_text())["results"][task]
    loaded = load_model(folder, device="cpu")
    ours = _by_metric(evaluate_tasks(loaded.model, loaded.tokenizer, [task], limit=limit, batch_size=8))
    for metric in ("acc", "acc_norm"):
        assert ours[metric].value == pytest.approx(theirs[f"{metric},none"], abs=1e-6)
        assert ours[metric].stderr == pytest.approx(theirs[f"{metric}_stderr,none"], abs=1e-6)
    assert 0.0 < ours["acc"].value < 1.0
