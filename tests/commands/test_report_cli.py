"""`sentinel report`: one self-contained HTML review whose numbers are `sentinel evaluate`'s; bad input is one
line and exit 2; a file Sentinel did not write is never overwritten."""

from __future__ import annotations

import json
import re

import pytest

from sentinel.cli import main
from sentinel.models import load_model, save_model
from sentinel.pruning import remove_heads


@pytest.fixture(scope="module")
def pruned_copy(tmp_path_factory):
    loaded = load_model(None)
    remove_heads(loaded.model, {0: [0, 1, 2], 3: [4, 5]})
    return save_model(loaded.model, loaded.tokenizer, tmp_path_factory.mktemp("review") / "pruned")


def test_report_holds_the_verdict_generations_and_evaluates_numbers(pruned_copy, tmp_path, capsys):
    out = tmp_path / "report.html"
    code = main(["report", "--model", str(pruned_copy), "--out", str(out), "--speed-rounds", "2",
                 "--max-perplexity-increase", "0.5", "--min-size-reduction", "0.5", "--min-speedup", "1.0",
                 "--prompt", "Once upon a time, there was a little", "--json"])
    assert code == 0
    review = json.loads(capsys.readouterr().out)
    page = out.read_text(encoding="utf-8")
    # self-contained: no script, no stylesheet or image fetched from anywhere
    assert "<script" not in page and not re.search(r"(src|href)=['\"]?https?:", page) and "<svg" in page
    verdict = review["verdicts"][0]
    assert verdict["status"] == "fail"                     # 5 of 48 heads cannot take half the parameters away
    status = {c["name"]: c["status"] for c in verdict["criteria"]}
    assert status["Size"] == "fail" and status["Perplexity"] in ("pass", "fail") and "Speed" in status
    assert f"class='verdict {verdict['status']}'" in page
    # the same numbers as `sentinel evaluate` on each model
    for key, folder in (("base", None), ("models", pruned_copy)):
        main(["evaluate", "--json", "--runs", "1", "--new-tokens", "2", *(["--model", str(folder)] if folder else [])])
        evaluated = json.loads(capsys.readouterr().out)
        facts = review[key] if key == "base" else review[key][0]
        assert facts["perplexity"] == evaluated["perplexity"] and facts["tokens"] == evaluated["tokens_evaluated"]
        assert f"{facts['perplexity']:.4g}" in page and facts["ci_low"] < facts["perplexity"] < facts["ci_high"]
    assert review["models"][0]["parameters"] < review["base"]["parameters"]
    assert review["models"][0]["steps"] and review["base"]["steps"] == []
    # both generations of the prompt, with the base's continuation shown in full
    assert review["base"]["generations"][0].strip() and review["base"]["generations"][0][:20] in page
    assert review["base"]["weights_sha256"] != review["models"][0]["weights_sha256"]


def test_report_refuses_what_it_did_not_write_and_bad_flags(pruned_copy, tmp_path, capsys):
    foreign = tmp_path / "notes.html"
    foreign.write_text("my own notes")
    assert main(["report", "--model", str(pruned_copy), "--out", str(foreign), "--overwrite",
                 "--speed-rounds", "0"]) == 2
    assert foreign.read_text() == "my own notes"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a Sentinel review" in err[0]
    assert main(["report", "--model", str(pruned_copy), "--out", str(tmp_path / "r.html"), "--speed-rounds", "1"]) == 2
    assert "--speed-rounds" in capsys.readouterr().err
    assert main(["report", "--model", str(pruned_copy), "--out", str(tmp_path / "r.html"),
                 "--max-perplexity-increase", "-1"]) == 2
    assert not (tmp_path / "r.html").exists()


def test_an_earlier_report_is_replaced_only_with_overwrite(pruned_copy, tmp_path, capsys):
    out = tmp_path / "r.html"
    args = ["report", "--model", str(pruned_copy), "--out", str(out), "--speed-rounds", "0", "--prompt", "Once"]
    assert main(args) == 0
    assert main(args) == 2 and "already exists" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0 and "sentinel-review" in out.read_text()


def test_report_shows_task_accuracy_beside_perplexity(pruned_copy, tmp_path, capsys):
    out = tmp_path / "report.html"
    assert main(["report", "--model", str(pruned_copy), "--out", str(out), "--speed-rounds", "0", "--prompt", "Once",
                 "--tasks", "stories-gpt2-continuation", "--task-limit", "4", "--json"]) == 0
    review = json.loads(capsys.readouterr().out)
    page = out.read_text(encoding="utf-8")
    for facts in (review["base"], review["models"][0]):
        assert [(t["task"], t["metric"], t["n"]) for t in facts["tasks"]] == [
            ("stories-gpt2-continuation", "acc", 4), ("stories-gpt2-continuation", "acc_norm", 4)]
    assert review["task_limit"] == 4 and "<h2>Task accuracy</h2>" in page and "the first 4 documents" in page
    base_acc = review["base"]["tasks"][0]
    assert f"acc {base_acc['value']:.3f}" in page and "chance is 0.25" in page
