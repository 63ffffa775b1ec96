"""`sentinel prune --strategy`: chooses the heads the metric says, keeps the JSON shape, refuses bad input."""

from __future__ import annotations

import json

import pytest

from sentinel import active_heads, load_model, present_heads, save_model
from sentinel.cli import main
from sentinel.metrics import random_scores, weight_magnitude
from sentinel.pruning.strategies import MagnitudePruningStrategy
from tests.conftest import make_char_tokenizer, make_tiny_model


@pytest.fixture
def llama_dir(tmp_path):
    """Tiny Llama with grouped-query attention (8 query heads, 2 K/V heads per layer)."""
    model = make_tiny_model("llama")
    return save_model(model, make_char_tokenizer(), tmp_path / "llama")


def prune(capsys, *args: str) -> tuple[int, dict | None, str]:
    code = main(["prune", "--device", "cpu", "--json", *args])
    captured = capsys.readouterr()
    return code, json.loads(captured.out) if code == 0 else None, captured.err


def test_magnitude_strategy_removes_the_lowest_heads(tiny_gpt2_dir, tmp_path, capsys):
    out = tmp_path / "pruned"
    magnitude = weight_magnitude(load_model(tiny_gpt2_dir, device="cpu").model).values
    code, result, _ = prune(capsys, "--model", str(tiny_gpt2_dir), "--strategy", "magnitude", "--ratio", "0.25",
                            "--out", str(out))
    assert code == 0
    assert list(result)[:4] == ["pruned", "params_before", "params_after", "out"]
    assert result["counts"] == {"heads": 3, "neurons": 0, "layers": 0}
    lowest = sorted(divmod(i, 4) for i in magnitude.flatten().argsort()[:3].tolist())   # round(0.25 x 12) = 3
    assert [(int(l), h) for l, hs in result["pruned"].items() for h in hs] == lowest
    assert result["params_before"] - result["params_after"] == 3 * (3 * 8 * 32 + 3 * 8 + 8 * 32)
    reloaded = present_heads(load_model(out, device="cpu").model)
    assert all(h not in reloaded[l] for l, h in lowest)


def test_entropy_strategy_with_text_and_mask_mode(tiny_gpt2_dir, tiny_text_file, tmp_path, capsys):
    out = tmp_path / "masked"
    code, result, _ = prune(capsys, "--model", str(tiny_gpt2_dir), "--strategy", "entropy", "--ratio", "0.5",
                            "--text", str(tiny_text_file), "--samples", "4", "--seq-len", "32", "--mode", "mask",
                            "--out", str(out))
    assert code == 0 and result["params_before"] == result["params_after"]
    assert sum(len(v) for v in result["pruned"].values()) == 6
    live = active_heads(load_model(out, device="cpu").model)
    assert sum(len(v) for v in live.values()) == 6 and all(live[layer] for layer in live)


def test_random_strategy_is_reproducible(tiny_gpt2_dir, tmp_path, capsys):
    runs = [prune(capsys, "--model", str(tiny_gpt2_dir), "--strategy", "random", "--ratio", "0.5", "--seed", "3",
                  "--out", str(tmp_path / f"r{i}"))[1]["pruned"] for i in range(2)]
    assert runs[0] == runs[1]
    want = MagnitudePruningStrategy(0.5).select_heads_to_prune(
        make_tiny_model("gpt2"), random_scores(make_tiny_model("gpt2"), 3).values)
    assert runs[0] == {str(l): hs for l, hs in want.items()}


def test_gqa_removal_takes_whole_groups(llama_dir, tmp_path, capsys):
    code, result, _ = prune(capsys, "--model", str(llama_dir), "--strategy", "magnitude", "--ratio", "0.34",
                            "--out", str(tmp_path / "g"))
    assert code == 0                                               # round(0.34 x 6 groups) = 2 groups
    groups = [hs for hs in result["pruned"].values()]
    assert sum(len(hs) for hs in groups) == 8 and all(hs in ([0, 1, 2, 3], [4, 5, 6, 7]) for hs in groups)


@pytest.mark.parametrize("args, words", [
    (["--strategy", "entropie", "--ratio", "0.2"], "choose one of entropy, gradient, hybrid"),
    (["--strategy", "magnitude", "--ratio", "1.0"], "[0, 1)"),
    (["--strategy", "magnitude", "--ratio", "-0.1"], "[0, 1)"),
    (["--strategy", "magnitude"], "needs --ratio"),
    (["--strategy", "magnitude", "--heads", "0:1", "--ratio", "0.2"], "not allowed with argument"),
    (["--heads", "0:1", "--ratio", "0.2"], "--ratio goes with --strategy"),
    (["--heads", "1:0,1,2,3"], "min_heads=1"),
    (["--heads", "1:0,1", "--min-heads", "3"], "layer 1 would keep 2 of 4"),
    (["--strategy", "magnitude", "--ratio", "0.9"], "min_heads=1"),
    (["--strategy", "entropy", "--ratio", "0.2", "--text", "MISSING"], "does not exist"),
])
def test_bad_input_is_one_line_and_exit_2(tiny_gpt2_dir, tmp_path, capsys, args, words):
    args = [str(tmp_path / "missing.txt") if a == "MISSING" else a for a in args]
    code, _, err = prune(capsys, "--model", str(tiny_gpt2_dir), *args, "--out", str(tmp_path / "x"))
    assert code == 2
    assert words in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_explicit_heads_break_the_gqa_rule(llama_dir, tmp_path, capsys):
    code, _, err = prune(capsys, "--model", str(llama_dir), "--heads", "0:1", "--out", str(tmp_path / "x"))
    assert code == 2 and "share K/V head" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
