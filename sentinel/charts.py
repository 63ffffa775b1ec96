"""Altair chart builders shared by the dashboard and reports: the layer × head heat map, training curves,
and perplexity against pruning level. They take plain tables and return charts; nothing here runs a model.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import altair as alt
import pandas as pd

from sentinel.pruning.plan import HeadKey, head_label

SELECTION_NAME = "pick"
PRUNED_COLOUR = "#d0d0d0"
CELL_TEXT_LIMIT = 256          # above this many cells the values are left to the tooltips
CELL_HEIGHT = 34               # pixels per layer row

# Streamlit gives a spec without its own `autosize` {"type": "fit", "contains": "padding"}: `height` then becomes
# the whole chart's height, title, axes and legend included (a 204-pixel, 6-layer head map kept an 83-pixel plot).
# Charts drawn with width="stretch" say fit-x: the width fits the page, `height` stays the plotting area's height
# (a pixel height: a step height makes Vega-Lite drop any fit and warn "Dropping fit-y"). Only a top-level chart
# may carry an autosize.
FIT_WIDTH = alt.AutoSizeParams(type="fit-x", contains="padding")


@dataclass(frozen=True)
class MetricInfo:
    """How the dashboard names a per-head score and says, in one plain sentence, what a high value means."""

    key: str
    label: str
    unit: str
    legend: str
    signed: bool = False            # values on both sides of 0: a diverging colour scale centred on 0


METRICS: dict[str, MetricInfo] = {info.key: info for info in (
    MetricInfo("entropy", "Attention entropy", "nats",
               "High: the head spreads its attention over many earlier words; low: it focuses on a few."),
    MetricInfo("entropy_normalized", "Attention entropy (normalised)", "0 to 1",
               "Near 1: the head looks at every visible word about equally; near 0: it locks onto a single word."),
    MetricInfo("magnitude", "Weight magnitude", "norm",
               "High: the head has large weights, so it can push the model's output around more."),
    MetricInfo("gradient", "Gradient importance", "mean |dloss/dgate|",
               "High: the model's prediction error reacts strongly when this head is turned down."),
    MetricInfo("loss_impact", "Loss impact", "Δ loss (nats)",
               "High: the model predicts the text clearly worse with only this head switched off; below 0 it "
               "predicts slightly better without it.", signed=True),
)}


_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def short_number(value: float) -> str:
    """A score as a chart label: 3 significant digits between 0.001 and 1,000 ('0.0412', '-0.25'), whole numbers
    with separators above ('12,345'), and tiny values as a power of ten ('6.0×10⁻⁷'), never '6.01e-7'."""
    if not math.isfinite(value):
        return str(value)
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 1e-3:
        return f"{value:.3g}"
    mantissa, exponent = f"{value:.1e}".split("e")
    return f"{mantissa}×10{str(int(exponent)).translate(_SUPERSCRIPT)}"


def pruned_first(metric: str) -> str:
    """Which end of this metric's colour scale the strategies ranking by it prune first, in one sentence."""
    from sentinel.pruning.strategies import strategy_class, strategy_names
    from sentinel.pruning.strategies.builtin import MetricPruningStrategy

    source = metric                      # the entropy strategy ranks by raw entropy, not the normalised one
    ends = []
    for name in strategy_names():
        cls = strategy_class(name)
        if issubclass(cls, MetricPruningStrategy) and source in cls.metrics:
            high = cls.prune_highest
            colour = "yellow" if high else ("blue" if METRICS[metric].signed else "dark purple")
            ends.append(f"the {name} strategy prunes the {'highest' if high else 'lowest'} values ({colour}) first")
    if not ends:
        return "No strategy ranks by this metric alone (hybrid mixes normalised entropy with magnitude)." \
            if metric == "entropy_normalized" else "No strategy ranks by this metric alone."
    return "; ".join(ends).capitalize() + "."


