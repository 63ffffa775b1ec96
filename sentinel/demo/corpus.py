"""Build the demo corpus from the docstrings of the installed Python standard library.

The sources are parsed with `ast` and never imported, so building the corpus runs no stdlib code.
"""

from __future__ import annotations

import ast
import hashlib
import logging
import sysconfig
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sentinel.errors import DataError

logger = logging.getLogger(__name__)

DEFAULT_MAX_VALIDATION_CHARS = 320_000

# Directory names (at any depth) whose files are never used: tests, third-party code, tooling.
_SKIP_DIR_NAMES = frozenset({
    "site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__",
    "__phello__", "turtledemo", "Tools",
})


@dataclass
class CorpusSplits:
    """Train/validation documents; for docstrings `train_modules`/`validation_modules` list the source files used."""

    train: list[str]
    validation: list[str]
    train_modules: list[str] = field(default_factory=list)
    validation_modules: list[str] = field(default_factory=list)
    stdlib_dir: str = ""
    skipped_files: int = 0
    stories: dict = field(default_factory=dict)  # set instead of the stdlib fields for the generated story corpus

    def to_dict(self) -> dict:
        """Summary without the texts (for logs and the model card)."""
        summary = asdict(self)
        summary.pop("train")
        summary.pop("validation")
        if not self.stories:
            summary.pop("stories")
        summary["train_documents"] = len(self.train)
        summary["validation_documents"] = len(self.validation)
        summary["train_chars"] = sum(len(t) for t in self.train)
        summary["validation_chars"] = sum(len(t) for t in self.validation)
        return summary


def _is_skipped(relative: Path) -> bool:
    """True for files under test, third-party or tooling directories."""
    parts = relative.parts[:-1]
    if any(p in _SKIP_DIR_NAMES for p in parts):
        return True
    name = relative.name
    return name.startswith("test_") or name == "conftest.py"


def list_source_files(stdlib_dir: Path) -> list[Path]:
    """Sorted relative paths of the stdlib .py files that feed the corpus."""
    files = []
    for path in stdlib_dir.rglob("*.py"):
        relative = path.relative_to(stdlib_dir)
        if not _is_skipped(relative):
            files.append(relative)
    return sorted(files, key=lambda p: p.as_posix())


def extract_docstrings(source: str) -> list[str]:
    """Module, class and function docstrings of one source text, in `ast.walk` order."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # old escape sequences in some stdlib files emit SyntaxWarning
        tree = ast.parse(source)
    docs = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=True)
            if doc and doc.strip():
                docs.append(doc.strip())
    return docs


def is_validation_module(relative_path: str, validation_fraction: float) -> bool:
    """Stable split by module: the SHA-1 of the relative path decides, independent of Python's hash seed."""
    digest = hashlib.sha1(relative_path.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < validation_fraction


def build_corpus(
    stdlib_dir: str | Path | None = None,
    validation_fraction: float = 0.05,
    max_files: int | None = None,
    max_validation_chars: int = DEFAULT_MAX_VALIDATION_CHARS,
) -> CorpusSplits:
    """Parse the stdlib's docstrings and split them by module into train and validation documents.

    Validation modules beyond `max_validation_chars` move to train, so evaluating validation stays fast on CPU.
    """
    if not 0.0 < validation_fraction < 1.0:
        raise DataError(f"validation_fraction must be between 0 and 1, got {validation_fraction}.")
    root = Path(stdlib_dir) if stdlib_dir is not None else Path(sysconfig.get_paths()["stdlib"])
    if not root.is_dir():
        raise DataError(f"Standard library directory {root} does not exist; pass stdlib_dir explicitly.")
    files = list_source_files(root)
    if max_files is not None:
        files = files[:max_files]
    per_module: list[tuple[str, list[str]]] = []
    skipped = 0
    for relative in files:
        try:
            source = (root / relative).read_text(encoding="utf-8")
            docs = extract_docstrings(source)
        except (SyntaxError, UnicodeDecodeError, ValueError, OSError) as err:
            logger.debug("Skipping %s: %s", relative, err)
            skipped += 1
            continue
        if docs:
            per_module.append((relative.as_posix(), docs))
    train: list[str] = []
    validation: list[str] = []
    train_modules: list[str] = []
    validation_modules: list[str] = []
    validation_chars = 0
    for name, docs in per_module:
        size = sum(len(d) for d in docs)
        if is_validation_module(name, validation_fraction) and validation_chars + size <= max_validation_chars:
            validation.extend(docs)
            validation_modules.append(name)
            validation_chars += size
        else:
            train.extend(docs)
            train_modules.append(name)
    if not train or not validation:
        raise DataError(
            f"The corpus from {root} has {len(train)} train and {len(validation)} validation documents; "
            "use more files (max_files) or a different validation_fraction so both splits are non-empty."
        )
    logger.info("Corpus: %d train docs (%d modules), %d validation docs (%d modules), %d files skipped",
                len(train), len(train_modules), len(validation), len(validation_modules), skipped)
    return CorpusSplits(train, validation, train_modules, validation_modules, str(root), skipped)
