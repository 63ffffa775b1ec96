"""bench/gpu_check.py cannot rot: its CPU dry run passes end to end, and its pieces do what they say."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sentinel import remove_heads
from tests.conftest import make_tiny_model

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "gpu_check.py"
STEPS = ["environment", "load", "masked_vs_removed", "analysis_vs_cpu", "finetune", "timings", "evaluate_cli", "sparse_2of4"]


def _load_script(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gpu_check():
    return _load_script("gpu_check", SCRIPT)


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    """The script run as CI runs it: no CUDA (hidden if present), a subprocess, one JSON file."""
    out = tmp_path_factory.mktemp("gpu_check") / "result.json"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    return done, out


def test_dry_run_passes_every_step_and_says_there_is_no_cuda(dry_run):
    done, out = dry_run
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "No CUDA device found" in done.stdout
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["cuda"] is False and data["quick"] is True and "no CUDA device" in data["note"]
    assert [s["name"] for s in data["steps"]] == STEPS
    for step in data["steps"]:
        assert step["ok"], (step["name"], step["error"], step["traceback"])
        assert step["error"] is None and step["seconds"] > 0 and step["summary"]
        # every step printed exactly one result line
        assert sum(line.startswith("[ok  ]") and f" {step['name']} " in line for line in done.stdout.splitlines()) == 1
    assert data["all_passed"] is True
    assert data["unit_kinds"] == ["heads", "neurons", "blocks"]
    assert data["timing_variants"] == ["heads", "neurons", "heads+neurons", "blocks"]


def test_dry_run_states_its_tolerances_and_meets_them(dry_run):
    data = json.loads(dry_run[1].read_text(encoding="utf-8"))
    tolerances = data["tolerances"]
    assert set(tolerances["masked_vs_removed"]) == {"float32", "float16", "bfloat16"}
    assert set(tolerances["analysis_vs_cpu"]) == {"entropy", "entropy_normalized", "magnitude", "gradient"}
    assert tolerances["unmask"] == 0.0
    steps = {s["name"]: s for s in data["steps"]}
    cases = steps["masked_vs_removed"]["details"]["cases"]
    # three models x three dtypes x three unit kinds, each within its dtype's stated tolerance
    assert len(cases) == 27 and {(c["model"], c["dtype"], c["kind"]) for c in cases} == {
        (m, d, k) for m in ("bundled", "gpt2-small", "llama-gqa") for d in ("float32", "float16", "bfloat16")
        for k in ("heads", "neurons", "blocks")}
    for case in cases:
        assert case["forward_rel_diff"] <= tolerances["masked_vs_removed"][case["dtype"]] == case["tolerance"]
        assert case["unmask_rel_diff"] == 0.0
    for step in steps.values():
        for check in step["details"].get("checks", []):
            assert check["ok"], check
            if "value" in check:
                assert check["value"] <= check["tolerance"]
    for case in steps["analysis_vs_cpu"]["details"]["cases"]:
        for metric, tol in tolerances["analysis_vs_cpu"].items():
            assert case[f"{metric}_rel_diff"] <= tol
    finetune = steps["finetune"]["details"]
    assert finetune["summary"]["steps"] == 10 and finetune["summary"]["stopped"] == "completed"
    assert finetune["trained_max_change"]["heads"] > 0 and finetune["trained_max_change"]["neurons"] > 0
    assert finetune["masked_neurons"] and all(n > 0 for n in finetune["masked_neurons"].values())
    names = {c["check"] for c in finetune["checks"]}
    assert {"the saved model still masks the planned neurons", "masked neurons' weights unchanged (max |change|)",
            "masked heads' weights unchanged (max |change|)"} <= names
    rows = steps["timings"]["details"]["rows"]
    variants = ["unpruned"] + [f"{v} {how}" for v in ("heads", "neurons", "heads+neurons", "blocks")
                               for how in ("masked", "removed")]
    assert {(r["model"], r["variant"]) for r in rows} == {(m, v) for m in ("gpt2-small", "llama-gqa") for v in variants}
    assert len(rows) == 2 * 2 * len(variants)               # two models x two dtypes
    for row in rows:
        assert row["body_ms_median"] > 0 and row["decode_tokens_per_s"] > 0
        if row["variant"].endswith("removed"):
            assert row["speedup_predicted"] > 1.0
        else:                                             # masked units still run: no FLOPs saved
            assert row["speedup_predicted"] == pytest.approx(1.0)
    for model in ("gpt2-small", "llama-gqa"):             # both kinds together save more than either alone
        predicted = {r["variant"]: r["speedup_predicted"] for r in rows if r["model"] == model}
        assert predicted["heads+neurons removed"] > max(predicted["heads removed"], predicted["neurons removed"])
    run = steps["evaluate_cli"]["details"]["runs"]["cpu"]
    assert run["result"]["device"] == "cpu" and math.isfinite(run["result"]["perplexity"])
    sparse = steps["sparse_2of4"]["details"]             # the CPU dry run checks the masks, and says why no timing
    assert sparse["matrices"] == 7 * data["sizes"]["llama"]["num_hidden_layers"]   # q k v o gate up down
    assert "no CUDA device" in steps["sparse_2of4"]["summary"]


def test_the_2of4_masks_keep_two_of_every_four_weights(gpu_check):
    from tests.conftest import make_tiny_model

    model = make_tiny_model("llama")
    names = gpu_check._mask_2of4(model)
    assert names
    for name, module in model.base_model.named_modules():
        if name in names:
            groups = (module.weight.reshape(module.out_features, -1, 4) != 0).sum(dim=2)
            assert bool((groups == 2).all()), name     # random weights: no exact ties, so exactly two survive


def test_body_flops_is_the_hand_count_for_gpt2(gpu_check):
    """The FLOP count the timings are predicted from equals a hand count, unpruned and with half the heads removed."""
    model = make_tiny_model("gpt2")                       # 3 layers x 4 heads x 8, hidden 32, MLP 128
    layers, heads, hidden, dim, batch, seq = 3, 4, 32, 8, 2, 16

    def hand(h: int) -> int:
        weights = layers * (hidden * 3 * h * dim + h * dim * hidden + 2 * hidden * 4 * hidden)  # c_attn, c_proj, MLP
        return 2 * batch * seq * weights + 4 * batch * layers * h * seq * seq * dim           # + QK^T and PV

    assert gpu_check.body_flops(model, batch, seq) == hand(heads)
    remove_heads(model, gpu_check.half_heads_plan(model))
    assert gpu_check.body_flops(model, batch, seq) == hand(heads // 2)


def test_neuron_and_block_plans_cut_what_they_say(gpu_check):
    """The neurons plan halves every MLP, the blocks plan takes layers 1, 5, 9, ...; the FLOP count follows."""
    model = make_tiny_model("gpt2")                       # 3 layers x 4 heads x 8, hidden 32, MLP 128
    layers, heads, hidden, dim, mlp, batch, seq = 3, 4, 32, 8, 128, 2, 16

    def hand(n_layers: int, inner: int) -> int:
        weights = n_layers * (hidden * 3 * heads * dim + heads * dim * hidden + 2 * hidden * inner)
        return 2 * batch * seq * weights + 4 * batch * n_layers * heads * seq * seq * dim

    neurons = gpu_check.half_neurons_plan(model)
    assert neurons == {layer: list(range(0, mlp, 2)) for layer in range(layers)}
    assert gpu_check.quarter_blocks_plan(model) == [1]
    assert gpu_check.quarter_blocks_plan(make_tiny_model("llama")) == [1]
    removed = gpu_check.apply_units(model, ("neurons", "blocks"), "remove")
    assert removed == {"neurons": neurons, "blocks": [1]}
    assert gpu_check.body_flops(model, batch, seq) == hand(layers - 1, mlp // 2)


def test_body_flops_counts_gqa_and_the_gated_mlp(gpu_check):
    model = make_tiny_model("llama")                      # 3 layers, hidden 32, 8 query / 2 K/V heads of 4, MLP 64
    layers, hidden, q, kv, dim, mlp, batch, seq = 3, 32, 8, 2, 4, 64, 2, 16

    def expected(q_heads: int, kv_heads: int) -> int:
        tokens = batch * seq
        linear = 2 * tokens * (hidden * (q_heads + 2 * kv_heads) * dim + q_heads * dim * hidden + 3 * hidden * mlp)
        return layers * (linear + 4 * batch * q_heads * seq * seq * dim)

    assert gpu_check.body_flops(model, batch, seq) == expected(q, kv)
    plan = gpu_check.half_heads_plan(model)
    assert plan[0] == [0, 1, 2, 3]                        # one whole K/V group of two: removable
    remove_heads(model, plan)
    assert gpu_check.body_flops(model, batch, seq) == expected(q // 2, kv // 2)


def test_a_failing_step_is_reported_with_its_reason_and_the_run_goes_on(gpu_check, capsys):
    ctx = gpu_check.Context(torch.device("cpu"), gpu_check.QUICK, quick=True)

    def broken(_ctx):
        raise RuntimeError("no such kernel")

    def off_tolerance(_ctx):
        checks = gpu_check.Checks()
        checks.within("a comparison", 0.5, 0.1)
        checks.within("another", 0.0, 0.1)
        checks.raise_if_failed()
        return "never", {}

    first = gpu_check.run_step("broken", broken, ctx)
    second = gpu_check.run_step("off_tolerance", off_tolerance, ctx)
    lines = capsys.readouterr().out.splitlines()
    assert not first.ok and first.error == "RuntimeError: no such kernel" and "no such kernel" in first.traceback
    assert not second.ok
    assert second.error.startswith("CheckFailed: 1 of 2 checks failed; first: a comparison: 0.5 > 0.1")
    assert [c["ok"] for c in second.details["checks"]] == [False, True]
    assert lines[0].startswith("[FAIL] broken") and "RuntimeError: no such kernel" in lines[0]
    assert lines[1].startswith("[FAIL] off_tolerance") and "0.5 > 0.1" in lines[1]


def test_main_exits_non_zero_when_a_step_fails(gpu_check, tmp_path, monkeypatch):
    def broken(_ctx):
        raise ValueError("bad")

    monkeypatch.setattr(gpu_check, "STEPS", (("environment", gpu_check.step_environment), ("broken", broken)))
    out = tmp_path / "r.json"
    assert gpu_check.main(["--out", str(out)]) == 1
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["all_passed"] is False
    assert [(s["name"], s["ok"]) for s in data["steps"]] == [("environment", True), ("broken", False)]


def test_generations_may_part_only_at_a_near_tie(gpu_check):
    prompt, tol = 1, 1e-2
    ref_seq = torch.tensor([[5, 1, 2]])
    ref_logits = torch.tensor([[[0.0, 3.0, 2.999, 0.0]], [[0.0, 0.0, 3.0, 0.0]]])   # [new, batch, vocab]
    parted = torch.tensor([[5, 2, 2]])
    checks = gpu_check.Checks()
    info = gpu_check.compare_generations(checks, "tie", (parted, ref_logits), (ref_seq, ref_logits), prompt, tol)
    assert info["diverged_at_step"] == 0 and all(r["ok"] for r in checks.rows)
    clear = torch.tensor([[[0.0, 3.0, 1.0, 0.0]], [[0.0, 0.0, 3.0, 0.0]]])
    checks = gpu_check.Checks()
    gpu_check.compare_generations(checks, "no tie", (parted, clear), (ref_seq, clear), prompt, tol)
    assert not all(r["ok"] for r in checks.rows)


def test_only_runs_the_named_steps_and_refuses_unknown_ones(gpu_check, tmp_path):
    out = tmp_path / "only.json"
    assert gpu_check.main(["--out", str(out), "--only", "environment"]) == 0
    assert [s["name"] for s in json.loads(out.read_text(encoding="utf-8"))["steps"]] == ["environment"]
    with pytest.raises(SystemExit) as exit_info:
        gpu_check.main(["--out", str(out), "--only", "environment,warp_drive"])
    assert exit_info.value.code == 2