def head_frame(
    values: Sequence[Sequence[float]],
    status: dict[HeadKey, str],
    selected: Iterable[HeadKey] = (),
    preview: Iterable[HeadKey] = (),
) -> pd.DataFrame:
    """One row per (layer, head): score (NaN for pruned heads), status ('active'/'masked'/'removed'), selected,
    and preview (the heads the chosen strategy would prune next).

    `values[layer][head]` is indexed by original heads; `status` names every head that is not active.
    """
    chosen, coming = set(selected), set(preview)
    rows = []
    for layer, row in enumerate(values):
        for head, value in enumerate(row):
            state = status.get((layer, head), "active")
            score = float(value) if value is not None and state == "active" else math.nan
            rows.append({"layer": layer, "head": head, "label": head_label((layer, head)), "score": score,
                         "status": state, "selected": (layer, head) in chosen, "preview": (layer, head) in coming})
    return pd.DataFrame(rows)


def head_heatmap(frame: pd.DataFrame, metric: MetricInfo, title: str = "") -> alt.LayerChart:
    """Layer × head heat map: colour = score, pruned heads grey with ✕, selected heads outlined.

    Carries a point selection named SELECTION_NAME over (layer, head): click picks a head, shift-click
    toggles one more; its initial value is the current selection so a redraw keeps what was picked.
    """
    data = frame.copy()
    active = data["score"].notna()
    low = float(data.loc[active, "score"].min()) if active.any() else 0.0
    high = float(data.loc[active, "score"].max()) if active.any() else 0.0
    data["shade"] = data["score"].fillna(low)         # pruned cells are painted grey below; no NaN in the scale
    data["shown"] = [short_number(v) if not math.isnan(v) else s for v, s in zip(data["score"], data["status"])]
    initial = [{"layer": int(r.layer), "head": int(r.head)} for r in data.itertuples() if r.selected]
    pick = alt.selection_point(
        name=SELECTION_NAME, fields=["layer", "head"], on="click", toggle="event.shiftKey",
        value=initial or alt.Undefined,
    )
    num_layers = int(data["layer"].max()) + 1 if len(data) else 0
    num_heads = int(data["head"].max()) + 1 if len(data) else 0
    base = alt.Chart(data).encode(
        x=alt.X("head:O", title="Head", axis=alt.Axis(labelAngle=0)),
        y=alt.Y("layer:O", title="Layer"),
    )
    if metric.signed:
        reach = max(abs(low), abs(high)) or 1.0
        scale = alt.Scale(scheme="blueorange", domain=[-reach, reach], domainMid=0)
    else:
        scale = alt.Scale(scheme="viridis")
    cells = base.mark_rect(stroke="white", strokeWidth=1).encode(
        color=alt.condition(
            "datum.status == 'active'",
            alt.Color("shade:Q", title=metric.unit, scale=scale),
            alt.value(PRUNED_COLOUR),
        ),
        tooltip=[
            alt.Tooltip("label:N", title="Head"),
            alt.Tooltip("shown:N", title=metric.label),
            alt.Tooltip("status:N", title="Status"),
        ],
    ).add_params(pick)
    outline = base.transform_filter("datum.selected").mark_rect(
        fill=None, stroke="#ff2b2b", strokeWidth=3
    )
    coming = base.transform_filter("datum.preview").mark_rect(
        fill=None, stroke="#ff8c00", strokeWidth=2.5, strokeDash=[4, 3]
    )
    layers: list[alt.Chart] = [cells, coming, outline]
    marks = base.transform_filter("datum.status != 'active'").mark_text(fontSize=14, color="#555555").encode(
        text=alt.value("✕")
    )
    layers.append(marks)
    if num_layers * num_heads <= CELL_TEXT_LIMIT:
        values = base.transform_filter("datum.status == 'active'").mark_text(fontSize=10).encode(
            text=alt.Text("shown:N"),          # short_number: never a raw '6.01e-7'
            # viridis runs dark to light: dark text on the light upper half, white on the rest; the diverging
            # scale is light around 0 and dark at both ends
            color=alt.condition(f"abs(datum.shade) < {max(abs(low), abs(high)) / 2}" if metric.signed else
                                f"datum.shade > {(low + high) / 2}", alt.value("black"), alt.value("white")),
        )
        layers.append(values)
    # FIT_WIDTH: the page sets the width, the height is the plot's own, CELL_HEIGHT pixels per layer row
    return alt.layer(*layers).properties(title=title or metric.label, height=max(1, num_layers) * CELL_HEIGHT,
                                         autosize=FIT_WIDTH)


