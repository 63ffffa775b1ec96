"""Moved to sentinel.workflows.benchmark; these names keep working."""

from sentinel.workflows.benchmark import (
    BUDGET_DEFAULT_METRIC,
    RESULT_COLUMNS,
    UNIT_KINDS,
    BenchmarkConfig,
    BenchmarkResult,
    run_benchmark,
    run_benchmark_job,
    winners,
    write_charts,
)

__all__ = ["BUDGET_DEFAULT_METRIC", "RESULT_COLUMNS", "UNIT_KINDS", "BenchmarkConfig", "BenchmarkResult",
           "run_benchmark", "run_benchmark_job", "winners", "write_charts"]
