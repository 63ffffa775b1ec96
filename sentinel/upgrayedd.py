"""Moved to sentinel.workflows.plasticity (a job kind there: "plasticity"); these names keep working."""

from sentinel.workflows.plasticity import (
    CycleRecord,
    PlasticityConfig,
    UpgrayeddPipeline,
    UpgrayeddResult,
    run_plasticity_job,
    submit_plasticity,
)

__all__ = ["CycleRecord", "PlasticityConfig", "UpgrayeddPipeline", "UpgrayeddResult", "run_plasticity_job",
           "submit_plasticity"]
