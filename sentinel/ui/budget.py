"""Prune by target in the dashboard: score the chosen unit kinds, let `select_budget` pick what goes, show the
prediction (parameters, FLOPs, speed-up, counts per layer) before anything is pruned, then apply it as one step."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import pandas as pd
from torch import nn

from sentinel.metrics.batches import prepare_batches
from sentinel.errors import InvalidPruningPlan
from sentinel.metrics import UnitScores, compute_scores
from sentinel.pruning.budget import BudgetResult, select_budget
from sentinel.pruning.plan import PruningPlan
from sentinel.pruning.recovery import RECOVERY_METHODS
from sentinel.evaluation.paired import SpeedComparison, SpeedRatio
from sentinel.ui.session import PruneStep, WorkingModel

logger = logging.getLogger(__name__)

UNIT_KINDS = {"heads": "head", "neurons": "neuron", "layers": "layer"}
# The metric each kind is ranked by (the same defaults as `sentinel prune --target`).
BUDGET_METRICS = {"head": "magnitude", "neuron": "magnitude", "layer": "block_influence"}
RECOVERY_CHOICES = ("none", *RECOVERY_METHODS)
RECOVERY_LABELS = {"none": "None", "bias": "Bias correction", "lstsq": "Least squares"}   # as the page names them
BUDGET_SEQ_LEN = 128          # FLOPs are counted at the app's perplexity window


@dataclass(frozen=True)
class BudgetSettings:
    """What the Prune page's target mode asks for: which unit kinds, which share of what, how to spread it."""

    units: tuple[str, ...] = ("heads", "neurons")
    measure: Literal["params", "flops", "speedup"] = "params"
    share: float = 0.3                  # params / flops: the share to remove; speedup: the factor, e.g. 1.5
    allocation: str = "global"
    recovery: str = "none"
    min_heads: int = 1
    min_neurons: int = 1

    def target(self) -> str:
        """The target in `Target.parse` form, e.g. 'params=0.3' or 'speedup=1.5'."""
        return f"{self.measure}={self.share:g}"

    def label(self) -> str:
        """How the step is described in the steps table and the saved model's note."""
        recovered = "" if self.recovery == "none" else f", {self.recovery} recovery"
        return f"target {self.target()} of {'+'.join(self.units)} ({self.allocation}{recovered})"


def needs_text(units: tuple[str, ...]) -> bool:
    """Whether scoring these kinds runs the model on text (layers' block influence does; magnitudes do not)."""
    from sentinel.metrics import needs_data

    return any(needs_data([BUDGET_METRICS[UNIT_KINDS[u]]]) for u in units)


def budget_scores(model: nn.Module, units: tuple[str, ...], data: Any = None) -> dict[str, UnitScores]:
    """{kind: UnitScores} for the chosen kinds with their `BUDGET_METRICS` metric (`data`: token batches)."""
    unknown = [u for u in units if u not in UNIT_KINDS]
    if unknown or not units:
        raise InvalidPruningPlan(f"Choose unit kinds among {', '.join(UNIT_KINDS)}; got {', '.join(units) or 'none'}.")
    batches = prepare_batches(data) if data is not None else None
    found: dict[str, UnitScores] = {}
    for unit in units:
        kind, metric = UNIT_KINDS[unit], BUDGET_METRICS[UNIT_KINDS[unit]]
        found[kind] = compute_scores(model, [metric], batches, kind=kind)[metric]
    return found


def predict_budget(working: WorkingModel, settings: BudgetSettings, scores: dict[str, UnitScores]) -> BudgetResult:
    """What pressing Prune would remove from the session's model now (nothing is changed)."""
    if settings.recovery not in RECOVERY_CHOICES:
        raise InvalidPruningPlan(f"Unknown recovery {settings.recovery!r}; use one of {', '.join(RECOVERY_CHOICES)}.")
    return select_budget(working.model, scores, settings.target(), allocation=settings.allocation,
                         min_heads=settings.min_heads, min_neurons=settings.min_neurons, whole_kv_groups=True,
                         seq_len=BUDGET_SEQ_LEN)


