"""The same strategy, ratio and seed choose the same heads in the `sentinel` command and on the Prune page, and
`sentinel evaluate` prints the perplexity the Prune page shows for the pruned copy (issue 22: one number)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sentinel.ui.history import readable
from tests.app.conftest import assert_clean, dashboard, open_app

ROOT = Path(__file__).resolve().parents[2]


def sentinel_cli(*args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, "-m", "sentinel", *args, "--json"], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def perplexity_after(at) -> str:
    tables = [t.value for t in at.table if "Perplexity" in t.value.index and "After" in t.value.columns]
    assert tables, "the Prune page shows no before/after table"
    return tables[0].loc["Perplexity", "After"]


@pytest.mark.slow
@pytest.mark.parametrize(("strategy", "ratio"), [("entropy", 0.3)])   # data-driven: it reads the sample text
def test_cli_and_dashboard_choose_the_same_heads_and_report_the_same_perplexity(tmp_path, strategy, ratio):
    out = tmp_path / "pruned"
    pruned = sentinel_cli("prune", "--strategy", strategy, "--ratio", str(ratio), "--mode", "mask", "--seed", "0",
                          "--out", str(out))
    cli_heads = {(int(layer), head) for layer, heads in pruned["pruned"].items() for head in heads}
    evaluated = sentinel_cli("evaluate", "--model", str(out))

    at = open_app("prune")
    at.selectbox(key="prune_strategy").set_value(strategy).run()
    at.slider(key="prune_ratio").set_value(ratio).run()
    at.button(key="prune_go").click().run()
    assert_clean(at)
    page_heads = set(dashboard(at).working.status())
    assert page_heads == cli_heads
    assert perplexity_after(at) == readable(evaluated["perplexity"])
