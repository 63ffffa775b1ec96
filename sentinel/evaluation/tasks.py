"""Task accuracy: lm-evaluation-harness run on the model in memory (masked, removed or sparse, any shapes).

The model object and its tokenizer go into lm-eval's `HFLM` wrapper, so a pruned model is measured as it is,
never re-read from a hub id. A task is named in one of three ways:

- a bundled task (a folder under assets/tasks, e.g. `stories-gpt2-continuation`), which needs no network;
- a folder (or one YAML file) of lm-eval task configs, e.g. your own task with local data;
- any standard lm-eval name (`arc_easy`, `hellaswag`, ...), passed through unchanged; its data comes from the hub.

lm-eval is optional (`pip install 'sentinel[eval]'`) and imported only when a task runs.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from functools import lru_cache
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sentinel.errors import MissingDependencyError, SentinelError
from sentinel.evaluation.task_items import BUNDLED_TASKS_DIR

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'sentinel[eval]'"
DEFAULT_BATCH_SIZE = 8


class TaskError(SentinelError):
    """A task name that is neither bundled, a task folder, nor an lm-eval task; or a task whose data is unreachable."""


@dataclass(frozen=True)
class TaskResult:
    """One metric of one task: `value` over `n` documents, with lm-eval's standard error (None when it has none)."""

    task: str
    metric: str
    value: float
    stderr: float | None
    n: int

    def text(self) -> str:
        """'acc 0.683 ± 0.042 s.e. (n=120)' for the screen and the report."""
        spread = f" ± {self.stderr:.3f} s.e." if self.stderr is not None else ""
        return f"{self.metric} {self.value:.3f}{spread} (n={self.n})"

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON and the store."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskResult:
        """Inverse of `to_dict`."""
        return cls(**data)


@dataclass(frozen=True)
class TaskSelection:
    """What to hand lm-eval: task names, the folders that define the non-standard ones, and whether any name
    needs lm-eval's own task index (slow to build: seconds)."""

    names: list[str]
    include_paths: list[Path] = field(default_factory=list)
    standard: list[str] = field(default_factory=list)


def bundled_task_names(tasks_dir: Path = BUNDLED_TASKS_DIR) -> list[str]:
    """The tasks shipped with Sentinel (one per bundled model), by folder name."""
    if not tasks_dir.is_dir():
        return []
    return sorted(p.name for p in tasks_dir.iterdir() if p.is_dir() and (p / f"{p.name}.yaml").is_file())


def bundled_task_for(model_name: str, tasks_dir: Path = BUNDLED_TASKS_DIR) -> str | None:
    """The bundled task built from a bundled model's held-out text ('<model>-continuation'), or None."""
    name = f"{model_name}-continuation"
    return name if name in bundled_task_names(tasks_dir) else None


def lm_eval_installed() -> bool:
    """Whether lm-evaluation-harness is installed (checked without importing it: that takes seconds)."""
    import importlib.util

    return importlib.util.find_spec("lm_eval") is not None


def require_lm_eval() -> None:
    """Raise MissingDependencyError with the install command when lm-evaluation-harness cannot be imported."""
    try:
        import lm_eval  # noqa: F401
        import lm_eval.models.huggingface  # noqa: F401
    except ImportError as error:
        raise MissingDependencyError(f"Task accuracy needs lm-evaluation-harness, which cannot be imported "
                                     f"({error}): {INSTALL_HINT}") from error


