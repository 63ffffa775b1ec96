"""`sentinel prune` with neurons, layers, mixed plans and budgets; `sentinel analyze --units`."""

from __future__ import annotations

import json

import pytest

from sentinel import active_layers, active_neurons, load_model, present_heads, present_neurons
from sentinel.cli import main


def run(capsys, command: str, *args: str) -> tuple[int, dict | None, str]:
    code = main([command, "--device", "cpu", *args])
    captured = capsys.readouterr()
    return code, json.loads(captured.out) if code == 0 and "--json" in args else None, captured.err


def test_explicit_mixed_plan_is_removed_and_saved(tiny_gpt2_dir, tmp_path, capsys):
    out = tmp_path / "p"
    code, result, _ = run(capsys, "prune", "--model", str(tiny_gpt2_dir), "--heads", "0:1", "--neurons", "0:5,17;2:2",
                          "--layers", "1:mlp", "--out", str(out), "--json")
    assert code == 0
    assert result["counts"] == {"heads": 1, "neurons": 3, "layers": 1}
    assert result["plan"] == {"heads": {"0": [1]}, "neurons": {"0": [5, 17], "2": [2]}, "layers": {"1": ["mlp"]}}
    model = load_model(out, device="cpu").model
    assert present_heads(model)[0] == [0, 2, 3]
    assert 5 not in present_neurons(model)[0] and present_neurons(model)[1] == []
    assert active_layers(model)[1] == ["attention"]


def test_layers_plan_masks_blocks(tiny_gpt2_dir, tmp_path, capsys):
    code, result, _ = run(capsys, "prune", "--model", str(tiny_gpt2_dir), "--layers", "2", "--mode", "mask",
                          "--out", str(tmp_path / "m"), "--json")
    assert code == 0 and result["plan"]["layers"] == {"2": ["block"]}
    assert result["params_before"] == result["params_after"]
    assert active_layers(load_model(tmp_path / "m", device="cpu").model)[2] == []


@pytest.mark.parametrize("allocation", ["global", "uniform"])
def test_budget_prune_reports_shares(tiny_gpt2_dir, tmp_path, capsys, allocation):
    code, result, _ = run(capsys, "prune", "--model", str(tiny_gpt2_dir), "--units", "heads,neurons",
                          "--target", "params=0.5", "--allocation", allocation, "--out", str(tmp_path / "b"), "--json")
    assert code == 0
    budget = result["budget"]
    assert budget["prunable_share_removed"] == pytest.approx(0.5, abs=0.05)
    assert 0 < budget["total_share_removed"] < budget["prunable_share_removed"]
    assert budget["metrics"] == {"head": "magnitude", "neuron": "magnitude"}
    assert result["params_before"] - result["params_after"] == (budget["total_params_before"]
                                                                 - budget["total_params_after"])
    assert result["counts"]["heads"] > 0 and result["counts"]["neurons"] > 0
    model = load_model(tmp_path / "b", device="cpu").model
    assert sum(map(len, active_neurons(model).values())) == 3 * 128 - result["counts"]["neurons"]


def test_a_speedup_target_removes_the_flops_it_implies_and_says_it_is_predicted(tiny_gpt2_dir, tmp_path, capsys):
    code, result, _ = run(capsys, "prune", "--model", str(tiny_gpt2_dir), "--units", "heads,neurons", "--target",
                          "speedup=1.5", "--seq-len", "32", "--out", str(tmp_path / "s"), "--json")
    assert code == 0
    budget = result["budget"]
    assert budget["target"] == "speedup=1.5"
    assert budget["flops_share_removed"] == pytest.approx(1 - 1 / 1.5, abs=0.02)
    assert budget["speedup_predicted"] == pytest.approx(budget["flops_before"] / budget["flops_after"])
    assert main(["prune", "--device", "cpu", "--model", str(tiny_gpt2_dir), "--units", "neurons", "--target",
                 "speedup=1.2", "--seq-len", "32", "--out", str(tmp_path / "t")]) == 0
    assert "speed-up predicted from the body's FLOPs" in capsys.readouterr().out


def test_budget_with_a_random_strategy_is_seeded(tiny_gpt2_dir, tmp_path, capsys):
    plans = [run(capsys, "prune", "--model", str(tiny_gpt2_dir), "--units", "neurons", "--target", "neurons=0.25",
                 "--strategy", "random", "--seed", "4", "--out", str(tmp_path / f"r{i}"), "--json")[1]["plan"]
             for i in range(2)]
    assert plans[0] == plans[1] and sum(map(len, plans[0]["neurons"].values())) == 96


@pytest.mark.parametrize("args, words", [
    (["--neurons", "0:128"], "neurons 0-127"),
    (["--layers", "1:ffn"], "not one of block, attention, mlp"),
    (["--layers", "0,1,2"], "at least one"),
    (["--neurons", "0:1", "--strategy", "magnitude"], "not both"),
    (["--units", "heads"], "needs --target"),
    (["--units", "experts", "--target", "params=0.5"], "Unknown unit kind experts"),
    (["--units", "heads", "--target", "params=2"], "[0, 1)"),
    (["--units", "heads", "--target", "speedup=0.5"], "must be 1 or more"),
    (["--units", "heads", "--target", "params=0.5", "--ratio", "0.2"], "--ratio goes with --strategy"),
    (["--units", "layers", "--target", "params=0.3", "--allocation", "uniform"], "globally"),
])
def test_bad_unit_input_is_one_line_and_exit_2(tiny_gpt2_dir, tmp_path, capsys, args, words):
    code, _, err = run(capsys, "prune", "--model", str(tiny_gpt2_dir), *args, "--out", str(tmp_path / "x"))
    assert code == 2
    assert words in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_analyze_units_json_and_csv(tiny_gpt2_dir, tiny_text_file, tmp_path, capsys):
    code, result, _ = run(capsys, "analyze", "--model", str(tiny_gpt2_dir), "--text", str(tiny_text_file),
                          "--samples", "2", "--seq-len", "16", "--units", "heads,neurons,layers",
                          "--metrics", "magnitude,block_influence", "--json")
    assert code == 0
    assert len(result["magnitude"]) == 3 and len(result["magnitude"][0]) == 4
    assert list(result["units"]) == ["neuron", "layer"]
    assert len(result["units"]["neuron"]["magnitude"][0]) == 128
    assert len(result["units"]["layer"]["block_influence"][0]) == 3
    target = tmp_path / "s.csv"
    code, _, _ = run(capsys, "analyze", "--model", str(tiny_gpt2_dir), "--units", "neurons", "--metrics",
                     "magnitude,random", "--out", str(target))
    header = target.read_text().splitlines()[0]
    assert code == 0 and header == "kind,layer,unit,pruned,magnitude,random"
    code, _, err = run(capsys, "analyze", "--model", str(tiny_gpt2_dir), "--units", "layers", "--metrics", "entropy")
    assert code == 2 and "Unknown layer metric entropy" in err
    code, _, err = run(capsys, "analyze", "--model", str(tiny_gpt2_dir), "--units", "heads,layers", "--metrics",
                       "entropy")
    assert code == 2 and "None of entropy applies to layers" in err