def apply_budget(working: WorkingModel, result: BudgetResult, settings: BudgetSettings) -> PruneStep:
    """Remove exactly the predicted plan (then recover), as one step of the session."""
    if result.plan.is_empty():
        raise InvalidPruningPlan("This target removes nothing: raise the share or allow more unit kinds.")
    recovery = None if settings.recovery == "none" else settings.recovery
    return working.apply(result.plan, "remove", settings.label(), recovery=recovery)


BODY_PREDICTION = "Speed-up predicted (body's FLOPs: attention + MLP, LM head left out)"


def prediction_table(result: BudgetResult) -> pd.DataFrame:
    """Rows: parameters (all and prunable), body FLOPs per token and the speed-up they predict; now vs predicted."""
    speedup = result.speedup_predicted
    rows = [
        ("Parameters", f"{result.total_params_before:,}", f"{result.total_params_after:,}",
         f"-{result.total_share_removed:.1%}"),
        ("Prunable parameters (attention + MLP)", f"{result.prunable_params_before:,}",
         f"{result.prunable_params_after:,}", f"-{result.prunable_share_removed:.1%}"),
        (f"Body FLOPs per token (context {result.seq_len})", f"{result.flops_before:,}", f"{result.flops_after:,}",
         f"-{result.flops_share_removed:.1%}"),
        (BODY_PREDICTION, "1.00×", f"{speedup:.2f}×", ""),
    ]
    return pd.DataFrame(rows, columns=["", "Now", "After Prune (predicted)", "Change"]).set_index("")


def speed_verdict(wanted: float, ratio: SpeedRatio) -> str:
    """A measured speed-up against a target: met (median at or above it), short, or within the timing noise."""
    if not ratio.measurable:
        return "not measurably faster (the range includes 1.00×)"
    return "meets the target" if ratio.median >= wanted else f"short of the {wanted:g}× target"


def speed_against_target(wanted: float, result: BudgetResult, speed: SpeedComparison) -> pd.DataFrame:
    """A speed-up target beside what predicted it and what was timed: target, body-FLOPs prediction, whole-model
    FLOPs prediction (LM head included), measured prefill and generation (median and range over the pairs)."""
    def measured(ratio: SpeedRatio | None) -> tuple[str, str]:
        if ratio is None:
            return "not measured", ""
        return f"{ratio.median:.2f}× ({ratio.low:.2f}–{ratio.high:.2f}×, {ratio.pairs} pairs)", \
            speed_verdict(wanted, ratio)

    rows = [("Target (predicted from the body's FLOPs)", f"{wanted:.2f}×", ""),
            ("Predicted from the body's FLOPs (this plan)", f"{result.speedup_predicted:.2f}×",
             "units come in whole sizes" if not result.exact else ""),
            ("Predicted from the whole model's FLOPs (LM head included)", f"{speed.predicted_speedup:.2f}×", ""),
            ("Measured: prefill", *measured(speed.prefill)),
            ("Measured: generation", *measured(speed.decode))]
    return pd.DataFrame(rows, columns=["Speed-up", "Value", "Against the target"]).set_index("Speed-up")


def falls_short(wanted: float, speed: SpeedComparison) -> list[str]:
    """The measured speeds (prefill, generation) that do not show the target: median below it, or no measurable
    speed-up at all."""
    return [name for name, ratio in (("prefill", speed.prefill), ("generation", speed.decode))
            if ratio is not None and speed_verdict(wanted, ratio) != "meets the target"]


def per_layer_counts(plan: PruningPlan, num_layers: int) -> pd.DataFrame:
    """Long frame (layer, kind, count) of what the plan removes in each layer; a removed block counts one layer."""
    rows = []
    for layer in range(num_layers):
        for kind, units in (("heads", plan.heads), ("neurons", plan.neurons), ("layers", plan.layers)):
            count = len(units.get(layer, []))
            if count:
                rows.append({"layer": layer, "kind": kind, "count": count})
    return pd.DataFrame(rows, columns=["layer", "kind", "count"])