def curves_chart(points: pd.DataFrame, value: str, title: str, log: bool = False) -> alt.Chart:
    """A line over training steps (`step` column) of the `value` column, points shown; `log` for a log y axis."""
    scale = alt.Scale(type="log") if log else alt.Scale(zero=False)
    return alt.Chart(points.dropna(subset=[value])).mark_line(point=True).encode(
        x=alt.X("step:Q", title="Step", axis=alt.Axis(tickMinStep=1, format="d")),
        # the axis title stays short (a long one is clipped on a 220-pixel axis); one point gets 4 digits, not 9
        y=alt.Y(f"{value}:Q", title="log scale" if log else None, scale=scale),
        tooltip=[alt.Tooltip("step:Q", title="Step"), alt.Tooltip(f"{value}:Q", title=title, format=".4g")],
    ).properties(title=alt.TitleParams(title, anchor="start"), height=220, autosize=FIT_WIDTH)


STAGE_SHAPES = {"pruned": "circle", "fine-tuned": "triangle-up", "distilled": "diamond"}   # the captions say so


def level_chart(results: pd.DataFrame, value: str = "perplexity", title: str = "Perplexity vs. pruning level",
                log: bool = False, x_title: str = "Share of heads pruned", baseline: float | None = None,
                baseline_label: str = "unpruned") -> alt.Chart | alt.LayerChart:
    """`value` against pruning level, one coloured line per strategy (and a dash and shape per `stage`); a
    vertical error bar per point where `ci_low`/`ci_high` hold its interval, and a dashed rule at `baseline`."""
    y_title = value.replace("_", " ").capitalize() + (" (log scale)" if log else "")
    scale = alt.Scale(type="log") if log else alt.Scale(zero=False)
    base = alt.Chart(results).encode(
        x=alt.X("level:Q", title=x_title, axis=alt.Axis(format=".0%")),
        y=alt.Y(f"{value}:Q", title=y_title, scale=scale),
        color=alt.Color("strategy:N", title="Strategy"),
        tooltip=[alt.Tooltip(c, format=".4g") if results[c].dtype.kind == "f" else alt.Tooltip(c)
                 for c in results.columns],
    )
    extra: list[alt.Chart] = []
    if {"ci_low", "ci_high"} <= set(results.columns) and results[["ci_low", "ci_high"]].notna().all(axis=1).any():
        spans = results.dropna(subset=["ci_low", "ci_high"])
        extra.append(alt.Chart(spans).mark_rule(strokeWidth=2).encode(
            x="level:Q", y=alt.Y("ci_low:Q", title=y_title, scale=scale), y2="ci_high:Q",
            color=alt.Color("strategy:N", title="Strategy"),
            tooltip=[alt.Tooltip("run:N", title="Run") if "run" in spans.columns else alt.Tooltip("strategy:N"),
                     alt.Tooltip("ci_low:Q", title="95% CI low", format=".4g"),
                     alt.Tooltip("ci_high:Q", title="95% CI high", format=".4g")]))
    if baseline is not None:
        frame = pd.DataFrame({value: [baseline], "label": [baseline_label]})
        extra.append(alt.Chart(frame).mark_rule(strokeDash=[6, 4], color="gray").encode(
            y=alt.Y(f"{value}:Q", title=y_title, scale=scale),
            tooltip=[alt.Tooltip("label:N", title="Reference"), alt.Tooltip(f"{value}:Q", format=".4g")]))
    if "stage" not in results.columns:
        lines = [base.mark_line(point=alt.OverlayMarkDef(filled=True, size=70))]
        if not extra:
            return lines[0].properties(title=alt.TitleParams(title, anchor="start"), height=320, autosize=FIT_WIDTH)
    else:
        # lines and points drawn apart: a line mark has no shape channel, so its overlay points lose the Stage legend
        stages = [s for s in STAGE_SHAPES if s in set(results["stage"])] + sorted(
            set(results["stage"]) - set(STAGE_SHAPES))
        shapes = [STAGE_SHAPES.get(s, "square") for s in stages]
        # the same field, title and order on both channels: Vega-Lite draws one "Stage" legend with the shapes (a
        # legend=None on either channel would hide the merged legend altogether)
        lines = [base.mark_line().encode(strokeDash=alt.StrokeDash("stage:N", title="Stage", sort=stages)),
                 base.mark_point(filled=True, size=70).encode(
                     shape=alt.Shape("stage:N", title="Stage", sort=stages,
                                     scale=alt.Scale(domain=stages, range=shapes)))]
    return alt.layer(*lines, *extra).properties(title=alt.TitleParams(title, anchor="start"), height=320,
                                                autosize=FIT_WIDTH)


