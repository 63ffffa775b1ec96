"""Workflows: the orchestrators that measure -> select -> prune -> evaluate -> tune, on one step API.

    sentinel.workflows.steps       measure, select, prune, evaluate, tune (+ analysis_batches, prune_by_strategy)
    sentinel.workflows.recorder    RunRecorder: records a run (metrics, pruning, samples, summary) in the store
    sentinel.workflows.summary     RunSummary: the typed summary every workflow writes and every reader reads
    sentinel.workflows.experiment  ExperimentConfig, run_experiment (job kind "experiment")
    sentinel.workflows.benchmark   BenchmarkConfig, run_benchmark (job kind "benchmark")
    sentinel.workflows.plasticity  UpgrayeddPipeline, PlasticityConfig (job kind "plasticity")

Submodules are imported on use (importing this package loads nothing heavy).
"""
