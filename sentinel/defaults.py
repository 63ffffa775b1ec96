"""Defaults shared by the CLI and the dashboard, so both measure the same text the same way.

Standard library only: the dashboard's first paint reads these before torch loads.
"""

ANALYSIS_SAMPLES = 32   # token sequences the data-driven importance metrics run on (CLI --samples, Maps "Samples")
ANALYSIS_SEQ_LEN = 128  # tokens per sequence (CLI --seq-len, Maps "Tokens per sample")
