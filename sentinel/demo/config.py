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
    corpus: str = "stdlib"  # "stdlib" (installed standard library docstrings) or "stories" (sentinel.demo.stories)
    stories_train: int = 20000
    stories_validation: int = 400

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for build_info.json."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DemoBuildConfig:
        """Inverse of `to_dict`."""
        return cls(**data)


RECIPES: dict[str, DemoBuildConfig] = {
    "stdlib-gpt2": DemoBuildConfig(),
    "stories-gpt2": DemoBuildConfig(
        out_dir="assets/models/stories-gpt2", corpus="stories", vocab_size=2048, n_positions=256,
        batch_size=8, max_steps=640, learning_rate=2e-3, warmup_steps=40, eval_every=160, log_every=20,
        stories_train=16000, stories_validation=120,
    ),
}
DEFAULT_RECIPE = "stdlib-gpt2"

_INT_OPTIONS = ("vocab_size", "n_layer", "n_head", "n_embd", "n_positions", "batch_size", "max_steps",
                "warmup_steps", "eval_every", "log_every", "seed", "num_threads", "stories_train",
                "stories_validation")
_FLOAT_OPTIONS = ("dropout", "learning_rate", "weight_decay", "grad_clip", "validation_fraction")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `python -m sentinel.demo build` / `sentinel build-demo-model`; unset ones come from --recipe."""
    parser.add_argument("--recipe", choices=sorted(RECIPES), default=DEFAULT_RECIPE,
                        help="which bundled model to rebuild; sets every default below (default: %(default)s)")
    parser.add_argument("--out", default=None, help="output folder (default: the recipe's, under assets/models)")
    for name in _INT_OPTIONS:
        parser.add_argument("--" + name.replace("_", "-"), type=int, default=None)
    for name in _FLOAT_OPTIONS:
        parser.add_argument("--" + name.replace("_", "-"), type=float, default=None)
    parser.add_argument("--max-files", type=int, default=None, help="use only the first N stdlib files (tests)")
    parser.add_argument("--stdlib-dir", default=None, help="standard library folder (default: this Python's)")
    parser.add_argument("--device", default=None, help="auto, cpu, cuda or mps (default: auto)")
    parser.add_argument("--no-card", action="store_true", help="skip the evaluation and model card at the end")


def config_from_args(args: argparse.Namespace) -> DemoBuildConfig:
    """The recipe's config with every option given on the command line replacing its value."""
    values = RECIPES[args.recipe].to_dict()
    overrides = {name: getattr(args, name) for name in (*_INT_OPTIONS, *_FLOAT_OPTIONS, "max_files", "stdlib_dir",
                                                         "device")}
    values.update({name: value for name, value in overrides.items() if value is not None})
    if args.out is not None:
        values["out_dir"] = args.out
    if args.no_card:
        values["write_card"] = False
    return DemoBuildConfig.from_dict(values)
