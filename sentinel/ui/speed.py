"""The dashboard's paired speed comparison lives in sentinel.evaluation.paired (compress uses it too)."""

from sentinel.evaluation.paired import (
    SPEED_REPEATS,
    SpeedComparison,
    SpeedRatio,
    compare_speed,
    removed_head_count,
)

__all__ = ["SPEED_REPEATS", "SpeedComparison", "SpeedRatio", "compare_speed", "removed_head_count"]
