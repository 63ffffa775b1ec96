"""`sentinel prune --recover`: the saved model is re-fitted and the recovery is reported and recorded."""

from __future__ import annotations

import json

from sentinel.cli import main


def test_prune_recover_lstsq_reports_and_records(tiny_gpt2_dir, tmp_path, capsys):
    out = tmp_path / "pruned"
    code = main(["prune", "--model", str(tiny_gpt2_dir), "--device", "cpu", "--heads", "0:1;2:0,3", "--recover",
                 "lstsq", "--calibration-samples", "8", "--seq-len", "32", "--out", str(out), "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    fits = result["recovery"]["fits"]
    assert [(f["layer"], f["part"]) for f in fits] == [(0, "attention"), (2, "attention")]
    assert all(f["error_after"] < f["error_before"] for f in fits)
    assert result["recovery"]["tokens"] == 8 * 32
    record = json.loads((out / "sentinel_pruning.json").read_text())
    assert record["note"]["recover"]["method"] == "lstsq"
    assert record["note"]["recover"]["calibration"]["text"] == "bundled:train"


def test_prune_recover_needs_remove_mode(tiny_gpt2_dir, tmp_path, capsys):
    code = main(["prune", "--model", str(tiny_gpt2_dir), "--heads", "0:1", "--mode", "mask", "--recover", "bias",
                 "--out", str(tmp_path / "p")])
    assert code == 2
    assert "--mode remove" in capsys.readouterr().err
