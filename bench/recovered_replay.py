"""Replay of a recovered target-prune step on the bundled model: from the weights its job saved vs re-fitting.

Runs the dashboard's "target-prune" job once (50% of the prunable parameters, heads + neurons, least squares, or
--recovery bias), then replays the adopted step on fresh copies of the base model, alternating "from the saved
weights" and "re-fitting the recovery", --pairs times. One torch thread; the data folder is a temporary one.

Run: python bench/recovered_replay.py [--recovery lstsq|bias] [--pairs 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recovery", choices=["lstsq", "bias"], default="lstsq")
    parser.add_argument("--pairs", type=int, default=2)
    args = parser.parse_args()
    os.environ["SENTINEL_HOME"] = tempfile.mkdtemp(prefix="sentinel-replay-")

    import torch

    from sentinel.jobs import JobManager
    from sentinel.models import load_model
    from sentinel.store import Store
    from sentinel.ui.budget import BudgetSettings, budget_scores, predict_budget
    from sentinel.ui.session import PruneStep, WorkingModel
    from sentinel.ui.target_prune import start_target_prune

    torch.set_num_threads(1)
    base = load_model(None, device="cpu")
    working = WorkingModel(base)
    settings = BudgetSettings(("heads", "neurons"), "params", 0.5, "global", args.recovery)
    predicted = predict_budget(working, settings, budget_scores(working.model, settings.units))
    store = Store()
    with JobManager(store) as jobs:
        start = time.perf_counter()
        job = jobs.wait(start_target_prune(jobs, store, working, settings, predicted, None, "cpu"))
        print(f"job {job.state} in {time.perf_counter() - start:.1f} s (model load, 3 protocol perplexities, re-fit, save)")
    saved = [PruneStep.from_dict(job.result["step"])]
    refit = [PruneStep.from_dict({**job.result["step"], "job": None, "fingerprint": None})]
    times: dict[str, list[float]] = {"from the saved weights": [], "re-fitting": []}
    for _ in range(args.pairs):
        for name, steps in (("from the saved weights", saved), ("re-fitting", refit)):
            again = WorkingModel(base)
            start = time.perf_counter()
            again.replay(steps)
            times[name].append(time.perf_counter() - start)
    for name, values in times.items():
        print(f"replay {name}: {', '.join(f'{v:.2f}' for v in values)} s; median {statistics.median(values):.2f} s")


if __name__ == "__main__":
    main()