def compress_chart(points: pd.DataFrame, log: bool = False) -> alt.Chart:
    """Compress runs: perplexity against the measured share of parameters removed, a colour per unit kinds and
    recovery, a shape per stage (right after removal, after recovery)."""
    scale = alt.Scale(type="log") if log else alt.Scale(zero=False)
    return alt.Chart(points).mark_point(filled=True, size=80).encode(
        x=alt.X("removed:Q", title="Share of parameters removed (measured)", axis=alt.Axis(format=".0%")),
        y=alt.Y("perplexity:Q", title="Perplexity" + (" (log scale)" if log else ""), scale=scale),
        color=alt.Color("series:N", title="Units, recovery"), shape=alt.Shape("stage:N", title="Stage"),
        tooltip=[alt.Tooltip("run:N", title="Run"), alt.Tooltip("stage:N", title="Stage"),
                 alt.Tooltip("removed:Q", title="Removed", format=".1%"),
                 alt.Tooltip("perplexity:Q", title="Perplexity", format=",.4~g")],
    ).properties(title=alt.TitleParams("Compress runs: perplexity vs. parameters removed", anchor="start"),
                 height=300, autosize=FIT_WIDTH)


def overlay_chart(points: pd.DataFrame, title: str, log: bool = False) -> alt.Chart:
    """Several runs' curves of one metric on one chart (`run`, `step`, `value`), a colour per run."""
    scale = alt.Scale(type="log") if log else alt.Scale(zero=False)
    return alt.Chart(points).mark_line(point=True).encode(
        x=alt.X("step:Q", title="Step", axis=alt.Axis(tickMinStep=1, format="d")),
        y=alt.Y("value:Q", title="log scale" if log else None, scale=scale),
        # a long run name is cut to the plot's width (with "…"; the tooltip has it whole), not clipped by the page
        color=alt.Color("run:N", title="Run", legend=alt.Legend(orient="bottom", columns=1,
                                                                labelLimit=alt.ExprRef("max(80, width - 20)"))),
        tooltip=[alt.Tooltip("run:N", title="Run"), alt.Tooltip("step:Q", title="Step"),
                 alt.Tooltip("value:Q", title=title, format=",.4~g")],
    ).properties(title=alt.TitleParams(title, anchor="start"), height=260, autosize=FIT_WIDTH)


def level_chart_with_baseline(results: pd.DataFrame, value: str, title: str, baseline: float | None = None,
                              baseline_label: str = "unpruned") -> alt.LayerChart:
    """`level_chart` with a dashed horizontal rule at the unpruned model's value, ready to sit in a concat."""
    chart = level_chart(results, value, title, baseline=baseline, baseline_label=baseline_label)
    chart.autosize = alt.Undefined          # a chart inside a layer or a concat cannot carry its own autosize
    return alt.layer(chart).properties(title=title)


