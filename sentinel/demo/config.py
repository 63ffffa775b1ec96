"""The demo build's settings and command-line options, importable without torch (for `sentinel --help`)."""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class DemoBuildConfig:
    """Everything that decides the demo model; the defaults are the bundled model's recipe."""

    out_dir: str = "assets/models/stdlib-gpt2"
    vocab_size: int = 5120
    n_layer: int = 6
    n_head: int = 8
    n_embd: int = 256
    n_positions: int = 256
    dropout: float = 0.0
    batch_size: int = 8
    max_steps: int = 900
    learning_rate: float = 1.5e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 60
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_every: int = 150
    log_every: int = 50
    seed: int = 0
    validation_fraction: float = 0.05
    max_files: int | None = None
    stdlib_dir: str | None = None
    device: str = "auto"
    num_threads: int = 1  # one thread: bit-stable sums and no oversubscription on a shared CPU
    write_card: bool = True

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for build_info.json."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DemoBuildConfig:
        """Inverse of `to_dict`."""
        return cls(**data)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `python -m sentinel.demo build` / `sentinel build-demo-model`."""
    defaults = DemoBuildConfig()
    parser.add_argument("--out", default=defaults.out_dir, help="output folder (default: %(default)s)")
    for name in ("vocab_size", "n_layer", "n_head", "n_embd", "n_positions", "batch_size", "max_steps",
                 "warmup_steps", "eval_every", "log_every", "seed", "num_threads"):
        parser.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(defaults, name))
    for name in ("dropout", "learning_rate", "weight_decay", "grad_clip", "validation_fraction"):
        parser.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(defaults, name))
    parser.add_argument("--max-files", type=int, default=None, help="use only the first N stdlib files (tests)")
    parser.add_argument("--stdlib-dir", default=None, help="standard library folder (default: this Python's)")
    parser.add_argument("--device", default=defaults.device, help="auto, cpu, cuda or mps")
    parser.add_argument("--no-card", action="store_true", help="skip the evaluation and model card at the end")
