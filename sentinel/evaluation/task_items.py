"""The bundled multiple-choice tasks: from a model's held-out corpus, pick the true next sentence among four.

Each item is one validation document cut at a sentence boundary: the context is the text before the cut, the
choices are the true next sentence and three real sentences that come later in the same document (or, where it
has too few, other documents' next sentences), placed at a seeded random position. Chance is 0.25; a model must
follow the order of its text, not only its topic, to score well. The task folder is
lm-evaluation-harness's own format (a YAML file, items.py, items.jsonl), runnable by its CLI with
`--include_path`. Regenerate every bundled task with `python -m sentinel.evaluation.task_items`.
"""

from __future__ import annotations

import json
import logging
import random
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sentinel.data import OWN_VALIDATION_FILE, load_file_texts
from sentinel.errors import DataError

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLED_TASKS_DIR = REPO_ROOT / "assets" / "tasks"
BUNDLED_MODELS_DIR = REPO_ROOT / "assets" / "models"
TASK_SUFFIX = "-continuation"        # assets/tasks/<model>-continuation/ for each bundled model
ITEMS_FILE = "items.jsonl"
CHOICES = 4
CONTEXT_TOKENS = 176                  # context + a choice stay within the bundled models' 256 positions
CHOICE_WORDS = 24                     # a long next sentence is cut after this many words (every choice alike)
DEFAULT_MAX_ITEMS = 150
# a sentence ends at . ! ? (or one closing quote after it) followed by a capital or an opening quote
_SENTENCE_END = re.compile(r'(?:(?<=[.!?])|(?<=[.!?]["\']))\s+(?=["\']?[A-Z])')


@dataclass(frozen=True)
class ContinuationItem:
    """One question: `choices[label]` is what really followed `context` in document `doc`."""

    doc: int
    context: str
    choices: list[str]
    label: int

    def to_dict(self) -> dict[str, Any]:
        """Plain dict, one line of items.jsonl."""
        return asdict(self)


def _sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE_END.split(text.strip()) if s.strip()]


def _choice_text(sentence: str) -> str:
    return " ".join(sentence.split()[:CHOICE_WORDS])


def _tail_within(tokenizer: Any, text: str, budget: int) -> str:
    """The end of `text` that tokenizes to at most `budget` tokens, starting at a word boundary."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) <= budget:
        return text
    tail = tokenizer.decode(ids[-budget:])
    return tail.split(None, 1)[1] if len(tail.split(None, 1)) == 2 else tail.strip()


def build_continuation_items(texts: list[str], tokenizer: Any, seed: int = 0,
                             max_items: int = DEFAULT_MAX_ITEMS) -> list[ContinuationItem]:
    """At most `max_items` items from the documents with two sentences or more (a seeded sample when more).

    Distractors are later sentences of the same document (same names and topic, wrong place), topped up with
    other documents' true next sentences where the document has too few; all are real held-out text.
    """
    rng = random.Random(seed)
    cuts: list[tuple[int, str, str, list[str]]] = []   # (document, context, true next sentence, later sentences)
    for index, text in enumerate(texts):
        sentences = _sentences(text)
        if len(sentences) < 2:
            continue
        last = max(min(2, len(sentences) - 1), len(sentences) - CHOICES)   # leave room for later sentences
        k = rng.randint(min(2, len(sentences) - 1), last)                 # context: the first k sentences
        context = _tail_within(tokenizer, " ".join(sentences[:k]), CONTEXT_TOKENS)
        truth = _choice_text(sentences[k])
        later = sorted({_choice_text(s) for s in sentences[k + 1:]} - {truth})
        cuts.append((index, context, truth, later))
    if len(cuts) < CHOICES:
        raise DataError(f"Only {len(cuts)} documents have two sentences or more; a {CHOICES}-way task needs at "
                        f"least {CHOICES}.")
    if len(cuts) > max_items:
        cuts = sorted(rng.sample(cuts, max_items))
    items = []
    for doc, context, truth, later in cuts:
        choices = rng.sample(later, min(len(later), CHOICES - 1))
        others = sorted({c[2] for c in cuts if c[0] != doc} - {truth, *choices})
        choices += rng.sample(others, CHOICES - 1 - len(choices))
        label = rng.randrange(CHOICES)
        choices.insert(label, truth)
        items.append(ContinuationItem(doc, context, choices, label))
    return items


_YAML = """\
# Written by `python -m sentinel.evaluation.task_items`: choose the true next sentence of a held-out document
# of {model} among four (three are later sentences of that document or others' next sentences). Chance is 0.25.
task: {name}
dataset_path: ""
custom_dataset: !function items.load
output_type: multiple_choice
test_split: test
doc_to_text: "{{{{context}}}}"
doc_to_choice: choices
doc_to_target: label
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
  items: {count}
  source: {source}
  seed: {seed}
"""

_LOADER = '''\
"""This task's items, read from items.jsonl beside this file (lm-eval resolves `!function items.load` here, so
the task runs from any working directory)."""

import json
from pathlib import Path

import datasets


def load(**_metadata):
    """The test split; lm-eval passes the task's metadata as keywords, which the items do not need."""
    path = Path(__file__).with_name("items.jsonl")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return {"test": datasets.Dataset.from_list(rows)}
'''


def write_continuation_task(model_dir: str | Path, out_dir: str | Path, name: str | None = None, seed: int = 0,
                            max_items: int = DEFAULT_MAX_ITEMS) -> Path:
    """Build the task from `model_dir`'s corpus/validation.jsonl with its tokenizer; write it to `out_dir`."""
    from transformers import AutoTokenizer

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    name = name or model_dir.name + TASK_SUFFIX
    source = model_dir / OWN_VALIDATION_FILE
    if not source.is_file():
        raise DataError(f"{model_dir} has no held-out split ({OWN_VALIDATION_FILE}) to build a task from.")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    items = build_continuation_items(load_file_texts(source), tokenizer, seed=seed, max_items=max_items)
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps(item.to_dict(), ensure_ascii=False) + "\n" for item in items)
    (out_dir / ITEMS_FILE).write_text(lines, encoding="utf-8")
    (out_dir / "items.py").write_text(_LOADER, encoding="utf-8")
    (out_dir / f"{name}.yaml").write_text(_YAML.format(name=name, model=model_dir.name, count=len(items),
                                                       source=f"{model_dir.name}/{OWN_VALIDATION_FILE}", seed=seed),
                                          encoding="utf-8")
    logger.info("wrote %d items of %s to %s", len(items), name, out_dir)
    return out_dir


def write_bundled_tasks(models_dir: Path = BUNDLED_MODELS_DIR, tasks_dir: Path = BUNDLED_TASKS_DIR) -> list[Path]:
    """One continuation task per bundled model folder that carries a held-out split."""
    return [write_continuation_task(model, tasks_dir / (model.name + TASK_SUFFIX))
            for model in sorted(models_dir.iterdir()) if (model / OWN_VALIDATION_FILE).is_file()]


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    write_bundled_tasks()