@lru_cache(maxsize=8)
def _manager(include_paths: tuple[str, ...], defaults: bool) -> Any:
    """lm-eval's TaskManager; with its own tasks the index takes seconds to build, so it is built once."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=list(include_paths) or None, include_defaults=defaults)


def _tasks_defined_in(paths: Sequence[Path], folder: Path) -> list[str]:
    """The task (or group) names whose YAML lies in `paths` (files inside `folder`, which lm-eval indexes)."""
    wanted = {p.resolve() for p in paths}
    index = _manager((str(folder.resolve()),), False).task_index
    found = {kind: sorted(name for name, entry in index.items()
                          if entry.kind.name == kind and entry.yaml_path is not None
                          and Path(entry.yaml_path).resolve() in wanted)
             for kind in ("GROUP", "TASK")}
    return found["GROUP"] or found["TASK"]    # a group runs its own tasks: naming both would run them twice


def select_tasks(specs: Sequence[str], tasks_dir: Path = BUNDLED_TASKS_DIR) -> TaskSelection:
    """Resolve each spec: a bundled task name, a task folder or YAML file, else a standard lm-eval name."""
    require_lm_eval()
    names: list[str] = []
    include: list[Path] = []
    standard: list[str] = []
    for spec in specs:
        spec = spec.strip()
        if not spec:
            continue
        path = Path(spec).expanduser()
        bare = len(path.parts) == 1
        if bare and (tasks_dir / spec).is_dir():    # a bundled name wins over a folder of that name in the cwd
            path = tasks_dir / spec
        if path.is_dir() or (path.is_file() and path.suffix in (".yaml", ".yml")):
            folder = path if path.is_dir() else path.parent
            defined = _tasks_defined_in(sorted(folder.rglob("*.y*ml")) if path.is_dir() else [path], folder)
            if not defined:
                raise TaskError(f"{path} holds no lm-eval task config (a YAML file with a `task:` key).")
            names += defined
            include.append(folder.resolve())
        elif path.suffix in (".yaml", ".yml") or not bare:
            raise TaskError(f"Task folder or file {spec} does not exist.")
        else:
            names.append(spec)
            standard.append(spec)
    if not names:
        raise TaskError(f"No task named; give a bundled task ({', '.join(bundled_task_names(tasks_dir))}), a task "
                        "folder, or an lm-eval task name.")
    if standard:
        _check_standard(standard, include)
    return TaskSelection(list(dict.fromkeys(names)), list(dict.fromkeys(include)), standard)


def _check_standard(standard: list[str], include: list[Path]) -> None:
    known = set(_manager(tuple(str(p) for p in include), True).all_tasks)
    unknown = [name for name in standard if name not in known]
    if unknown:
        raise TaskError(f"Unknown task {', '.join(unknown)}: not bundled ({', '.join(bundled_task_names())}), not a "
                        "folder, and not an lm-eval task name (see `lm_eval --tasks list`).")


def _results(output: dict[str, Any]) -> list[TaskResult]:
    """Flatten lm-eval's results: one TaskResult per task and metric ('acc,none' is metric 'acc')."""
    samples = output.get("n-samples", {})
    subtasks = output.get("group_subtasks", {})

    def count(task: str) -> int:
        if task in samples:
            return int(samples[task]["effective"])
        return sum(count(sub) for sub in subtasks.get(task, []))

    results = []
    for task, metrics in output["results"].items():
        for key, value in metrics.items():
            metric, _, filter_name = key.partition(",")
            if not filter_name or metric.endswith("_stderr") or not isinstance(value, (int, float)):
                continue
            stderr = metrics.get(f"{metric}_stderr,{filter_name}")
            stderr = float(stderr) if isinstance(stderr, (int, float)) and math.isfinite(stderr) else None
            name = metric if filter_name == "none" else f"{metric} ({filter_name})"
            results.append(TaskResult(task, name, float(value), stderr, count(task)))
    return results


def evaluate_tasks(model: Any, tokenizer: Any, tasks: Sequence[str] | TaskSelection, limit: int | None = None,
                   batch_size: int = DEFAULT_BATCH_SIZE, seed: int = 0) -> list[TaskResult]:
    """Run lm-eval's tasks on `model` as it is in memory; `limit` caps the documents per task (for quick checks).

    Zero-shot unless a task's config says otherwise; `seed` fixes lm-eval's few-shot sampling. Global random
    generators are left alone.
    """
    selection = tasks if isinstance(tasks, TaskSelection) else select_tasks(tasks)
    if limit is not None and limit < 1:
        raise TaskError(f"limit must be at least 1 document, got {limit}.")
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    manager = _manager(tuple(str(p) for p in selection.include_paths), bool(selection.standard))
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    was_training = model.training
    model.eval()
    try:
        output = simple_evaluate(model=lm, tasks=list(selection.names), task_manager=manager, limit=limit,
                                 log_samples=False, random_seed=None, numpy_random_seed=None,
                                 torch_random_seed=None, fewshot_random_seed=seed)
    except ConnectionError as error:
        raise TaskError(f"A task's data set could not be fetched ({error}). Standard lm-eval tasks download their "
                        "data from the hub; offline, use a bundled task or a task folder with local data.") from error
    finally:
        model.train(was_training)
    if output is None:
        raise TaskError("lm-eval returned no results (it reports only on process rank 0).")
    results = _results(output)
    for result in results:
        logger.info("%s: %s", result.task, result.text())
    return results
