"""`sentinel evaluate --tasks`: a task folder and a bundled task in the JSON and the text, one-line exit-2 errors."""

from __future__ import annotations

import json
import shutil
import sys

import pytest

from sentinel.cli import main
from sentinel.evaluation.task_items import ITEMS_FILE, write_continuation_task
from tests.conftest import TINY_TEXTS

FAST = ["--seq-len", "32", "--runs", "1", "--new-tokens", "4", "--device", "cpu"]


@pytest.fixture
def task_folder(tiny_lm_dir, tmp_path):
    """A 6-item task built by the bundled tasks' builder from a tiny corpus, with the tiny model's tokenizer."""
    source = tmp_path / "tiny-with-corpus"
    shutil.copytree(tiny_lm_dir, source)
    (source / "corpus").mkdir()
    sentences = sorted(set(TINY_TEXTS))
    docs = [" ".join(sentences[i:] + sentences[:i]) for i in range(len(sentences))] * 2
    (source / "corpus" / "validation.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs[:6]))
    return write_continuation_task(source, tmp_path / "my-task", name="my_task")


def test_task_folder_results_in_json_and_text(tiny_lm_dir, task_folder, tmp_path, monkeypatch, capsys):
    text = tmp_path / "doc.txt"
    text.write_text(" ".join(TINY_TEXTS))
    monkeypatch.chdir(tmp_path)             # the folder's items are found beside its YAML, not in the cwd
    argv = ["evaluate", "--model", str(tiny_lm_dir), "--text", str(text), *FAST, "--tasks", str(task_folder)]
    assert main([*argv, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    items = len((task_folder / ITEMS_FILE).read_text().splitlines())
    assert items == 6
    tasks = {t["metric"]: t for t in result["tasks"]}
    assert set(tasks) == {"acc", "acc_norm"}
    assert all(t["task"] == "my_task" and t["n"] == items and 0 <= t["value"] <= 1 and t["stderr"] is not None
               for t in tasks.values())
    assert result["perplexity"] > 1                       # the usual numbers are still there
    assert main(argv) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("task ")]
    assert len(lines) == 2 and lines[0].startswith("task        my_task: acc ") and "s.e. (n=6)" in lines[0]


def test_bundled_task_by_name_with_a_limit(tiny_lm_dir, tmp_path, capsys):
    text = tmp_path / "doc.txt"
    text.write_text(" ".join(TINY_TEXTS))
    assert main(["evaluate", "--model", str(tiny_lm_dir), "--text", str(text), *FAST, "--json",
                 "--tasks", "stories-gpt2-continuation", "--task-limit", "3"]) == 0
    tasks = json.loads(capsys.readouterr().out)["tasks"]
    assert [(t["task"], t["metric"], t["n"]) for t in tasks] == [
        ("stories-gpt2-continuation", "acc", 3), ("stories-gpt2-continuation", "acc_norm", 3)]


@pytest.mark.parametrize("extra, words", [
    (["--tasks", "stories-gpt2-continuation", "--task-limit", "0"], "--task-limit must be at least 1"),
    (["--task-limit", "5"], "--task-limit applies to --tasks"),
    (["--tasks", "no/such/folder"], "does not exist"),
])
def test_bad_task_arguments_exit_2(tiny_lm_dir, extra, words, capsys):
    assert main(["evaluate", "--model", str(tiny_lm_dir), "--device", "cpu", *extra]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: ") and words in last


def test_missing_lm_eval_is_one_line_with_the_install_command(tiny_lm_dir, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "lm_eval", None)
    assert main(["evaluate", "--model", str(tiny_lm_dir), "--tasks", "stories-gpt2-continuation"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "pip install 'sentinel[eval]'" in err[0]
