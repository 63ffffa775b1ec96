"""The Altair chart builders moved to sentinel.charts (usable without the dashboard); these names keep working."""

from sentinel.charts import (  # noqa: F401
    CELL_HEIGHT,
    CELL_TEXT_LIMIT,
    METRICS,
    MetricInfo,
    PRUNED_COLOUR,
    SELECTION_NAME,
    attention_heatmap,
    curves_chart,
    head_frame,
    head_heatmap,
    layer_counts_chart,
    level_chart,
    level_chart_with_baseline,
    overlay_chart,
    pruned_first,
    stage_panels,
    strategy_chart,
)