def stage_panels(results: pd.DataFrame, value: str, title: str, baseline: float | None = None,
                 baseline_label: str = "unpruned") -> alt.HConcatChart:
    """One `level_chart_with_baseline` per `stage` (in order of appearance), side by side on a shared y axis."""
    panels = [
        level_chart_with_baseline(results[results["stage"] == stage].drop(columns="stage"), value, str(stage),
                                  baseline, baseline_label).properties(width=260)
        for stage in dict.fromkeys(results["stage"])
    ]
    return alt.hconcat(*panels).resolve_scale(y="shared").properties(title=title)


def strategy_chart(table: pd.DataFrame, baseline: float) -> alt.LayerChart:
    """Perplexity per strategy (ranked, lowest first) as bars, with the unpruned model as a dashed rule."""
    order = table["strategy"].tolist()
    bars = alt.Chart(table).mark_bar().encode(
        y=alt.Y("strategy:N", sort=order, title=None, axis=alt.Axis(labelLimit=0)),
        x=alt.X("perplexity:Q", title="Perplexity (lower hurts less)"),
        color=alt.condition(alt.datum.rank == 1, alt.value("#2e7d32"), alt.value("#8a8a8a")),
        tooltip=[alt.Tooltip(c) for c in table.columns],
    )
    rule = alt.Chart(pd.DataFrame({"perplexity": [baseline]})).mark_rule(strokeDash=[5, 4], color="black").encode(
        x="perplexity:Q")
    # 24 pixels per bar as a pixel height: a nominal axis's default step height makes Vega-Lite drop the fit
    return alt.layer(bars, rule).properties(title=alt.TitleParams("Perplexity after masking, per strategy "
                                                                  "(dashed: unpruned)", anchor="start"),
                                            height=max(1, len(order)) * 24, autosize=FIT_WIDTH)


def attention_heatmap(frame: pd.DataFrame, title: str) -> alt.Chart:
    """Token × token attention of one head (`query_token`, `key_token`, `weight`, positions `query`/`key`):
    rows are the tokens looking, columns the tokens looked at; darker = more attention.

    Drawn with width="stretch" (two side by side in half a page): the width fits the column, the height is 18
    pixels per token, the legend sits below so it takes no width from the grid."""
    order = frame.drop_duplicates("query").sort_values("query")["query_token"].tolist()
    return alt.Chart(frame).mark_rect().encode(
        x=alt.X("key_token:N", sort=order, title="Looks at (key token)",
                axis=alt.Axis(labelAngle=-60, labelLimit=90, labelOverlap=False)),
        y=alt.Y("query_token:N", sort=order, title="Token looking (query)",
                axis=alt.Axis(labelLimit=90, labelOverlap=False)),
        color=alt.Color("weight:Q", title="attention", scale=alt.Scale(scheme="blues", domain=[0, 1]),
                        legend=alt.Legend(orient="bottom", gradientLength=120)),
        tooltip=[alt.Tooltip("query_token:N", title="Query"), alt.Tooltip("key_token:N", title="Key"),
                 alt.Tooltip("weight:Q", title="Attention", format=".3f")],
    ).properties(title=alt.TitleParams(title, anchor="start"), height=max(1, len(order)) * 18, autosize=FIT_WIDTH)


def layer_counts_chart(counts: pd.DataFrame) -> alt.VConcatChart:
    """Bars of what a plan removes per layer (columns layer, kind, count), one panel per unit kind (each with its own
    y scale, since a layer loses a few heads but hundreds of neurons), stacked so they fit a narrow column: drawn
    with width="stretch", Streamlit fits each panel's width to the column."""
    panels = [
        alt.Chart(counts[counts["kind"] == kind]).mark_bar().encode(
            x=alt.X("layer:O", title="Layer", axis=alt.Axis(labelAngle=0)),
            y=alt.Y("count:Q", title=f"{kind} removed"),
            color=alt.Color("kind:N", title="Unit kind", legend=None),
            tooltip=["layer", "kind", "count"],
        ).properties(height=110)
        for kind in dict.fromkeys(counts["kind"])
    ]
    return alt.vconcat(*panels).resolve_scale(y="independent")
